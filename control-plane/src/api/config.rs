//! Config lifecycle: read, validate, apply, history, rollback; the nodes' watch and
//! status reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{NodeOrOperator, Operator, ReportingNode};
use crate::error::{ApiError, Json, Path, Query};
use crate::state::{AppState, NodeReport};
use crate::store::now_rfc3339;
use edgebox_wire::control_plane::{
    Applied, ConfigDiagnostic, ConfigStatus, ConfigText, CurrentConfig, ErrorBody, History,
    HistoryEntry, NodeConfigStatus, PutConfig, StatusReport, Validation, WatchResponse,
};

/// How long a watch waits for a change by default, and at most.
const WATCH_DEFAULT: Duration = Duration::from_secs(25);
const WATCH_MAX: Duration = Duration::from_secs(60);
/// Open long polls at most.
const MAX_WATCHERS: i64 = 4096;

/// The current deployment config and its version.
#[utoipa::path(get, path = "/v1/config", tag = "config", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = CurrentConfig), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 403, description = "The token's role may not do this", body = ErrorBody)))]
pub async fn get_config(_: Operator, State(state): State<Arc<AppState>>) -> Json<CurrentConfig> {
    let current = state.current();
    Json(CurrentConfig {
        version: current.meta.version,
        toml: current.text.clone(),
        created_at: current.meta.created_at.clone(),
        source: current.meta.source.clone(),
        sha256: current.meta.sha256.clone(),
    })
}

/// Validates a config without applying it; lists every problem.
#[utoipa::path(post, path = "/v1/config/validate", tag = "config", security(("bearer" = [])),
    request_body = ConfigText,
    responses((status = 200, description = "OK", body = Validation), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token's role may not do this", body = ErrorBody), (status = 422, description = "Invalid body or config", body = ErrorBody)))]
pub async fn validate(
    _: Operator,
    State(state): State<Arc<AppState>>,
    Json(body): Json<ConfigText>,
) -> Json<Validation> {
    let diagnostics = match state.validate(&body.toml, "<submitted config>") {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .diagnostics
            .iter()
            .map(ConfigDiagnostic::from)
            .collect(),
    };
    Json(Validation {
        valid: diagnostics.is_empty(),
        diagnostics,
    })
}

/// Validates, persists and publishes a new config version. Invalid: 422 with every
/// diagnostic, and nothing changes.
#[utoipa::path(put, path = "/v1/config", tag = "config", security(("bearer" = [])),
    request_body = PutConfig,
    responses((status = 200, description = "OK", body = Applied), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token's role may not do this", body = ErrorBody), (status = 409, description = "Conflict with the current state", body = ErrorBody), (status = 422, description = "Invalid body or config", body = ErrorBody),
        (status = 503, description = "The store (etcd) cannot be reached; nothing was changed", body = ErrorBody)))]
pub async fn put_config(
    caller: Operator,
    State(state): State<Arc<AppState>>,
    Json(body): Json<PutConfig>,
) -> Result<Json<Applied>, ApiError> {
    let source = format!("api (token {})", caller.0.token);
    state
        .apply(&body.toml, source, body.expected_version)
        .await
        .map(Json)
}

/// Every version, oldest first.
#[utoipa::path(get, path = "/v1/config/history", tag = "config", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = History), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 403, description = "The token's role may not do this", body = ErrorBody)))]
pub async fn history(_: Operator, State(state): State<Arc<AppState>>) -> Json<History> {
    let versions: Vec<HistoryEntry> = state.history().iter().map(HistoryEntry::from).collect();
    Json(History {
        current_version: state.current().meta.version,
        versions,
    })
}

/// Makes an old version's text current again, as a new version (history only grows).
#[utoipa::path(post, path = "/v1/config/rollback/{version}", tag = "config", security(("bearer" = [])),
    params(("version" = u64, Path, description = "Version to return to")),
    responses((status = 200, description = "OK", body = Applied), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Invalid body or config", body = ErrorBody),
        (status = 503, description = "The store (etcd) cannot be reached; nothing was changed", body = ErrorBody)))]
pub async fn rollback(
    _: Operator,
    State(state): State<Arc<AppState>>,
    Path(version): Path<u64>,
) -> Result<Json<Applied>, ApiError> {
    state.rollback(version).await.map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The version the node has; the answer comes when the current one differs.
    #[serde(default)]
    after: u64,
    /// Longest wait in milliseconds (default 25000, at most 60000).
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// The watching node, for the record.
    #[serde(default)]
    node: Option<String>,
}

