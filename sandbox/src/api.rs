//! The HTTP + WebSocket job API (axum). Every error is JSON:
//! `{"error": {"code": "...", "message": "..."}}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgebox_node::credentials::Caller;
use edgebox_wire::health::{HealthStatus, NodeHealth};
use edgebox_wire::sandbox::{
    ClientMessage, EventError, JOB_ID_HEADER, JobAccepted, JobEvent, LanguageInfo, Languages,
    LineSupport, OutputChunk, OutputStream, QueueReport, RuntimeInfo, SandboxStats,
};
use edgebox_wire::{ErrorBody, ErrorDetail};

use crate::jobs::output::LossyUtf8;
use crate::jobs::view::ViewPieces;
use crate::jobs::{Job, JobState, Language};
use crate::runtimes;
use crate::service::{Rejection, Service, Submission, Subscription};

/// What a subscriber may send the sandbox: stdin, `stdin_eof` and `cancel` messages; a
/// bound keeps a client from making the daemon buffer a large one (more stdin is sent
/// as more messages).
const MAX_INCOMING_MESSAGE: usize = 64 * 1024;

type Shared = Arc<Service>;

pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/languages", get(languages))
        .route("/v1/stats", get(stats))
        .route("/v1/queue", get(queue))
        .route("/v1/jobs", post(submit))
        .route("/v1/run", post(run))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{id}/events", get(events))
        .fallback(|| async { error(404, "not_found", "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(service)
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            diagnostics: None,
        },
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

async fn healthz(AxState(service): AxState<Shared>) -> Response {
    let draining = service.is_draining();
    let body = Json(NodeHealth {
        status: if draining {
            HealthStatus::Draining
        } else {
            HealthStatus::Ok
        },
        node: service.node.clone(),
        region: None,
        uptime_ms: Some(service.started.elapsed().as_millis() as u64),
        config_version: None,
        running: Some(service.running.load(Ordering::Relaxed) as u64),
        queued: Some(service.waiting.load(Ordering::Relaxed) as u64),
        control_plane: None,
        access_log: None,
    });
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, body).into_response()
}

async fn languages() -> Json<Languages> {
    let runtime = |spec: &runtimes::RuntimeSpec, name: Language| LanguageInfo {
        name,
        version: spec.version.to_owned(),
        runtime: Some(RuntimeInfo {
            package: spec.package.to_owned(),
            package_version: spec.package_version.to_owned(),
            file: spec.member.to_owned(),
            sha256: spec.sha256.to_owned(),
        }),
        current_line: match name {
            Language::Javascript => {
                LineSupport::When("single-file programs: the loop it is running".to_owned())
            }
            _ => LineSupport::Known(name == Language::Python),
        },
        packages: spec.packages.iter().map(|p| (*p).to_owned()).collect(),
    };
    let module = |name: Language, version: &str| LanguageInfo {
        name,
        version: version.to_owned(),
        runtime: None,
        current_line: LineSupport::When("with DWARF".to_owned()),
        packages: Vec::new(),
    };
    Json(Languages {
        languages: vec![
            runtime(&runtimes::PYTHON, Language::Python),
            runtime(&runtimes::JAVASCRIPT, Language::Javascript),
            module(
                Language::Wat,
                "WebAssembly text format, WASI preview 1 command",
            ),
            module(
                Language::Wasm,
                "WebAssembly binary (base64), WASI preview 1 command",
            ),
        ],
    })
}

fn stats_of(service: &Service) -> SandboxStats {
    let counts = service.jobs.counts();
    let totals = service.jobs.finished_totals();
    let by_state = |map: &std::collections::HashMap<JobState, u64>| {
        JobState::ALL
            .iter()
            .map(|state| (*state, map.get(state).copied().unwrap_or(0)))
            .collect()
    };
    let settings = service.settings.load();
    SandboxStats {
        node: service.node.clone(),
        jobs: by_state(&counts),
        finished_total: by_state(&totals),
        running: service.running.load(Ordering::Relaxed) as u64,
        queued: service.waiting.load(Ordering::Relaxed) as u64,
        submitted: service.jobs.submitted.load(Ordering::Relaxed),
        rejected_busy: service.jobs.rejected_busy.load(Ordering::Relaxed),
        max_concurrent_jobs: settings.max_concurrent_jobs as u64,
        queue_length: settings.queue_length as u64,
        runtime_dir: service.engine.dir.path.clone(),
        retained: service.jobs.retained(service.retention()),
        subscribers: service.subscribers.load(Ordering::Relaxed) as u64,
        programs_prepared: service.programs_prepared.load(Ordering::Relaxed),
    }
}

async fn stats(AxState(service): AxState<Shared>) -> Json<SandboxStats> {
    Json(stats_of(&service))
}

/// This process's id in [`QueueReport::instance`]: a restarted sandbox has a new one.
fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// What the control plane polls: load, and which jobs have not started yet.
async fn queue(AxState(service): AxState<Shared>) -> Json<QueueReport> {
    let settings = service.settings.load();
    let queued_ids = service
        .jobs
        .all()
        .into_iter()
        .filter(|job| job.state() == JobState::Queued)
        .map(|job| job.id.clone())
        .collect();
    Json(QueueReport {
        node: service.node.clone(),
        instance: instance().to_owned(),
        running: service.running.load(Ordering::Relaxed) as u64,
        queued: service.waiting.load(Ordering::Relaxed) as u64,
        max_concurrent_jobs: settings.max_concurrent_jobs as u64,
        queue_length: settings.queue_length as u64,
        queued_ids,
    })
}

async fn metrics(AxState(service): AxState<Shared>) -> Response {
    // The same numbers as `/stats`, every sample labelled with the node.
    let stats = stats_of(&service);
    let node = [("node", stats.node.as_str())];
    let mut out = edgebox_node::metrics::MetricsText::new();
    for state in JobState::ALL.iter().filter(|state| state.is_final()) {
        out.counter(
            "edgebox_sandbox_jobs_finished_total",
            "Jobs finished, by final state.",
            &[("node", stats.node.as_str()), ("state", state.name())],
            stats.finished_total.get(state).copied().unwrap_or(0),
        );
    }
    out.gauge(
        "edgebox_sandbox_jobs_running",
        "Jobs running now.",
        &node,
        stats.running,
    )
    .gauge(
        "edgebox_sandbox_jobs_queued",
        "Jobs waiting for a slot.",
        &node,
        stats.queued,
    )
    .gauge(
        "edgebox_sandbox_retained_jobs",
        "Finished jobs kept readable.",
        &node,
        stats.retained.jobs,
    )
    .gauge(
        "edgebox_sandbox_retained_bytes",
        "Bytes finished jobs hold (bounded by max_finished_bytes).",
        &node,
        stats.retained.bytes,
    )
    .gauge(
        "edgebox_sandbox_subscribers",
        "Event subscribers connected now.",
        &node,
        stats.subscribers,
    )
    .counter(
        "edgebox_sandbox_jobs_submitted_total",
        "Jobs accepted.",
        &node,
        stats.submitted,
    )
    .counter(
        "edgebox_sandbox_jobs_rejected_busy_total",
        "Submissions refused with 429.",
        &node,
        stats.rejected_busy,
    )
    .counter(
        "edgebox_sandbox_programs_prepared_total",
        "Programs prepared (modules compiled, runtimes resolved): one per job, however many test cases.",
        &node,
        stats.programs_prepared,
    )
    .counter(
        "edgebox_sandbox_jobs_evicted_total",
        "Finished jobs forgotten early (oldest first) to stay within the retention bounds.",
        &node,
        stats.retained.evicted_total,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out.finish(),
    )
        .into_response()
}

/// Reads and decodes a submission: 413 when the body cannot fit the size limits, 400 for
/// malformed JSON (including invalid UTF-8), 422 for JSON of the wrong shape.
async fn read_submission(service: &Service, body: Body) -> Result<Submission, Response> {
    // JSON escaping can at most sextuple a byte (`\u0000`); allow for it plus the envelope
    // (and a small allowance per test case for its keys).
    let settings = service.settings.load();
    let limit = (settings.max_source_size + settings.max_stdin_size + settings.max_tests_size)
        .saturating_mul(6)
        .saturating_add(64 * 1024)
        .saturating_add(settings.max_test_cases as u64 * 256) as usize;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            413,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let submission: Submission = decode_submission(&mut deserializer).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => 422,
            _ => 400,
        };
        let code = if status == 400 {
            "invalid_json"
        } else {
            "invalid_request"
        };
        error(status, code, format!("invalid job request: {e}"))
    })?;
    Ok(submission)
}

