//! Fresh L1 hits served straight from `request_filter`, before pingora-cache's state
//! machine runs (see `cache::hot`).

use pingora::Result;
use pingora::proxy::Session;

use super::headers::{via, via_chain};
use super::{EdgeProxy, RequestCtx, request_cache_key};
use crate::cache::Tier;

impl EdgeProxy {
    /// Answers a fresh L1 hit from the entry's prepared header and shared body, without
    /// pingora-cache's state machine (see `cache::hot`); `Ok(false)` leaves the request to
    /// the full path, which handles everything this does not: methods other than GET/HEAD,
    /// ranges, conditional requests, objects that vary or need compressing, stale ones.
    pub(super) async fn serve_fresh_l1(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let settings = &ctx.snapshot.deployment.cache;
        if !settings.enabled || !settings.fast_path {
            return Ok(false);
        }
        let req = session.req_header();
        let head = match req.method {
            http::Method::GET => false,
            http::Method::HEAD => true,
            _ => return Ok(false),
        };
        // What pingora-cache's hit path treats specially: ranges, and the conditional
        // headers its not-modified filter reads (and those it does not, to stay out of
        // their way if it learns them).
        use http::header::{
            IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
        };
        if [
            RANGE,
            IF_RANGE,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_MATCH,
            IF_UNMODIFIED_SINCE,
        ]
        .iter()
        .any(|name| req.headers.contains_key(name))
        {
            return Ok(false);
        }
        let key = request_cache_key(&ctx.host, req);
        let now = std::time::SystemTime::now();
        let Some(entry) = self.state.cache.fresh_l1(&key, now) else {
            ctx.cache_key = Some(key);
            return Ok(false);
        };
        // The fast-path header adds nothing the compression policy reads (status,
        // `Content-Encoding`, `Content-Length`, `Content-Type`), so the stored fields decide.
        if let Some(policy) = &ctx.snapshot.compression
            && !head
            && policy.eligible_fields(entry.header.status(), |name| entry.header.get(name))
        {
            ctx.cache_key = Some(key);
            return Ok(false);
        }
        let cache_status = super::cache_status::Entry {
            status: edgebox_wire::edge::CacheStatus::Hit,
            collapsed: false,
            stored: false,
            ttl: Some(super::cache_status::ttl(entry.fresh_until, now)),
        };
        let Some(header) = entry.fast_header(
            now,
            crate::cache::hot::PerRequest {
                cache_status: cache_status.header(&self.state.cache_status_name, None),
                via: via_chain(
                    entry.header.stored_via().as_ref(),
                    via(&self.state, session),
                ),
                request_id: ctx.request_id.clone(),
                server_timing: ctx.server_timing(),
            },
        ) else {
            // `fresh_l1` only returns entries with a fast-path layout.
            ctx.cache_key = Some(key);
            return Ok(false);
        };
        let header = header?;
        ctx.cache_tier = Some(Tier::L1);
        ctx.served = Some((
            edgebox_wire::edge::Tier::L1,
            edgebox_wire::edge::CacheStatus::Hit,
        ));
        session.write_response_header(header, head).await?;
        let bytes = if head { 0 } else { entry.body.len() };
        if !head {
            session
                .write_response_body(Some(entry.body.clone()), true)
                .await?;
        }
        ctx.response_bytes += bytes as u64;
        self.state.cache.note_fast_hit(bytes);
        Ok(true)
    }
}
