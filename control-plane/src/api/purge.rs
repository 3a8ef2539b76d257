//! Purge fan-out: one request to the control plane, one to every edge. Edges are
//! purged tier by tier, parents first: a child purged before its shield could refill
//! from the shield's still-cached old copy and keep it for a whole TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use futures_util::future::join_all;

use super::nodes::describe;
use crate::auth::Operator;
use crate::error::{ApiError, Json};
use crate::state::AppState;
use edgebox_config::{Deployment, Node};
use edgebox_wire::control_plane::{EdgeResult, ErrorBody, PurgeRequest, PurgeResponse};

/// Per-edge bound: a down or stuck edge is reported, not waited on.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Purges by URL, prefix, surrogate tag or everything on every edge (shields
/// included); with `"soft": true` the objects are marked stale rather than removed.
/// 200 when every edge purged, 207 with the per-edge results otherwise.
#[utoipa::path(post, path = "/v1/purge", tag = "cache", security(("bearer" = [])),
    request_body = PurgeRequest,
    responses((status = 200, description = "OK", body = PurgeResponse), (status = 207, description = "Some edges failed; see the per-edge results", body = PurgeResponse),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 403, description = "The token's role may not do this", body = ErrorBody),
        (status = 422, description = "Invalid body or config", body = ErrorBody)))]
pub async fn purge(
    _: Operator,
    State(state): State<Arc<AppState>>,
    Json(request): Json<PurgeRequest>,
) -> Result<(StatusCode, Json<PurgeResponse>), ApiError> {
    check(&request)?;
    let current = state.current();
    let mut results = Vec::new();
    for wave in tiers_parents_first(&current.deployment) {
        results.extend(
            join_all(
                wave.into_iter()
                    .map(|node| purge_one(&state, node, &request)),
            )
            .await,
        );
    }
    let ok = results.iter().all(|result| result.ok);
    tracing::info!(
        ?request,
        ok,
        soft = request.soft,
        edges = results.len(),
        "purge fanned out"
    );
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(PurgeResponse { ok, results })))
}

/// The deployment's edges grouped by their distance from the top of their parent
/// chain: edges without a parent first, then their children, and so on. Validation
/// rejects parent loops; the depth bound keeps a bad config from looping here anyway.
fn tiers_parents_first<'a>(deployment: &'a Deployment) -> Vec<Vec<&'a Node>> {
    let parents: HashMap<&str, Option<&str>> = deployment
        .edges()
        .map(|(node, edge)| (node.name.as_str(), edge.parent.as_deref()))
        .collect();
    let depth = |mut name: &'a str| {
        let mut depth = 0;
        while let Some(Some(parent)) = parents.get(name) {
            depth += 1;
            name = parent;
            if depth > parents.len() {
                break;
            }
        }
        depth
    };
    let mut waves: Vec<Vec<&Node>> = Vec::new();
    for (node, _) in deployment.edges() {
        let depth = depth(&node.name);
        if waves.len() <= depth {
            waves.resize_with(depth + 1, Vec::new);
        }
        waves[depth].push(node);
    }
    waves.retain(|wave| !wave.is_empty());
    waves
}

/// Purges on one edge, bounded by [`PURGE_TIMEOUT`]; failures are reported, not raised.
async fn purge_one(state: &Arc<AppState>, node: &Node, request: &PurgeRequest) -> EdgeResult {
    let started = Instant::now();
    let mut result = EdgeResult {
        node: node.name.clone(),
        ok: false,
        status: None,
        purged: None,
        error: None,
        elapsed_ms: 0,
    };
    match state.service_addr(node, "admin") {
        None => result.error = Some("admin address not known yet (port 0, not reported)".into()),
        Some(addr) => {
            let response = state
                .http
                .post(format!("http://{addr}/purge"))
                .bearer_auth(state.credential_for(node))
                .json(request)
                .timeout(PURGE_TIMEOUT)
                .send()
                .await;
            match response {
                Ok(response) => {
                    let status = response.status();
                    result.status = Some(status.as_u16());
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    if status.is_success() {
                        result.ok = true;
                        result.purged = body.get("purged").and_then(serde_json::Value::as_u64);
                    } else {
                        result.error = Some(
                            body.pointer("/error/message")
                                .and_then(serde_json::Value::as_str)
                                .map_or_else(|| format!("answered {status}"), str::to_owned),
                        );
                    }
                }
                Err(err) => result.error = Some(describe(&err)),
            }
        }
    }
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    if !result.ok {
        state
            .metrics
            .fanout_failures
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

fn check(request: &PurgeRequest) -> Result<(), ApiError> {
    let given = [
        request.url.is_some(),
        request.prefix.is_some(),
        request.tag.is_some(),
        request.all.is_some(),
    ]
    .iter()
    .filter(|given| **given)
    .count();
    if given != 1 {
        return Err(ApiError::unprocessable(
            "invalid_purge",
            "give exactly one of `url`, `prefix`, `tag`, `all`",
        ));
    }
    if request.all == Some(false) {
        return Err(ApiError::unprocessable(
            "invalid_purge",
            "`all` must be true",
        ));
    }
    for (field, value) in [("url", &request.url), ("prefix", &request.prefix)] {
        if value
            .as_deref()
            .is_some_and(|value| !value.starts_with('/'))
        {
            return Err(ApiError::unprocessable(
                "invalid_purge",
                format!("`{field}` must be a path starting with `/`"),
            ));
        }
    }
    if request.tag.as_deref().is_some_and(str::is_empty) {
        return Err(ApiError::unprocessable(
            "invalid_purge",
            "`tag` must not be empty",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shields_are_purged_before_the_edges_that_fetch_from_them() {
        let deployment = edgebox_config::parse(
            edgebox_config::EMBEDDED_DEFAULT,
            "default.toml",
            std::path::Path::new("/tmp"),
        )
        .expect("the embedded default is valid");
        let waves: Vec<Vec<&str>> = tiers_parents_first(&deployment)
            .iter()
            .map(|wave| wave.iter().map(|node| node.name.as_str()).collect())
            .collect();
        assert_eq!(
            waves,
            [vec!["shield-eu"], vec!["edge-eu", "edge-us", "edge-ap"]]
        );
    }
}
