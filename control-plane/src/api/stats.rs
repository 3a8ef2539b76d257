//! Stats: the edges' and sandboxes' counters, fetched concurrently and summed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use edgebox_config::Role;
use futures_util::future::join_all;
use serde_json::Value;

use super::nodes::describe;
use crate::auth::Operator;
use crate::error::Json;
use crate::state::AppState;
use edgebox_wire::control_plane::{EdgeTotals, ErrorBody, StatsResponse, Unreachable};
use edgebox_wire::edge::EdgeStats;
use edgebox_wire::sandbox::SandboxStats;

const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests, bytes, cache counters and hit ratio per tier summed over edges; jobs by
/// state summed over sandboxes and per sandbox (with whether the relay has it in
/// rotation, its load and the jobs placed on it); each node's own document; nodes that
/// did not answer.
#[utoipa::path(get, path = "/v1/stats", tag = "stats", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = StatsResponse), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 403, description = "The token's role may not do this", body = ErrorBody)))]
pub async fn stats(_: Operator, State(state): State<Arc<AppState>>) -> Json<StatsResponse> {
    let current = state.current();
    let targets = current.deployment.nodes.iter().filter_map(|node| {
        let (service, path) = match node.role {
            Role::Edge(_) => ("admin", "/stats"),
            Role::Sandbox(_) => ("api", "/v1/stats"),
            _ => return None,
        };
        Some((node, service, path))
    });
    let fetches = targets.map(|(node, service, path)| {
        let state = state.clone();
        async move {
            let result = match state.service_addr(node, service) {
                None => Err("address not known yet (port 0, not reported)".to_owned()),
                Some(addr) => {
                    let credential = state.credential_for(node);
                    fetch(&state.http, &format!("http://{addr}{path}"), &credential).await
                }
            };
            (node, result)
        }
    });
    let mut edges = EdgeTotals::default();
    let mut jobs = BTreeMap::new();
    let mut per_node = BTreeMap::new();
    let mut unreachable = Vec::new();
    // The relay's view of each sandbox (up, load, placements), with its jobs by state.
    let mut sandboxes = state.fleet.snapshot();
    for node in &current.deployment.nodes {
        if matches!(node.role, Role::Sandbox(_)) {
            sandboxes.entry(node.name.clone()).or_default();
        }
    }
    sandboxes.retain(|name, _| current.deployment.node(name).is_some());
    for (node, result) in join_all(fetches).await {
        let document = match result {
            Ok(document) => document,
            Err(error) => {
                state
                    .metrics
                    .fanout_failures
                    .fetch_add(1, Ordering::Relaxed);
                unreachable.push(Unreachable {
                    node: node.name.clone(),
                    error,
                });
                continue;
            }
        };
        match node.role {
            Role::Edge(_) => match serde_json::from_value::<EdgeStats>(document.clone()) {
                Ok(stats) => {
                    edges.reporting += 1;
                    for (class, count) in stats.requests.entries() {
                        *edges.requests.entry(class.to_owned()).or_default() += count;
                    }
                    edges.bytes_sent += stats.bytes_sent;
                    edges.cache.add(&stats.cache);
                    edges.latency.add(&stats.latency);
                }
                Err(error) => {
                    unreachable.push(Unreachable {
                        node: node.name.clone(),
                        error: format!("invalid stats JSON: {error}"),
                    });
                    continue;
                }
            },
            _ => match serde_json::from_value::<SandboxStats>(document.clone()) {
                Ok(stats) => {
                    for (state, count) in &stats.jobs {
                        *jobs.entry(*state).or_default() += count;
                    }
                    sandboxes.entry(node.name.clone()).or_default().jobs = stats.jobs;
                }
                Err(error) => {
                    unreachable.push(Unreachable {
                        node: node.name.clone(),
                        error: format!("invalid stats JSON: {error}"),
                    });
                    continue;
                }
            },
        }
        per_node.insert(node.name.clone(), document);
    }
    for (tier, stats) in [("l1", &edges.cache.l1), ("l2", &edges.cache.l2)] {
        if let Some(ratio) = stats.hit_ratio() {
            edges.hit_ratio.insert(tier.to_owned(), ratio);
        }
    }
    Json(StatsResponse {
        edges,
        jobs,
        per_node,
        unreachable,
        sandboxes,
    })
}

async fn fetch(http: &reqwest::Client, url: &str, credential: &str) -> Result<Value, String> {
    let response = http
        .get(url)
        .bearer_auth(credential)
        .timeout(STATS_TIMEOUT)
        .send()
        .await
        .map_err(|err| describe(&err))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    response
        .json()
        .await
        .map_err(|err| format!("invalid stats JSON: {}", describe(&err)))
}
