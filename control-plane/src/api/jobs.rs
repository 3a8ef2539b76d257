//! The sandbox relay: job calls forwarded to the sandbox nodes, and a job's events
//! WebSocket relayed message by message, so clients need only the control plane. A new
//! job goes to the sandbox with the fewest outstanding jobs (`crate::fleet`) under an id
//! chosen here, and on to the next when one is down or full; a call about a job goes
//! to the sandbox it was placed on (or, for a job this replica did not place, finds
//! the sandbox that holds it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

use super::nodes::describe;
use crate::auth::Submitter;
use crate::error::{ApiError, Json, Path};
use crate::fleet::{self, Sandbox, Whereabouts};
use crate::state::AppState;
use edgebox_wire::control_plane::ErrorBody;
#[allow(unused_imports)] // `JobView` is named by the OpenAPI annotations only.
use edgebox_wire::sandbox::{JobAccepted, JobRequest, JobView, max_event_message};

/// Job calls answer quickly; `run` waits for the job, bounded by the sandbox's limits.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that stops reading for this long is dropped (and the upstream closed),
/// so an abandoned socket cannot hold the relay forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients send small messages (`stdin`, `stdin_eof`, `cancel`, passed on to the sandbox
/// as they are); a bound keeps one from making the relay buffer a large message.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Event relays open at once (each holds two sockets).
const MAX_RELAYS: i64 = 1024;

/// Submits a job to the sandbox: `{language, source | files + entry, stdin?, args?,
/// limits?, scratch?, tests?, compare?, interactive?, callback_url?}`. With `tests`, the
/// program is judged on each case (verdicts in the job's `tests`); with `callback_url`,
/// the sandbox POSTs the final view there, signed, when the job ends.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body = JobRequest,
    responses((status = 202, description = "Accepted", body = JobAccepted),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 422, description = "Invalid body or config", body = ErrorBody),
        (status = 429, description = "Sandbox queue full", body = ErrorBody), (status = 502, description = "A node could not be reached", body = ErrorBody), (status = 503, description = "Unavailable", body = ErrorBody)))]
pub async fn submit(
    caller: Submitter,
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let job = job_request(&state, request).await?;
    tracing::info!(token = %caller.0.token, language = %job.language, "job submitted");
    place(&state, "/v1/jobs", &job, CALL_TIMEOUT, Next::Submit).await
}

/// The submitted job, decoded once a sandbox is known to exist (so that a deployment
/// without one answers `no_sandbox` whatever the body).
async fn job_request(state: &Arc<AppState>, request: Request) -> Result<JobRequest, ApiError> {
    known_sandboxes(state)?;
    let Json(job) = Json::<JobRequest>::from_request(request, state).await?;
    Ok(job)
}

/// Runs a job to completion and answers with its result.
#[utoipa::path(post, path = "/v1/run", tag = "jobs", security(("bearer" = [])),
    request_body = JobRequest,
    responses((status = 200, description = "The finished job", body = JobView),
        (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 422, description = "Invalid body or config", body = ErrorBody),
        (status = 429, description = "Sandbox queue full", body = ErrorBody), (status = 502, description = "A node could not be reached", body = ErrorBody), (status = 503, description = "Unavailable", body = ErrorBody)))]
pub async fn run(
    _: Submitter,
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let job = job_request(&state, request).await?;
    place(&state, "/v1/run", &job, RUN_TIMEOUT, Next::Rerun).await
}

/// A job's state, times, current line and output.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = JobView), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody), (status = 502, description = "A node could not be reached", body = ErrorBody)))]
pub async fn get_job(
    _: Submitter,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    by_id(&state, Method::GET, &id, CALL_TIMEOUT).await
}

/// Cancels a job.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Cancelled", body = JobView), (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody), (status = 502, description = "A node could not be reached", body = ErrorBody)))]
pub async fn cancel_job(
    _: Submitter,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    by_id(&state, Method::DELETE, &id, CALL_TIMEOUT).await
}