fn decode_submission(
    deserializer: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<Submission, serde_json::Error> {
    let value = serde::Deserialize::deserialize(&mut *deserializer)?;
    deserializer.end()?;
    Ok(value)
}

fn urls(job: &Job) -> JobAccepted {
    JobAccepted {
        id: job.id.clone(),
        state: job.state(),
        status_url: format!("/v1/jobs/{}", job.id),
        events_url: format!("/v1/jobs/{}/events", job.id),
    }
}

/// Admits (429 when full, before the body is even read), reads, validates and queues a
/// submission.
async fn accept(service: &Shared, request: Request) -> Result<Arc<Job>, Response> {
    let id = chosen_id(&request).map_err(IntoResponse::into_response)?;
    let ticket = service.admit().map_err(IntoResponse::into_response)?;
    let submission = read_submission(service, request.into_body()).await?;
    service
        .submit(submission, ticket, id)
        .await
        .map_err(IntoResponse::into_response)
}

/// The job id the control plane chose ([`JOB_ID_HEADER`]): taken from the node
/// credential's holder only, so a submitter cannot pick ids.
fn chosen_id(request: &Request) -> Result<Option<String>, Rejection> {
    let Some(value) = request.headers().get(JOB_ID_HEADER) else {
        return Ok(None);
    };
    if request.extensions().get::<Caller>() != Some(&Caller::Node) {
        return Err(Rejection::new(
            403,
            "forbidden",
            format!("only the control plane may name a job ({JOB_ID_HEADER})"),
        ));
    }
    let id = value.to_str().unwrap_or_default();
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(Rejection::new(
            400,
            "invalid_job_id",
            "job ids are 1 to 128 letters, digits, `-` and `_`",
        ));
    }
    Ok(Some(id.to_owned()))
}

