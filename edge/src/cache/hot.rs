//! The response header of an L1 object prepared for the fresh-hit fast path: decoded once,
//! when the object enters L1, instead of on every hit.
//!
//! A fresh L1 hit answered through pingora-cache's state machine decodes the stored meta
//! (zstd + a header parse into freshly allocated names and values) and then edits the
//! header on every request. [`HotHeader::prepare`] does all of that once, in the same
//! order the full hit path does it, so that what a fast hit sends is header for header what
//! the full path sends (the proxy's tests compare the two):
//!
//! 1. pingora's `cache_hit_header`: the stored header, `Age`, HTTP/1.1, `Transfer-Encoding:
//!    chunked` when there is no `Content-Length`;
//! 2. its range filter with no `Range` asked: `Accept-Ranges: bytes` on a 200 with a length;
//! 3. the edge's `response_filter`: `X-Cache: HIT`, `X-Cache-Tier: l1`, `Cache-Status`,
//!    `Via` with this edge appended, `X-Request-Id`, `Server-Timing`;
//! 4. pingora's writer: `Date` and `Connection`.
//!
//! The per-request values (`Age`, `Cache-Status` (its ttl), `X-Request-Id`,
//! `Server-Timing`, `Date`, `Connection`)
//! are present as placeholders, so that setting them replaces a value in place and never
//! grows the header map of the per-request copy.

use std::time::{Duration, SystemTime};

use edgebox_wire::edge::{CacheStatus, Tier as ServedTier};
use http::HeaderValue;
use http::header::{
    ACCEPT_RANGES, AGE, CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING, VARY, VIA,
};
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;

/// What the fast path needs of an L1 object besides its body.
pub struct HotHeader {
    /// Fresh while `now <= fresh_until` (pingora's `is_fresh`).
    pub fresh_until: SystemTime,
    /// What `Age` counts from (pingora's `epoch`: the last revalidation, or an override).
    pub epoch: SystemTime,
    /// The header as the full hit path sends it (see the module doc), `Via` a placeholder.
    pub header: ResponseHeader,
    /// The stored `Via` (a parent's), to which this edge appends itself.
    pub stored_via: Option<HeaderValue>,
}

/// The values of a fast hit's header that differ per request.
pub struct PerRequest {
    pub cache_status: HeaderValue,
    pub via: HeaderValue,
    pub request_id: HeaderValue,
    pub server_timing: HeaderValue,
}

/// Names the edge's `response_filter` sets on every response.
pub const X_CACHE: &str = "x-cache";
pub const X_CACHE_TIER: &str = "x-cache-tier";
pub const CACHE_STATUS: &str = "cache-status";
pub const X_REQUEST_ID: &str = "x-request-id";
pub const SERVER_TIMING: &str = "server-timing";

impl HotHeader {
    /// The prepared header for an object with `meta`, or `None` when its hits must take the
    /// full path whatever the request: it varies (`Vary`, or a secondary variant).
    pub fn prepare(meta: &CacheMeta) -> Option<Self> {
        if meta.variance().is_some() || meta.headers().contains_key(VARY) {
            return None;
        }
        let mut header = meta.response_header_copy();
        let placeholder = HeaderValue::from_static("0");
        // 1. cache_hit_header
        header.insert_header(AGE, placeholder.clone()).ok()?;
        header.set_version(http::Version::HTTP_11);
        let status = header.status.as_u16();
        let no_body = matches!(status, 204 | 304);
        if !no_body
            && !header.status.is_informational()
            && !header.headers.contains_key(CONTENT_LENGTH)
        {
            header.insert_header(TRANSFER_ENCODING, "chunked").ok()?;
        }
        // 2. range filter, no Range asked: a 200 with a readable length accepts ranges.
        let length_ok = header
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .is_some_and(|v| v.parse::<usize>().is_ok());
        if status == 200 && length_ok {
            header.insert_header(ACCEPT_RANGES, "bytes").ok()?;
        }
        // 3. response_filter
        header
            .insert_header(X_CACHE, CacheStatus::Hit.as_str())
            .ok()?;
        header
            .insert_header(X_CACHE_TIER, ServedTier::L1.as_str())
            .ok()?;
        header
            .insert_header(CACHE_STATUS, placeholder.clone())
            .ok()?;
        header.insert_header(AGE, placeholder.clone()).ok()?;
        // The full path appends to a stored `Via` only when it reads as text.
        let stored_via = meta
            .headers()
            .get(VIA)
            .filter(|v| v.to_str().is_ok())
            .cloned();
        header.insert_header(VIA, placeholder.clone()).ok()?;
        header
            .insert_header(X_REQUEST_ID, placeholder.clone())
            .ok()?;
        header
            .insert_header(SERVER_TIMING, placeholder.clone())
            .ok()?;
        // 4. pingora's writer replaces these.
        header.insert_header(DATE, placeholder.clone()).ok()?;
        header
            .insert_header(CONNECTION, HeaderValue::from_static("keep-alive"))
            .ok()?;
        Some(Self {
            fresh_until: meta.fresh_until(),
            epoch: meta.epoch(),
            header,
            stored_via,
        })
    }

    /// Fresh at `now`, as pingora decides it.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }

    /// Whole seconds since the object was stored or last revalidated, as pingora's `age()`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.epoch).unwrap_or_default()
    }

    /// The response header for one fast hit at `now`: the prepared header with this
    /// request's `Age` and the values the caller computed for it (`Cache-Status`, `Via`,
    /// `X-Request-Id`, `Server-Timing`), each replacing its placeholder in place. This
    /// and [`TieredStorage::fresh_l1`](super::TieredStorage::fresh_l1) are all a fast hit
    /// costs the edge before pingora writes it (`benches/cache_storage.rs` times the two).
    pub fn response(
        &self,
        now: SystemTime,
        per_request: PerRequest,
    ) -> pingora::Result<Box<ResponseHeader>> {
        let mut header = Box::new(self.header.clone());
        header.insert_header(AGE, self.age(now).as_secs())?;
        header.insert_header(CACHE_STATUS, per_request.cache_status)?;
        header.insert_header(VIA, per_request.via)?;
        header.insert_header(X_REQUEST_ID, per_request.request_id)?;
        header.insert_header(SERVER_TIMING, per_request.server_timing)?;
        Ok(header)
    }

    /// Heap bytes this prepared header holds, roughly (for L1's weigher): a header map
    /// entry plus a case-map entry per field, and the names and values.
    pub fn weight(&self) -> u64 {
        let fields: usize = self
            .header
            .headers
            .iter()
            .map(|(name, value)| 200 + name.as_str().len() + value.len())
            .sum();
        (fields + 64) as u64
    }
}