/// The job's events (status, current line, output chunks, judged cases, the result:
/// `JobEvent`) over a WebSocket, relayed from the sandbox in order; what the client sends
/// (`ClientMessage`: stdin for interactive jobs, `stdin_eof`, `cancel`) is relayed to
/// the sandbox, and a refused message comes back as an `error` event. Browsers pass the
/// token as a `bearer.<hex>` subprotocol (offered with `edgebox`); other clients may use
/// `?access_token=`.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses((status = 101, description = "WebSocket of JSON events"), (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 502, description = "A node could not be reached", body = ErrorBody)))]
pub async fn events(
    _: Submitter,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let upgrade = upgrade
        .map_err(|rejection| ApiError::bad_request("websocket_required", rejection.body_text()))?;
    if state.metrics.relays.load(Ordering::Relaxed) >= MAX_RELAYS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many event streams are open; retry later",
        ));
    }
    // Output events are small, but the final `result` carries the whole output, so the
    // relay takes messages (and frames: the sandbox sends each message as one frame) as
    // large as the deployment's output limit allows, and no larger.
    let max_message = max_event_message(state.current().deployment.sandbox.maximums.output);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    // Connect upstream before accepting the client, so a missing job or a down
    // sandbox is an HTTP error the client can read, not a socket that closes at once.
    // The job is on one sandbox (the one it was placed on, when this control plane
    // placed it): the others answer 404 or are skipped when down.
    let mut outcome = Err(ApiError::bad_gateway(
        "sandbox_unreachable",
        "no sandbox could be reached",
    ));
    for sandbox in holders(&state, &id)? {
        let mut url = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/v1/jobs/{id}/events",
            sandbox.addr
        ))
        .map_err(|err| ApiError::internal(format!("sandbox URL: {err}")))?;
        url.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", sandbox.credential))
                .map_err(|err| ApiError::internal(format!("credential header: {err}")))?,
        );
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        outcome = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "sandbox_timeout",
                format!("sandbox {} did not answer in time", sandbox.node),
            )),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned();
                let answer = passthrough(status, Bytes::from(body), "application/json");
                if status == StatusCode::NOT_FOUND {
                    Ok(Err(answer))
                } else {
                    return Ok(answer);
                }
            }
            Ok(Err(err)) => {
                if let tungstenite::Error::Io(io) = &err
                    && io.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    lost(&state, &sandbox.node, err.to_string());
                }
                Err(ApiError::bad_gateway(
                    "sandbox_unreachable",
                    format!("sandbox {}: {err}", sandbox.node),
                ))
            }
            Ok(Ok((upstream, _))) => {
                outcome = Ok(Ok(upstream));
                break;
            }
        };
    }
    let upstream = match outcome {
        Ok(Ok(upstream)) => upstream,
        // Every sandbox that answered said 404: the job is nowhere.
        Ok(Err(not_found)) => return Ok(not_found),
        Err(error) => return Err(error),
    };
    Ok(upgrade
        // A browser that sent its token as a subprotocol (`crate::auth`) needs one of its
        // offers chosen, or it drops the connection.
        .protocols(["edgebox"])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |client| relay(state, id, client, upstream)))
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn relay(state: Arc<AppState>, id: String, client: WebSocket, upstream: Upstream) {
    state.metrics.relays.fetch_add(1, Ordering::Relaxed);
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let mut forwarded = 0u64;
    // One message in flight per direction: a slow reader slows the sender down
    // instead of growing a queue.
    let reason = loop {
        tokio::select! {
            message = upstream_rx.next() => match message {
                Some(Ok(message)) => {
                    let closing = matches!(message, tungstenite::Message::Close(_));
                    let Some(message) = to_client(message) else { continue };
                    match tokio::time::timeout(SEND_TIMEOUT, client_tx.send(message)).await {
                        Ok(Ok(())) => forwarded += 1,
                        Ok(Err(_)) => break "client went away",
                        Err(_) => break "client stopped reading",
                    }
                    if closing { break "sandbox closed the stream" }
                }
                Some(Err(_)) | None => break "sandbox stream ended",
            },
            message = client_rx.next() => match message {
                Some(Ok(ws::Message::Close(_))) | None | Some(Err(_)) => break "client closed",
                Some(Ok(message)) => {
                    if let Some(message) = to_upstream(message)
                        && tokio::time::timeout(SEND_TIMEOUT, upstream_tx.send(message)).await.map_or(true, |r| r.is_err()) {
                            break "sandbox went away";
                        }
                }
            },
            () = state.shutdown.cancelled() => break "shutting down",
        }
    };
    tracing::debug!(job = %id, forwarded, reason, "event relay closed");
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        client_tx.send(ws::Message::Close(None)),
    )
    .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        upstream_tx.send(tungstenite::Message::Close(None)),
    )
    .await;
    state.metrics.relays.fetch_sub(1, Ordering::Relaxed);
}

