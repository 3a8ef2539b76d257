//! Small in-test HTTP servers standing in for edge admin endpoints and the sandbox
//! API, used because the real edge and sandbox daemons live on other branches until
//! they are merged. They speak the contracts in CONTRACTS.md and count what they get.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

/// An edge admin endpoint: healthz, stats, purge, drain.
pub struct EdgeAdmin {
    pub addr: SocketAddr,
    pub state: Arc<EdgeState>,
}

#[derive(Default)]
pub struct EdgeState {
    pub name: String,
    pub purges: std::sync::Mutex<Vec<Value>>,
    pub drained: AtomicU64,
    /// Answer purges with 500 (a broken edge).
    pub fail_purge: std::sync::atomic::AtomicBool,
}

pub async fn edge_admin(name: &str) -> EdgeAdmin {
    let state = Arc::new(EdgeState {
        name: name.to_owned(),
        ..Default::default()
    });
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(s): State<Arc<EdgeState>>| async move {
                let draining = s.drained.load(Ordering::SeqCst) > 0;
                let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                (status, axum::Json(json!({"status": if draining {"draining"} else {"ok"}, "node": s.name, "uptime_ms": 4242})))
            }),
        )
        .route(
            "/stats",
            get(|State(s): State<Arc<EdgeState>>| async move {
                axum::Json(json!({
                    "node": s.name, "region": "local", "uptime_ms": 4242, "config_version": 1,
                    "requests": {"total": 10, "1xx": 0, "2xx": 8, "3xx": 0, "4xx": 1, "5xx": 1},
                    "bytes_sent": 1000,
                    "origins": [],
                    "cache": {"l1": {"hits": 6, "misses": 2}, "l2": {"hits": 1, "misses": 1}},
                }))
            }),
        )
        .route(
            "/purge",
            post(|State(s): State<Arc<EdgeState>>, axum::Json(body): axum::Json<Value>| async move {
                if s.fail_purge.load(Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": {"code": "broken", "message": "disk on fire"}})));
                }
                s.purges.lock().unwrap().push(body);
                (StatusCode::OK, axum::Json(json!({"purged": 3})))
            }),
        )
        .route(
            "/drain",
            post(|State(s): State<Arc<EdgeState>>| async move {
                s.drained.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"draining": true}))
            }),
        )
        .with_state(state.clone());
    EdgeAdmin {
        addr: serve(app).await,
        state,
    }
}

/// The sandbox API: jobs, run, stats, and an events WebSocket.
pub struct Sandbox {
    pub addr: SocketAddr,
    pub state: Arc<SandboxState>,
}

#[derive(Default)]
pub struct SandboxState {
    pub submitted: AtomicU64,
    /// Event streams currently open.
    pub streams: AtomicI64,
}

/// Events sent for job `job-1` before the sandbox closes the stream.
pub const EVENTS: u64 = 200;

pub async fn sandbox() -> Sandbox {
    let state = Arc::new(SandboxState::default());
    let app = Router::new()
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok", "node": "sandbox", "uptime_ms": 7})) }))
        .route(
            "/v1/stats",
            get(|| async { axum::Json(json!({"jobs": {"queued": 1, "running": 2, "succeeded": 5}, "running": 2})) }),
        )
        .route(
            "/v1/jobs",
            post(|State(s): State<Arc<SandboxState>>, axum::Json(job): axum::Json<Value>| async move {
                s.submitted.fetch_add(1, Ordering::SeqCst);
                if job.get("language").and_then(Value::as_str) == Some("cobol") {
                    return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"error": {"code": "unknown_language", "message": "no cobol"}})));
                }
                // Sources mentioning "slow" get a paced job, as a loop would produce.
                let id = if job["source"].as_str().is_some_and(|s| s.contains("slow")) { "slow" } else { "job-1" };
                (StatusCode::ACCEPTED, axum::Json(json!({
                    "id": id,
                    "status_url": format!("http://sandbox.invalid:1/v1/jobs/{id}"),
                    "events_url": format!("ws://sandbox.invalid:1/v1/jobs/{id}/events"),
                })))
            }),
        )
        .route("/v1/run", post(|| async { axum::Json(json!({"state": "succeeded", "stdout": "hi\n", "exit_code": 0})) }))
        .route(
            "/v1/jobs/{id}",
            get(|Path(id): Path<String>| async move {
                if id == "job-1" {
                    (StatusCode::OK, axum::Json(json!({"id": id, "state": "running", "current_line": 3})))
                } else {
                    (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": "not_found", "message": "no such job"}})))
                }
            })
            .delete(|Path(id): Path<String>| async move { axum::Json(json!({"id": id, "state": "cancelled"})) }),
        )
        .route(
            "/v1/jobs/{id}/events",
            get(|State(s): State<Arc<SandboxState>>, Path(id): Path<String>, ws: WebSocketUpgrade| async move {
                if id == "slow" {
                    return ws.on_upgrade(slow_events).into_response();
                }
                if id != "job-1" && id != "endless" {
                    return (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": "not_found", "message": "no such job"}}))).into_response();
                }
                ws.on_upgrade(move |socket| events(s, id, socket))
            }),
        )
        .with_state(state.clone());
    Sandbox {
        addr: serve(app).await,
        state,
    }
}

async fn events(state: Arc<SandboxState>, id: String, mut socket: WebSocket) {
    state.streams.fetch_add(1, Ordering::SeqCst);
    let mut seq = 0u64;
    let mut stdout = String::new();
    loop {
        let data = format!("chunk {seq}\n");
        stdout.push_str(&data);
        let event = json!({"type": "output", "stream": "stdout", "seq": seq, "data": data});
        if socket
            .send(Message::Text(event.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        if seq.is_multiple_of(10) {
            let status = json!({"type": "status", "state": "running", "runtime_ms": seq, "current_line": seq % 3 + 1});
            if socket
                .send(Message::Text(status.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        seq += 1;
        if id == "job-1" && seq == EVENTS {
            let done = json!({"type": "result", "state": "succeeded", "exit_code": 0, "runtime_ms": 1234, "stdout": stdout, "stderr": ""});
            let _ = socket.send(Message::Text(done.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            break;
        }
        if id == "endless" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    state.streams.fetch_sub(1, Ordering::SeqCst);
}

/// A job that runs for about two seconds: status every 50 ms moving through lines
/// 4 to 7 of its source, a line of output every 250 ms, then the result.
async fn slow_events(mut socket: WebSocket) {
    let start = std::time::Instant::now();
    let mut stdout = String::new();
    for tick in 0..40u64 {
        let runtime_ms = start.elapsed().as_millis() as u64;
        let status = json!({"type": "status", "state": "running", "start_time": "2026-01-01T00:00:00Z",
            "runtime_ms": runtime_ms, "current_line": 4 + (tick / 10)});
        if socket
            .send(Message::Text(status.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        if tick.is_multiple_of(5) {
            let data = format!("tick {}\n", tick / 5);
            stdout.push_str(&data);
            let chunk = json!({"type": "output", "stream": "stdout", "data": data});
            if socket
                .send(Message::Text(chunk.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = json!({"type": "result", "state": "succeeded", "exit_code": 0,
        "runtime_ms": start.elapsed().as_millis() as u64, "current_line": null, "stdout": stdout, "stderr": ""});
    let _ = socket.send(Message::Text(done.to_string().into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A listener that accepts connections and never answers: a hung node.
pub async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An address nothing listens on: a node that is down.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
