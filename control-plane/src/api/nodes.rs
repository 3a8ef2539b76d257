//! Nodes: what the config says, what they reported, and a live health probe each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use edgebox_config::model::{Node, OriginTarget};
use edgebox_config::{Deployment, Role};
use edgebox_wire::health::NodeHealth;
use futures_util::future::join_all;

use crate::auth::Operator;
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;
use edgebox_wire::control_plane::{DrainResponse, ErrorBody, Listener, NodeInfo, NodeList};

/// A health probe never waits longer than this: a node that does not answer in time
/// is reported down rather than holding up the listing.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one round of probes answers `GET /v1/nodes`.
const LISTING_REUSE: Duration = Duration::from_millis(500);

/// Every node of the deployment with its role, region, addresses, health, config
/// version and uptime (open: a health read). Probes run concurrently.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, description = "OK", body = NodeList)))]
pub async fn list(State(state): State<Arc<AppState>>) -> Json<NodeList> {
    let mut cached = state.node_listing.lock().await;
    let generation = state
        .listing_generation
        .load(std::sync::atomic::Ordering::SeqCst);
    if let Some((at, made_in, listing)) = cached.as_ref()
        && at.elapsed() < LISTING_REUSE
        && *made_in == generation
        && listing.config_version == state.current().meta.version
    {
        return Json(listing.clone());
    }
    let listing = probe_all(&state).await;
    *cached = Some((Instant::now(), generation, listing.clone()));
    Json(listing)
}

/// Where an edge's misses go, for the dashboard's request-path drawing: its parent edge,
/// or (without one) the members of its origin group.
fn misses_go_to(deployment: &Deployment, node: &Node) -> (Option<String>, Vec<String>) {
    let Role::Edge(edge) = &node.role else {
        return (None, Vec::new());
    };
    if edge.parent.is_some() {
        return (edge.parent.clone(), Vec::new());
    }
    let origins = deployment
        .origin_groups
        .get(&edge.origin_group)
        .map(|group| {
            group
                .members
                .iter()
                .map(|member| match &member.target {
                    OriginTarget::Node { name, .. } => name.clone(),
                    OriginTarget::Host { host, port } => format!("{host}:{port}"),
                })
                .collect()
        })
        .unwrap_or_default();
    (None, origins)
}

async fn probe_all(state: &Arc<AppState>) -> NodeList {
    let current = state.current();
    let reports = state.reports();
    let version = current.meta.version;
    let probes = current.deployment.nodes.iter().map(|node| {
        let state = state.clone();
        let report = reports.get(&node.name).cloned();
        let (parent, origins) = misses_go_to(&current.deployment, node);
        async move {
            let listeners = node
                .listeners()
                .into_iter()
                .map(|(service, _)| {
                    let addr = state.service_addr(node, service);
                    let scheme = if service == "https" { "https" } else { "http" };
                    Listener {
                        service: service.into(),
                        addr: addr.map(|addr| addr.to_string()),
                        url: addr.map(|addr| format!("{scheme}://{addr}")),
                    }
                })
                .collect();
            let mut info = NodeInfo {
                name: node.name.clone(),
                role: node.role_name().into(),
                region: node.region.clone(),
                listeners,
                health: "unknown".into(),
                health_error: None,
                config_version: report.as_ref().filter(|r| r.applied).map(|r| r.version),
                uptime_ms: None,
                probe_ms: None,
                parent,
                origins,
            };
            if node.name == state.node {
                info.health = "up".into();
                info.config_version = Some(version);
                info.uptime_ms = Some(state.started.elapsed().as_millis() as u64);
                return info;
            }
            let service = AppState::health_service(node);
            let Some(addr) = state.service_addr(node, service) else {
                info.health_error = Some(format!("{service} on port 0, address not reported"));
                return info;
            };
            let started = Instant::now();
            let probe = state
                .http
                .get(format!("http://{addr}/healthz"))
                .timeout(PROBE_TIMEOUT)
                .send()
                .await;
            info.probe_ms = Some(started.elapsed().as_millis() as u64);
            match probe {
                Ok(response) => {
                    let status = response.status();
                    let body: Option<NodeHealth> = response.json().await.ok();
                    // A node's own `config_version` in its healthz counts its local
                    // reloads, not control-plane versions, so only the agent's report
                    // says which version it runs.
                    info.uptime_ms = body.and_then(|health| health.uptime_ms);
                    if info.uptime_ms.is_none() && matches!(node.role, Role::Edge(_)) {
                        // Edges report their uptime in the admin `/stats` only.
                        info.uptime_ms =
                            edge_uptime(&state.http, addr, &state.credential_for(node)).await;
                    }
                    if status.is_success() {
                        info.health = "up".into();
                    } else if status == StatusCode::SERVICE_UNAVAILABLE {
                        info.health = "draining".into();
                    } else {
                        info.health = "down".into();
                        info.health_error = Some(format!("healthz answered {status}"));
                    }
                }
                Err(err) => {
                    info.health = "down".into();
                    info.health_error = Some(describe(&err));
                }
            }
            info
        }
    });
    let nodes = join_all(probes).await;
    NodeList {
        config_version: current.meta.version,
        nodes,
    }
}

/// Drains an edge: its healthz turns 503 while it finishes in-flight work.
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes", security(("bearer" = [])),
    params(("name" = String, Path, description = "Edge node name")),
    responses((status = 200, description = "OK", body = DrainResponse), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 403, description = "The token's role may not do this", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Conflict with the current state", body = ErrorBody), (status = 502, description = "A node could not be reached", body = ErrorBody)))]
pub async fn drain(
    _: Operator,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<DrainResponse>, ApiError> {
    let current = state.current();
    let node = current
        .deployment
        .node(&name)
        .ok_or_else(|| ApiError::not_found(format!("no node {name:?} in the current config")))?;
    if !matches!(node.role, Role::Edge(_)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_an_edge",
            format!(
                "{name} is a {} node; only edges can be drained",
                node.role_name()
            ),
        ));
    }
    let addr = state.service_addr(node, "admin").ok_or_else(|| {
        ApiError::bad_gateway(
            "node_address_unknown",
            format!("{name}'s admin address is not known yet"),
        )
    })?;
    let response = state
        .http
        .post(format!("http://{addr}/drain"))
        .bearer_auth(state.credential_for(node))
        .json(&serde_json::json!({}))
        .timeout(DRAIN_TIMEOUT)
        .send()
        .await
        .map_err(|err| {
            state
                .metrics
                .fanout_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ApiError::bad_gateway("node_unreachable", format!("{name}: {}", describe(&err)))
        })?;
    if !response.status().is_success() {
        return Err(ApiError::bad_gateway(
            "node_error",
            format!("{name} answered {} to POST /drain", response.status()),
        ));
    }
    tracing::info!(node = %name, "drain requested");
    state.invalidate_listing();
    Ok(Json(DrainResponse {
        node: name,
        draining: true,
    }))
}

/// An edge's uptime from its admin `/stats`; `None` if it does not answer in time.
async fn edge_uptime(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
    credential: &str,
) -> Option<u64> {
    let response = http
        .get(format!("http://{admin}/stats"))
        .bearer_auth(credential)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .ok()?;
    let stats: edgebox_wire::edge::EdgeStats = response.json().await.ok()?;
    Some(stats.uptime_ms)
}

/// A short reason for a failed request to a node.
pub(crate) fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        message
    }
}