async fn submit(AxState(service): AxState<Shared>, request: Request) -> Response {
    match accept(&service, request).await {
        Ok(job) => (StatusCode::ACCEPTED, Json(urls(&job))).into_response(),
        Err(response) => response,
    }
}

async fn run(AxState(service): AxState<Shared>, request: Request) -> Response {
    let job = match accept(&service, request).await {
        Ok(job) => job,
        Err(response) => return response,
    };
    job.until_final().await;
    view_response(&job)
}

/// The job's view, streamed: the output is escaped one chunk at a time as the client
/// reads, never built into one string.
fn view_response(job: &Job) -> Response {
    let pieces = ViewPieces::view(job.snapshot()).map(Ok::<_, std::convert::Infallible>);
    let body = Body::from_stream(futures_util::stream::iter(pieces));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn find(service: &Service, id: &str) -> Result<Arc<Job>, Rejection> {
    service.jobs.get(id).ok_or_else(|| {
        Rejection::new(
            404,
            "job_not_found",
            format!("no job {id} (finished jobs are kept for a limited time)"),
        )
    })
}

async fn get_job(AxState(service): AxState<Shared>, Path(id): Path<String>) -> Response {
    match find(&service, &id) {
        Ok(job) => view_response(&job),
        Err(rejection) => rejection.into_response(),
    }
}

async fn cancel_job(AxState(service): AxState<Shared>, Path(id): Path<String>) -> Response {
    let job = match find(&service, &id) {
        Ok(job) => job,
        Err(rejection) => return rejection.into_response(),
    };
    if !job.cancel() {
        return error(
            409,
            "job_finished",
            format!("job {id} has already finished"),
        );
    }
    // Report the final state: cancellation takes effect within an epoch tick.
    let _ = tokio::time::timeout(Duration::from_secs(2), job.until_final()).await;
    view_response(&job)
}

async fn events(
    AxState(service): AxState<Shared>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let job = match find(&service, &id) {
        Ok(job) => job,
        Err(rejection) => return rejection.into_response(),
    };
    let subscription = match service.subscribe(&job) {
        Ok(subscription) => subscription,
        Err(rejection) => return rejection.into_response(),
    };
    let send_timeout = service.settings.load().subscriber_send_timeout;
    let stdin_limit = service.settings.load().max_stdin_size;
    upgrade
        .max_message_size(MAX_INCOMING_MESSAGE)
        .max_frame_size(MAX_INCOMING_MESSAGE)
        .on_upgrade(move |socket| {
            stream_events(socket, job, subscription, send_timeout, stdin_limit)
        })
}

/// What a subscriber receives: everything it missed first (output so far), then output
/// chunks as they come, a status at least every 100 ms while the job is queued or running,
/// and the final result. Every send has `send_timeout`: a client that stops reading is
/// disconnected, and its place and its hold on the job go with it. What the client sends
/// (stdin, `stdin_eof`, `cancel`) is applied as it comes; a message that cannot be is
/// answered with an `error` event and the job goes on.
async fn stream_events(
    mut socket: WebSocket,
    job: Arc<Job>,
    subscription: Subscription,
    send_timeout: Duration,
    stdin_limit: u64,
) {
    const STATUS_EVERY: Duration = Duration::from_millis(100);
    let _subscription = subscription;
    let mut changes = job.subscribe();
    let mut cursor = crate::jobs::OutputCursor::default();
    let mut cases_sent = 0;
    // One decoder per stream, so that a character split between chunks stays whole.
    let mut decoders = [LossyUtf8::default(), LossyUtf8::default()];
    let mut status = tokio::time::interval(STATUS_EVERY);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        let finished = job.state().is_final();
        let mut failed = None;
        for chunk in job.output_since(&mut cursor) {
            let mut data = String::new();
            decoders[chunk.stream as usize].push(&chunk.data, &mut data);
            if data.is_empty() {
                continue;
            }
            if let Err(reason) =
                send(&mut socket, send_timeout, event_text(chunk.stream, data)).await
            {
                failed = Some(reason);
                break;
            }
        }
        if let Some(reason) = failed {
            break reason;
        }
        for case in job.cases_since(&mut cases_sent) {
            let text = serde_json::to_string(&JobEvent::Case(case)).unwrap_or_default();
            if let Err(reason) = send(&mut socket, send_timeout, text.into()).await {
                failed = Some(reason);
                break;
            }
        }
        if let Some(reason) = failed {
            break reason;
        }
        if finished {
            for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                let mut data = String::new();
                decoders[stream as usize].finish(&mut data);
                if !data.is_empty()
                    && send(&mut socket, send_timeout, event_text(stream, data))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            let sent = send(&mut socket, send_timeout, shared_text(job.result_text())).await;
            if sent.is_ok() {
                let _ = tokio::time::timeout(send_timeout, socket.send(Message::Close(None))).await;
            }
            return;
        }
        tokio::select! {
            _ = status.tick() => {
                let text = serde_json::to_string(&JobEvent::Status(job.status())).unwrap_or_default();
                if let Err(reason) = send(&mut socket, send_timeout, text.into()).await {
                    break reason;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    break "job dropped";
                }
            }
            incoming = socket.recv() => {
                let refused = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break "client closed",
                    Some(Ok(Message::Text(text))) => apply_client_message(&job, text.as_str(), stdin_limit),
                    Some(Ok(Message::Binary(_))) => Some(EventError {
                        code: "invalid_message".into(),
                        message: "messages are JSON text: {\"type\": \"stdin\" | \"stdin_eof\" | \"cancel\"}".into(),
                    }),
                    Some(Ok(_)) => None,
                };
                if let Some(refused) = refused {
                    tracing::debug!(job = %job.id, code = %refused.code, "client message refused");
                    let text = serde_json::to_string(&JobEvent::Error(refused)).unwrap_or_default();
                    if let Err(reason) = send(&mut socket, send_timeout, text.into()).await {
                        break reason;
                    }
                }
            }
        }
    };
    tracing::debug!(job = %job.id, reason, "event subscriber disconnected");
}

