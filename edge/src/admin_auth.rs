//! Authentication in front of the admin listener: every route but `/healthz` and
//! `/metrics` needs this edge's node credential (`edgebox_node::credentials`), and
//! every POST the content type its route takes (`application/json`; `/reload` takes
//! `application/toml`). Refusals are the JSON error body, before any handler or body
//! read runs, so nothing changes.
//!
//! A wrapper rather than checks inside the handlers, so that no route can be added
//! without it.

use std::sync::Arc;

use async_trait::async_trait;
use edgebox_node::credentials::{self, Audience, Gate, Refusal};
use edgebox_wire::{ErrorBody, ErrorDetail};
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// Routes anyone who can reach the port may call: probes and scrapers.
const OPEN: [&str; 2] = ["/healthz", "/metrics"];

/// `inner` behind the edge's [`Gate`].
pub struct Authenticated<A> {
    pub inner: A,
    pub gate: Arc<Gate>,
}

impl<A> Authenticated<A> {
    fn refuse(&self, session: &ServerSession) -> Option<Refusal> {
        let request = session.req_header();
        let path = request.uri.path();
        if OPEN.contains(&path) {
            return None;
        }
        let authorization = request
            .headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        if let Err(refusal) = self.gate.check(authorization, None, Audience::Node) {
            return Some(refusal);
        }
        if request.method == http::Method::POST {
            let expected = if path == "/reload" {
                "application/toml"
            } else {
                "application/json"
            };
            let content_type = request
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(http::HeaderValue::as_bytes);
            if !credentials::content_type_is(content_type, expected) {
                return Some(credentials::wrong_content_type(expected));
            }
        }
        None
    }
}

#[async_trait]
impl<A: ServeHttp + Send + Sync> ServeHttp for Authenticated<A> {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match self.refuse(session) {
            None => self.inner.response(session).await,
            Some(refusal) => {
                tracing::info!(
                    method = %session.req_header().method,
                    path = %session.req_header().uri.path(),
                    status = refusal.status,
                    "admin request refused"
                );
                refusal_response(refusal)
            }
        }
    }
}

fn refusal_response(refusal: Refusal) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: refusal.code.to_owned(),
            message: refusal.message,
            diagnostics: None,
        },
    })
    .expect("an error body serialises");
    let mut response = Response::builder()
        .status(refusal.status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store");
    if refusal.status == 401 {
        response = response.header("www-authenticate", "Bearer realm=\"edgebox\"");
    }
    response
        .body(body)
        .expect("static response parts are valid")
}
