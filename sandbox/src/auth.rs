//! Authentication in front of the API: `/healthz` and `/metrics` are open; the public
//! job API (`/v1/jobs...`, `/v1/run`, `/v1/languages`) takes this node's credential
//! (the control plane's relay) or a `submitter` token of the deployment, as the relay
//! itself does; everything else (`/v1/stats`) only the node credential. Every POST must
//! say `Content-Type: application/json`. Refusals are the JSON error body and happen
//! before any body is read or job admitted.
//!
//! A layer over the whole router, so that no route can be added without it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use edgebox_node::credentials::{self, Audience, Gate, Refusal};

/// `router` with every request checked by `gate`.
pub fn layer(router: axum::Router, gate: Arc<Gate>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(gate, authenticate))
}

fn audience(method: &Method, path: &str) -> Option<Audience> {
    match (method, path) {
        (&Method::GET, "/healthz" | "/metrics") => None,
        (&Method::POST, "/v1/jobs" | "/v1/run") | (&Method::GET, "/v1/languages") => {
            Some(Audience::Submitters)
        }
        (_, path) if path.starts_with("/v1/jobs/") => Some(Audience::Submitters),
        _ => Some(Audience::Node),
    }
}

async fn authenticate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let Some(audience) = audience(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let headers = request.headers();
    // Browsers cannot set headers on a WebSocket handshake: for those only, the token
    // may come as `?access_token=`, as on the control plane.
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let query_token = websocket
        .then(|| {
            request.uri().query().and_then(|query| {
                query.split('&').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key == "access_token").then(|| value.to_owned())
                })
            })
        })
        .flatten();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let caller = match gate.check(authorization, query_token.as_deref(), audience) {
        Ok(caller) => caller,
        Err(refusal) => return refuse(&request, refusal),
    };
    if request.method() == Method::POST {
        let content_type = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
        if !credentials::content_type_is(content_type, "application/json") {
            return refuse(
                &request,
                credentials::wrong_content_type("application/json"),
            );
        }
    }
    // Handlers that trust only the control plane (a job id it chose) read who called.
    let mut request = request;
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn refuse(request: &Request, refusal: Refusal) -> Response {
    tracing::info!(
        method = %request.method(),
        path = %request.uri().path(),
        status = refusal.status,
        "api request refused"
    );
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = edgebox_wire::ErrorBody {
        error: edgebox_wire::ErrorDetail {
            code: refusal.code.to_owned(),
            message: refusal.message,
            diagnostics: None,
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"edgebox\""),
        );
    }
    response
}