fn to_client(message: tungstenite::Message) -> Option<ws::Message> {
    Some(match message {
        tungstenite::Message::Text(text) => ws::Message::Text(text.as_str().into()),
        tungstenite::Message::Binary(bytes) => ws::Message::Binary(bytes),
        tungstenite::Message::Close(frame) => {
            ws::Message::Close(frame.map(|frame| ws::CloseFrame {
                code: frame.code.into(),
                reason: frame.reason.as_str().into(),
            }))
        }
        // Pings and pongs are per hop; each side's library answers its own.
        _ => return None,
    })
}

fn to_upstream(message: ws::Message) -> Option<tungstenite::Message> {
    Some(match message {
        ws::Message::Text(text) => tungstenite::Message::Text(text.as_str().into()),
        ws::Message::Binary(bytes) => tungstenite::Message::Binary(bytes),
        _ => return None,
    })
}

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_job_id",
            "job ids are letters, digits, `-` and `_`",
        ))
    }
}

/// The sandbox nodes with a known address (the deployment's errors when there are none).
fn known_sandboxes(state: &AppState) -> Result<Vec<Sandbox>, ApiError> {
    let Some(known) = fleet::sandboxes(state) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_sandbox",
            "the deployment has no sandbox node",
        ));
    };
    if known.is_empty() {
        return Err(ApiError::bad_gateway(
            "sandbox_address_unknown",
            "the sandbox has not reported its address yet",
        ));
    }
    Ok(known)
}

/// The sandboxes to ask about job `id`: the one it was placed on, when this control
/// plane placed it (another replica's jobs, or ones forgotten, are asked of all).
fn holders(state: &AppState, id: &str) -> Result<Vec<Sandbox>, ApiError> {
    let known = known_sandboxes(state)?;
    match state.fleet.whereabouts(id) {
        Whereabouts::Unknown => Ok(known),
        Whereabouts::Down { node, reason } => Err(ApiError::bad_gateway(
            "sandbox_down",
            format!(
                "job {id} is on sandbox {node}, which is down ({reason}); a job that had \
                 not started would have been moved to another sandbox"
            ),
        )),
        Whereabouts::On(node) => {
            let holder: Vec<Sandbox> = known
                .iter()
                .filter(|sandbox| sandbox.node == node)
                .cloned()
                .collect();
            Ok(if holder.is_empty() { known } else { holder })
        }
    }
}

/// A call to `node` could not connect: it leaves the rotation and its queued jobs move.
fn lost(state: &Arc<AppState>, node: &str, reason: String) {
    let to_move = state.fleet.unreachable(node, reason);
    if !to_move.is_empty() {
        tokio::spawn(fleet::move_jobs(state.clone(), to_move));
    }
}

/// When a call goes on to the next sandbox instead of answering the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A new job (`POST /v1/jobs`): when the request cannot have reached the sandbox
    /// (connection refused) or it answered 429 (queue full). A connection broken later
    /// is the client's 502: the job may exist, and a second one would be a duplicate.
    Submit,
    /// `POST /v1/run`: also when the connection broke before the answer. A job reads
    /// nothing but its request and leaves nothing behind, so running it again on
    /// another sandbox is safe (what the client sees is one run's result).
    Rerun,
}