/// Applies one client message to `job`; `Some` says why it was refused.
fn apply_client_message(job: &Job, text: &str, stdin_limit: u64) -> Option<EventError> {
    let refused = |code: &str, message: String| {
        Some(EventError {
            code: code.to_owned(),
            message,
        })
    };
    let message = match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => message,
        Err(error) => {
            return refused(
                "invalid_message",
                format!(
                    "not a client message ({error}); expected {{\"type\": \"stdin\", \"data\": ...}}, {{\"type\": \"stdin_eof\"}} or {{\"type\": \"cancel\"}}"
                ),
            );
        }
    };
    if job.state().is_final() {
        return refused(
            "job_finished",
            format!("job {} has already finished", job.id),
        );
    }
    let applied = match message {
        ClientMessage::Stdin { data } => job.stdin.write(Bytes::from(data), stdin_limit),
        ClientMessage::StdinEof => job.stdin.close(),
        ClientMessage::Cancel => {
            job.cancel();
            Ok(())
        }
    };
    applied
        .err()
        .and_then(|error| refused(error.code(), error.to_string()))
}

/// Sends one text message, giving up after `timeout`.
async fn send(
    socket: &mut WebSocket,
    timeout: Duration,
    text: Utf8Bytes,
) -> Result<(), &'static str> {
    match tokio::time::timeout(timeout, socket.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("client went away"),
        Err(_) => Err("client stopped reading"),
    }
}

fn event_text(stream: OutputStream, data: String) -> Utf8Bytes {
    serde_json::to_string(&JobEvent::Output(OutputChunk { stream, data }))
        .unwrap_or_default()
        .into()
}

/// A message over the job's shared result text, without a copy: the text lives as long
/// as some message still refers to it (which is what keeps the job's cache alive).
fn shared_text(text: Arc<String>) -> Utf8Bytes {
    struct Shared(Arc<String>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    Utf8Bytes::try_from(Bytes::from_owner(Shared(text))).unwrap_or_default()
}
