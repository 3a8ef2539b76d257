//! Stats: the edges' and sandboxes' counters, fetched concurrently and summed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use edgebox_config::Role;
use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::nodes::describe;
use crate::auth::Operator;
use crate::error::Json;
use crate::state::AppState;
use edgebox_wire::control_plane::{EdgeTotals, ErrorBody, StatsResponse, Unreachable};

const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests, bytes, cache counters and hit ratio per tier summed over edges; jobs by
/// state from the sandbox; each node's own document; nodes that did not answer.
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
    let mut cache = Value::Object(Map::new());
    let mut jobs = Value::Object(Map::new());
    let mut per_node = BTreeMap::new();
    let mut unreachable = Vec::new();
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
            Role::Edge(_) => {
                edges.reporting += 1;
                if let Some(Value::Object(requests)) = document.get("requests") {
                    for (class, count) in requests {
                        if let Some(count) = count.as_u64() {
                            *edges.requests.entry(class.clone()).or_default() += count;
                        }
                    }
                }
                edges.bytes_sent += document
                    .get("bytes_sent")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if let Some(node_cache) = document.get("cache") {
                    add_numbers(&mut cache, node_cache);
                }
            }
            _ => {
                if let Some(node_jobs) = document.get("jobs") {
                    add_numbers(&mut jobs, node_jobs);
                }
            }
        }
        per_node.insert(node.name.clone(), document);
    }
    hit_ratios(&cache, "", &mut edges.hit_ratio);
    edges.cache = cache;
    Json(StatsResponse {
        edges,
        jobs,
        per_node,
        unreachable,
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

/// Adds every number of `from` into `into`, matching objects key by key, so that
/// counters sum whatever shape the nodes report them in.
fn add_numbers(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match value {
                    Value::Number(_) | Value::Object(_) => {
                        let slot = into.entry(key.clone()).or_insert_with(|| match value {
                            Value::Object(_) => Value::Object(Map::new()),
                            _ => Value::from(0u64),
                        });
                        add_numbers(slot, value);
                    }
                    _ => {}
                }
            }
        }
        (into @ Value::Number(_), Value::Number(from)) => {
            let sum = match (into.as_u64(), from.as_u64()) {
                (Some(a), Some(b)) => Value::from(a.saturating_add(b)),
                _ => serde_json::Number::from_f64(
                    into.as_f64().unwrap_or(0.0) + from.as_f64().unwrap_or(0.0),
                )
                .map_or(Value::Null, Value::Number),
            };
            *into = sum;
        }
        _ => {}
    }
}

/// Every object with numeric `hits` and `misses` gives a ratio, named by its path
/// (`l1`, `tiers.l2`, ... or `total` at the top).
fn hit_ratios(value: &Value, path: &str, out: &mut BTreeMap<String, f64>) {
    let Value::Object(map) = value else { return };
    if let (Some(hits), Some(misses)) = (
        map.get("hits").and_then(Value::as_f64),
        map.get("misses").and_then(Value::as_f64),
    ) && hits + misses > 0.0
    {
        let name = if path.is_empty() { "total" } else { path };
        out.insert(name.to_owned(), hits / (hits + misses));
    }
    for (key, child) in map {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        hit_ratios(child, &child_path, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_counters_of_any_shape_and_derives_ratios() {
        let mut total = Value::Object(Map::new());
        add_numbers(
            &mut total,
            &serde_json::json!({"l1": {"hits": 3, "misses": 1}, "note": "x"}),
        );
        add_numbers(
            &mut total,
            &serde_json::json!({"l1": {"hits": 1, "misses": 3}, "l2": {"hits": 2, "misses": 0}}),
        );
        assert_eq!(
            total,
            serde_json::json!({"l1": {"hits": 4, "misses": 4}, "l2": {"hits": 2, "misses": 0}})
        );
        let mut ratios = BTreeMap::new();
        hit_ratios(&total, "", &mut ratios);
        assert_eq!(ratios["l1"], 0.5);
        assert_eq!(ratios["l2"], 1.0);
    }
}