/// Places a new job: on the sandbox with the fewest outstanding jobs that takes it,
/// under an id chosen here so that the job keeps it if it has to move.
async fn place(
    state: &Arc<AppState>,
    path: &str,
    job: &JobRequest,
    timeout: Duration,
    next: Next,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let body = Bytes::from(
        serde_json::to_vec(job).map_err(|err| ApiError::internal(format!("job JSON: {err}")))?,
    );
    let candidates = state.fleet.order(known_sandboxes(state)?, None);
    let mut outcome = Err(ApiError::bad_gateway(
        "sandbox_unreachable",
        "no sandbox could be reached",
    ));
    for sandbox in candidates {
        let answer = match fleet::post_job(state, &sandbox, path, &id, body.clone(), timeout).await
        {
            Ok(response) => read(response).await,
            Err(err) => Err(err),
        };
        let go_on = match &answer {
            Ok((status, _, _)) => *status == StatusCode::TOO_MANY_REQUESTS,
            // A timeout may mean a job still running there: not one to start twice.
            Err(err) => !err.is_timeout() && (err.is_connect() || next == Next::Rerun),
        };
        outcome = match answer {
            Ok((status, content_type, bytes)) => {
                tracing::debug!(path, %status, sandbox = %sandbox.node, job = %id, "job placed");
                if status.is_success() {
                    // A submitted job's request is kept until it starts, to move it
                    // if its node goes down; a run is run again by this call instead.
                    let keep = (next == Next::Submit).then(|| body.clone());
                    state.fleet.placed(&sandbox.node, &id, keep);
                }
                Ok(passthrough(status, rewrite_urls(bytes), &content_type))
            }
            Err(err) => {
                let reason = format!("sandbox {}: {}", sandbox.node, describe(&err));
                tracing::warn!(path, sandbox = %sandbox.node, error = %reason, next_sandbox = go_on, "sandbox call failed");
                Err(call_failed(state, &sandbox.node, &err, reason))
            }
        };
        if !go_on {
            break;
        }
    }
    outcome
}

/// A call about one job (get, cancel: both idempotent): the sandbox that holds the id
/// answers; others asked say 404 or are down.
async fn by_id(
    state: &Arc<AppState>,
    method: Method,
    id: &str,
    timeout: Duration,
) -> Result<Response, ApiError> {
    let path = format!("/v1/jobs/{id}");
    let mut outcome = Err(ApiError::bad_gateway(
        "sandbox_unreachable",
        "no sandbox could be reached",
    ));
    for sandbox in holders(state, id)? {
        let answer = state
            .http
            .request(method.clone(), format!("http://{}{path}", sandbox.addr))
            .bearer_auth(&sandbox.credential)
            .timeout(timeout)
            .send()
            .await;
        let answer = match answer {
            Ok(response) => read(response).await,
            Err(err) => Err(err),
        };
        let go_on = match &answer {
            Ok((status, _, _)) => *status == StatusCode::NOT_FOUND,
            Err(err) => !err.is_timeout(),
        };
        outcome = match answer {
            Ok((status, content_type, bytes)) => {
                tracing::debug!(%method, path, %status, sandbox = %sandbox.node, "relayed to sandbox");
                Ok(passthrough(status, bytes, &content_type))
            }
            Err(err) => {
                let reason = format!("sandbox {}: {}", sandbox.node, describe(&err));
                tracing::warn!(%method, path, sandbox = %sandbox.node, error = %reason, "sandbox call failed");
                Err(call_failed(state, &sandbox.node, &err, reason))
            }
        };
        if !go_on {
            break;
        }
    }
    outcome
}

/// The client's error for a call to a sandbox that failed: 504 when it timed out (the call
/// may still take effect there), 502 otherwise. A refused connection also takes the node
/// out of rotation until a poll finds it again.
fn call_failed(
    state: &Arc<AppState>,
    node: &str,
    err: &reqwest::Error,
    reason: String,
) -> ApiError {
    if err.is_timeout() {
        return ApiError::new(StatusCode::GATEWAY_TIMEOUT, "sandbox_timeout", reason);
    }
    if err.is_connect() {
        lost(state, node, describe(err));
    }
    ApiError::bad_gateway("sandbox_unreachable", reason)
}

/// A sandbox's answer: status, content type and the whole body.
async fn read(response: reqwest::Response) -> Result<(StatusCode, String, Bytes), reqwest::Error> {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let bytes = response.bytes().await?;
    Ok((status, content_type, bytes))
}

/// The relay serves the same paths as the sandbox, so absolute URLs the sandbox
/// hands out in a [`JobAccepted`] are made relative (to whichever host the client used).
fn rewrite_urls(bytes: Bytes) -> Bytes {
    let Ok(mut accepted) = serde_json::from_slice::<JobAccepted>(&bytes) else {
        return bytes;
    };
    let relative = |url: &mut String| match url.split_once("://") {
        Some((_, rest)) => {
            *url = rest.find('/').map_or("/", |at| &rest[at..]).to_owned();
            true
        }
        None => false,
    };
    let changed = relative(&mut accepted.status_url) | relative(&mut accepted.events_url);
    if changed {
        Bytes::from(serde_json::to_vec(&accepted).unwrap_or_default())
    } else {
        bytes
    }
}

fn passthrough(status: StatusCode, body: Bytes, content_type: &str) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
