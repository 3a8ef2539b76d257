//! What the tests cannot get from a real daemon: an edge admin endpoint that answers
//! 500 to purges (a broken edge; a real edge has no way to be made to fail a purge),
//! a node that accepts connections and never answers, and a closed port. Everything
//! else in these tests is the real daemons.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::json;

/// An edge admin endpoint whose purges fail with 500 and a JSON error.
pub async fn broken_edge_admin(name: &str) -> SocketAddr {
    let name = name.to_owned();
    let app = Router::new()
        .route(
            "/healthz",
            get(move || async move { axum::Json(json!({"status": "ok", "node": name})) }),
        )
        .route(
            "/purge",
            post(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"error": {"code": "broken", "message": "disk on fire"}})),
                )
            }),
        );
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
