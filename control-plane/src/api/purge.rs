//! Purge fan-out: one request to the control plane, one to every edge, concurrently.

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
    let calls = current.deployment.edges().map(|(node, _)| {
        let state = state.clone();
        let request = &request;
        async move {
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
                None => {
                    result.error = Some("admin address not known yet (port 0, not reported)".into())
                }
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
                                result.purged =
                                    body.get("purged").and_then(serde_json::Value::as_u64);
                            } else {
                                result.error = Some(
                                    body.pointer("/error/message")
                                        .and_then(serde_json::Value::as_str)
                                        .map_or_else(
                                            || format!("answered {status}"),
                                            str::to_owned,
                                        ),
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
    });
    let results = join_all(calls).await;
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