/// Long-poll for a config version other than `after`: 200 with it at once or when it
/// appears, 204 when nothing changed within the timeout.
#[utoipa::path(get, path = "/v1/config/watch", tag = "config", security(("bearer" = [])),
    params(WatchQuery),
    responses((status = 200, description = "OK", body = WatchResponse), (status = 204, description = "No change within the timeout"),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 403, description = "The token's role may not do this", body = ErrorBody)))]
pub async fn watch(
    caller: NodeOrOperator,
    State(state): State<Arc<AppState>>,
    Query(query): Query<WatchQuery>,
) -> Response {
    let query = match (&caller, query.node) {
        (NodeOrOperator::Node(node), None) => WatchQuery {
            node: Some(node.clone()),
            ..query
        },
        (_, node) => WatchQuery { node, ..query },
    };
    if let Some(node) = &query.node
        && let Err(error) = caller.may_speak_for(node)
    {
        return error.into_response();
    }
    let wait = query
        .timeout_ms
        .map_or(WATCH_DEFAULT, Duration::from_millis)
        .min(WATCH_MAX);
    let mut current = state.subscribe();
    // Each waiting poll holds a connection; bound them so a misbehaving fleet (or
    // client) cannot exhaust the control plane.
    if state.metrics.watchers.fetch_add(1, Ordering::Relaxed) >= MAX_WATCHERS {
        state.metrics.watchers.fetch_sub(1, Ordering::Relaxed);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watchers",
            "too many config watches are open; retry later",
        )
        .into_response();
    }
    let _guard = Gauge(&state.metrics.watchers);
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        {
            let now = current.borrow_and_update();
            if now.meta.version != query.after {
                tracing::debug!(node = ?query.node, version = now.meta.version, "watch answered");
                return axum::Json(WatchResponse {
                    version: now.meta.version,
                    toml: now.text.clone(),
                })
                .into_response();
            }
        }
        tokio::select! {
            changed = current.changed() => if changed.is_err() { break },
            () = &mut deadline => break,
            () = state.shutdown.cancelled() => break,
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

struct Gauge<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A node reports the version it runs, whether applying it worked, and the addresses
/// it bound.
#[utoipa::path(post, path = "/v1/config/status", tag = "config", security(("bearer" = [])),
    request_body = StatusReport,
    responses((status = 204, description = "Recorded"), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Invalid body or config", body = ErrorBody)))]
pub async fn report_status(
    ReportingNode(caller): ReportingNode,
    State(state): State<Arc<AppState>>,
    Json(report): Json<StatusReport>,
) -> Result<StatusCode, ApiError> {
    caller.may_speak_for(&report.node)?;
    let current = state.current();
    if current.deployment.node(&report.node).is_none() {
        return Err(ApiError::not_found(format!(
            "node {:?} is not in the current config",
            report.node
        )));
    }
    let mut addresses = BTreeMap::new();
    for (service, addr) in &report.addresses {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            ApiError::unprocessable(
                "invalid_body",
                format!("addresses.{service}: {addr:?} is not IP:PORT"),
            )
        })?;
        addresses.insert(service.clone(), addr);
    }
    tracing::info!(
        node = %report.node, version = report.version, applied = report.applied,
        error = ?report.error, "node reported config status"
    );
    state
        .record_report(
            report.node,
            NodeReport {
                version: report.version,
                applied: report.applied,
                error: report.error,
                reported_at: now_rfc3339(),
                addresses,
            },
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Which node runs which version (open: a health read).
#[utoipa::path(get, path = "/v1/config/status", tag = "config",
    responses((status = 200, description = "OK", body = ConfigStatus)))]
pub async fn status(State(state): State<Arc<AppState>>) -> Json<ConfigStatus> {
    let current = state.current();
    let reports = state.reports();
    let nodes = current
        .deployment
        .nodes
        .iter()
        .map(|node| {
            // The control plane runs what it holds.
            if node.name == state.node {
                return NodeConfigStatus {
                    node: node.name.clone(),
                    role: node.role_name().into(),
                    version: Some(current.meta.version),
                    applied: Some(true),
                    error: None,
                    reported_at: None,
                    in_sync: true,
                };
            }
            let report = reports.get(&node.name);
            NodeConfigStatus {
                node: node.name.clone(),
                role: node.role_name().into(),
                version: report.map(|r| r.version),
                applied: report.map(|r| r.applied),
                error: report.and_then(|r| r.error.clone()),
                reported_at: report.map(|r| r.reported_at.clone()),
                in_sync: report.is_some_and(|r| r.applied && r.version == current.meta.version),
            }
        })
        .collect();
    Json(ConfigStatus {
        current_version: current.meta.version,
        nodes,
    })
}
