//! Why a request could not be served, and what may be tried again: the failure kinds
//! the proxy records per attempt, which of them allow another origin, and the JSON error
//! each becomes for the client.

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::headers::{header_str, via};
use super::{EdgeProxy, RequestCtx};

/// Why no upstream response could be had.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    NoOrigin,
    Timeout(String),
    Unreachable(String),
    /// An origin answered with a retryable 5xx and the retry found no other origin.
    Status(u16, String),
}

/// The error `upstream_response_filter` raises to send a request to another origin after
/// a retryable 5xx: pingora's retry loop then calls `upstream_peer` again, before any of
/// the failed response has been cached or sent downstream.
pub(super) const ORIGIN_5XX: ErrorType = ErrorType::Custom("OriginServerError");

/// Statuses worth another origin: the origin (or something in front of it) says it is
/// overloaded, down or cut off, which another member of the group may not be. A 500 is
/// not among them: it is the application's own answer to this request, which the other
/// members (running the same application) would most likely repeat, so a retry would only
/// multiply the load on a failing application; it still counts against the origin's health.
pub(super) fn retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// A request that can be sent again to another origin after a response came back: GET
/// or HEAD without a body (safe methods, and nothing to replay).
pub(super) fn replayable(req: &RequestHeader) -> bool {
    let bodiless = req.headers.get(http::header::TRANSFER_ENCODING).is_none()
        && header_str(req, "content-length").is_none_or(|v| v.trim() == "0");
    matches!(req.method, http::Method::GET | http::Method::HEAD) && bodiless
}

impl EdgeProxy {
    /// Writes a JSON error response with the edge's usual headers.
    pub(super) async fn respond_json(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        code: &str,
        message: &str,
    ) -> Result<()> {
        self.respond_json_with(session, ctx, status, code, message, &[])
            .await
    }

    /// [`Self::respond_json`] with `extra` headers (e.g. `Retry-After`).
    pub(super) async fn respond_json_with(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        code: &str,
        message: &str,
        extra: &[(&'static str, String)],
    ) -> Result<()> {
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        let mut response = ResponseHeader::build(status, Some(6 + extra.len()))?;
        for (name, value) in extra {
            response.insert_header(*name, value.as_str())?;
        }
        response.insert_header("content-type", "application/json")?;
        response.insert_header("content-length", body.len().to_string())?;
        response.insert_header("x-request-id", ctx.request_id.clone())?;
        response.insert_header("via", via(&self.state, session).clone())?;
        response.insert_header("server-timing", ctx.server_timing())?;
        response.insert_header("cache-control", "no-store")?;
        if status == 431 || status == 413 || status == 400 || status == 408 {
            response.insert_header("connection", "close")?;
            session.set_keepalive(None);
        }
        session
            .write_response_header(Box::new(response), false)
            .await?;
        ctx.response_bytes += body.len() as u64;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    }
}

/// `fail_to_connect`: the origin's health is charged, and another origin may be tried
/// for any method (nothing was sent).
pub(super) fn connect_failed(
    peer: &HttpPeer,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
) -> Box<Error> {
    let upstream = &ctx.snapshot.upstream;
    if let Some(active) = ctx.active.take() {
        active.stats().passive_failure(
            upstream.eject_for(),
            upstream.health.unhealthy_threshold,
            true,
        );
    }
    let reason = format!("connecting to {}: {}", peer.address(), e.etype().as_str());
    ctx.failure = Some(if matches!(e.etype(), ErrorType::ConnectTimedout) {
        Failure::Timeout(reason)
    } else {
        Failure::Unreachable(reason)
    });
    // Nothing was sent, so any method may go to another origin.
    if ctx.tried.len() <= upstream.retries as usize {
        e.set_retry(true);
    }
    e
}

/// `error_while_proxy`: an upstream error charges the origin (unless it only closed an
/// idle pooled connection) and is retried on another origin for idempotent requests
/// while tries remain and the request body can still be replayed.
pub(super) fn proxy_failed(
    peer: &HttpPeer,
    session: &mut Session,
    e: Box<Error>,
    ctx: &mut RequestCtx,
    client_reused: bool,
) -> Box<Error> {
    if e.etype() == &ORIGIN_5XX {
        // Health and `ctx.failure` were updated when the response came in, and the
        // retry was decided there.
        return e;
    }
    let mut e = e.more_context(format!("origin {}", peer.address()));
    let upstream = &ctx.snapshot.upstream;
    let timeout = matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    if e.esource() == &ErrorSource::Upstream {
        if let Some(active) = ctx.active.take() {
            // A pooled connection the origin closed while idle says nothing about
            // its health; a fresh connection failing does.
            if !client_reused || timeout {
                active.stats().passive_failure(
                    upstream.eject_for(),
                    upstream.health.unhealthy_threshold,
                    true,
                );
            }
        }
        let reason = format!("origin {}: {}", peer.address(), e.etype().as_str());
        ctx.failure = Some(if timeout {
            Failure::Timeout(reason)
        } else {
            Failure::Unreachable(reason)
        });
    }
    let idempotent = session.req_header().method.is_idempotent();
    let retry = e.esource() == &ErrorSource::Upstream
        && idempotent
        && !session.as_ref().retry_buffer_truncated()
        && ctx.tried.len() <= upstream.retries as usize;
    e.set_retry(retry);
    e
}

/// The client's answer for a request that failed: status, error code and message; status
/// 0 when the client itself went away and there is no one to answer.
pub(super) fn client_error(e: &Error, ctx: &RequestCtx) -> (u16, &'static str, String) {
    let upstream_label = ctx.snapshot.upstream.label.clone();
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(413), _) => (
            413,
            "body_too_large",
            "request body exceeds the limit".into(),
        ),
        (_, ErrorSource::Downstream) => match e.etype() {
            ErrorType::ReadTimedout => (
                408,
                "client_timeout",
                "the client was too slow sending its request".into(),
            ),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                (0, "", String::new())
            }
            _ => (
                400,
                "bad_request",
                format!("malformed request: {}", e.etype().as_str()),
            ),
        },
        _ => match ctx.failure.clone() {
            Some(Failure::NoOrigin) if ctx.tried.is_empty() => (
                502,
                "no_healthy_origin",
                format!("no healthy origin in {upstream_label}"),
            ),
            Some(Failure::NoOrigin) => (
                502,
                "origins_failed",
                format!(
                    "every usable origin in {upstream_label} failed ({} tried)",
                    ctx.tried.len()
                ),
            ),
            Some(Failure::Timeout(reason)) => (
                504,
                "origin_timeout",
                format!("{reason} ({} tried in {upstream_label})", ctx.tried.len()),
            ),
            Some(Failure::Unreachable(reason)) => (
                502,
                "origin_unreachable",
                format!("{reason} ({} tried in {upstream_label})", ctx.tried.len()),
            ),
            Some(Failure::Status(status, reason)) => (
                status,
                "origin_error",
                format!(
                    "{reason}; no other usable origin in {upstream_label} ({} tried)",
                    ctx.tried.len()
                ),
            ),
            None => match e.etype() {
                ErrorType::HTTPStatus(code) => (*code, "error", e.to_string()),
                _ => (
                    500,
                    "internal_error",
                    format!("edge error: {}", e.etype().as_str()),
                ),
            },
        },
    }
}
