//! The proxy's side of rate limiting and the access log: which bucket a request takes
//! from (`crate::ratelimit`), the 429 it gets when that is empty, and the record it
//! leaves in the log (`crate::access_log`).

use pingora::Result;
use pingora::proxy::Session;

use super::{EdgeProxy, RequestCtx};
use crate::access_log::Record;
use crate::ratelimit::{Key, retry_after_secs};

impl EdgeProxy {
    /// Answers 429 (with `Retry-After` and the JSON error body) and returns `true` when
    /// the first rate-limit rule matching the path has no token left for this client.
    /// Runs before the cache fast path, so fresh hits are limited too.
    pub(super) async fn enforce_rate_limit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // Decided under borrows of the snapshot and the request, answered after.
        let wait = {
            let req = session.req_header();
            let Some(rule) = ctx.snapshot.rate_limit.find(req.uri.path()) else {
                return Ok(false);
            };
            let header = match rule.key() {
                edgebox_config::RateKey::Ip => None,
                edgebox_config::RateKey::Header(name) => req.headers.get(name.as_str()),
            };
            let key = match header {
                Some(value) => Key::Header(value.as_bytes()),
                None => Key::Ip(ctx.client),
            };
            match self.state.buckets.take(rule, key) {
                Ok(()) => return Ok(false),
                Err(wait) => wait,
            }
        };
        let retry_after = retry_after_secs(wait);
        tracing::debug!(parent: &ctx.span, client = ?ctx.client, retry_after, "rate limited");
        let message = format!("too many requests; this client may try again in {retry_after} s");
        self.respond_json_with(
            session,
            ctx,
            429,
            "rate_limited",
            &message,
            &[("retry-after", retry_after.to_string())],
        )
        .await?;
        Ok(true)
    }

    /// Offers the request's line to the access log, when one is configured.
    pub(super) fn log_access(&self, session: &Session, ctx: &RequestCtx) {
        if ctx.snapshot.deployment.edge.access_log.is_none() {
            return;
        }
        let req = session.req_header();
        let header = |name: http::HeaderName| req.headers.get(name).cloned();
        self.state.access_log.record(Record {
            time: std::time::SystemTime::now(),
            request_id: ctx.request_id.clone(),
            client: ctx.client,
            method: req.method.clone(),
            host: ctx.host.clone(),
            target: req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            version: req.version,
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes: ctx.response_bytes,
            cache: ctx.served,
            upstream: ctx.tried.last().copied(),
            total: ctx.started.elapsed(),
            simulated: ctx.simulated,
            upstream_time: ctx.origin_time,
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
        });
    }
}
