//! Open routes: health, metrics, the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use utoipa::openapi::OpenApi;

use crate::state::AppState;
use edgebox_wire::control_plane::Health;

/// Liveness of the control plane itself and whether its store answers (open): a
/// replica whose etcd is away says `degraded`, still answers reads from its last
/// view, and refuses writes with 503.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "The control plane is up", body = Health)))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    let store = state.store_health();
    Json(Health {
        status: if store.reachable { "ok" } else { "degraded" }.into(),
        node: state.node.clone(),
        uptime_ms: state.started.elapsed().as_millis() as u64,
        config_version: state.current().meta.version,
        store,
    })
}

/// Prometheus metrics of the control plane (open).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.started.elapsed()),
    )
}

/// This document (open).
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json(Extension(document): Extension<Arc<OpenApi>>) -> Json<OpenApi> {
    Json((*document).clone())
}
