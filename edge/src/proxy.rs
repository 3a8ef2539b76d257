//! The request path as a pingora `ProxyHttp`: limits and request id, simulated
//! client↔edge latency, origin choice by policy with retries on another origin,
//! forwarding headers, simulated edge↔origin latency, passive health, compression, and
//! JSON errors saying why a request could not be served.
//!
//! The cache (`crate::cache`) sits between `request_filter` and `upstream_peer`: GET and
//! HEAD go through pingora-cache's state machine over the tiered storage when
//! `cache.enabled`; misses go to the parent edge or the origin group. Every response says
//! how it was served (`X-Cache`, `X-Cache-Tier`, `Age`). Compression is applied on the way
//! out, so the cache holds one identity copy per URL (and per origin `Vary`), ranges on hits
//! are cut from it, and 206 answers are never compressed.

mod cache_status;
mod failure;
mod fast_path;
mod headers;
mod host;
mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use edgebox_config::HashKey;
use pingora::ErrorType;
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
    VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::compression::Encode;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, Result};
use tracing::Instrument;

use edgebox_wire::edge::{CacheStatus, Tier as ServedTier};

use crate::cache::{self, Tier};
use crate::compress;
use crate::state::{EdgeState, Snapshot};
use crate::upstream::ActiveGuard;
use failure::{Failure, ORIGIN_5XX, replayable, retryable_status};
use headers::{
    HOP_HEADER, HopByHop, REQUEST_ID, UNKEYED, forwarded_for, header_str, hop_signed, name,
    parent_simulated, via, via_chain,
};

pub use cache_status::{Fixed as CacheStatusFixed, cache_name};

pub struct EdgeProxy {
    pub state: Arc<EdgeState>,
}

/// Counts a request as in flight for graceful shutdown, for exactly its lifetime.
pub struct InFlight(Arc<EdgeState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct RequestCtx {
    _in_flight: InFlight,
    snapshot: Arc<Snapshot>,
    /// The client's usable `X-Request-Id`, or one of ours (`crate::request_id`).
    request_id: http::HeaderValue,
    started: Instant,
    /// Total simulated delay applied so far.
    simulated: Duration,
    /// The client's region when it named a known one; `None` = the edge's own.
    client_region: Option<String>,
    /// The client's address (`crate::client`): rate-limit key and access-log field.
    client: Option<std::net::IpAddr>,
    /// The virtual host the request is served as (`proxy/host.rs`): the cache key's host
    /// and the `Host` sent upstream.
    host: String,
    /// The client's `Host` value when it is `host` byte for byte (the usual case): sent
    /// upstream as it is, a shared copy, instead of a new value made from `host`.
    host_value: Option<http::HeaderValue>,
    /// The cache key, computed once for the fast path and handed to pingora-cache.
    cache_key: Option<CacheKey>,
    tried: Vec<SocketAddr>,
    active: Option<ActiveGuard>,
    upstream_sent: Option<Instant>,
    origin_time: Duration,
    encoder: Option<Box<dyn Encode + Send + Sync>>,
    failure: Option<Failure>,
    request_body: u64,
    response_bytes: u64,
    /// The cache tier a hit came from (set in `cache_hit_filter`).
    cache_tier: Option<Tier>,
    /// Who answered the upstream fetch: `Origin`, or `Parent` when the parent edge served
    /// it from its own cache (read from the parent's `X-Cache`).
    upstream_tier: ServedTier,
    /// (`X-Cache-Tier`, `X-Cache`) as sent, for the per-tier counters.
    served: Option<(ServedTier, CacheStatus)>,
    /// The cache's purge epoch when the request started: a purge after it keeps this
    /// request's fill from being stored (`cache::purges`).
    purge_epoch: u64,
    /// The upstream's `Cache-Status` for this request (a parent edge's), which this edge's
    /// entry is appended to; never stored.
    upstream_cache_status: Option<http::HeaderValue>,
    /// The upstream response's `Age` in seconds: a stored copy is that much older already.
    upstream_age: u64,
    span: tracing::Span,
}

impl RequestCtx {
    fn server_timing(&self) -> http::HeaderValue {
        crate::timing::server_timing(self.simulated, self.origin_time, self.started.elapsed())
    }
}

/// The virtual host (decided in `request_filter`), path and query, each framed
/// (`cache::key`); the purge index relies on it. The fast path and pingora-cache's lookup
/// use this one key.
fn request_cache_key(host: &str, req: &RequestHeader) -> CacheKey {
    cache::key::key_for(host, req.uri.path(), req.uri.query())
}

impl EdgeProxy {
    async fn simulate(&self, ctx: &mut RequestCtx, from: &str, to: &str) {
        if let Some(sim) = &ctx.snapshot.latency {
            let delay = sim.sample(from, to);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                ctx.simulated += delay;
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        let snapshot = self.state.snapshot();
        RequestCtx {
            _in_flight: InFlight(self.state.clone()),
            client_region: None,
            client: None,
            host: String::new(),
            host_value: None,
            cache_key: None,
            snapshot,
            request_id: http::HeaderValue::from_static(""),
            started: Instant::now(),
            simulated: Duration::ZERO,
            tried: Vec::new(),
            active: None,
            upstream_sent: None,
            origin_time: Duration::ZERO,
            encoder: None,
            failure: None,
            request_body: 0,
            response_bytes: 0,
            cache_tier: None,
            upstream_tier: ServedTier::Origin,
            served: None,
            purge_epoch: self.state.cache.purge_epoch(),
            upstream_cache_status: None,
            upstream_age: 0,
            span: tracing::Span::none(),
        }
    }

    /// Our compression replaces pingora's module (see `compress`), so none is installed.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = self
            .state
            .ids
            .for_request(req.headers.get(&name::REQUEST_ID));
        ctx.span = tracing::info_span!(
            "request",
            node = %self.state.node,
            request_id = ctx.request_id.to_str().unwrap_or(""),
            method = %req.method,
            path = %req.uri.path(),
            origin = tracing::field::Empty,
        );
        let header_size: usize = req.raw_path().len()
            + req
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if header_size as u64 > ctx.snapshot.max_header_size {
            let message = format!(
                "request header is {header_size} bytes; the limit is {}",
                ctx.snapshot.max_header_size
            );
            self.respond_json(session, ctx, 431, "header_too_large", &message)
                .await?;
            return Ok(true);
        }
        if let Some(length) =
            header_str(req, http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
            && length > ctx.snapshot.max_body_size
        {
            let message = format!(
                "request body is {length} bytes; the limit is {}",
                ctx.snapshot.max_body_size
            );
            self.respond_json(session, ctx, 413, "body_too_large", &message)
                .await?;
            return Ok(true);
        }
        match host::resolve(req, &ctx.snapshot.deployment.edge.hosts) {
            Ok(host) => {
                ctx.host_value = req
                    .headers
                    .get(http::header::HOST)
                    .filter(|v| v.as_bytes() == host.as_bytes())
                    .cloned();
                ctx.host = host;
            }
            Err(refusal) => {
                let host::Refusal {
                    status,
                    code,
                    message,
                } = refusal;
                self.respond_json(session, ctx, status, code, &message)
                    .await?;
                return Ok(true);
            }
        }
        let from_edge = req.headers.get(&name::HOP).is_some_and(|value| {
            ctx.snapshot
                .hop_key
                .verify(value.as_bytes(), &hop_signed(req), SystemTime::now())
        });
        if let Some(sim) = &ctx.snapshot.latency
            && let Some(region) = header_str(req, &name::REGION)
            && (sim.knows(region) || region == ctx.snapshot.region)
        {
            ctx.client_region = Some(region.to_owned());
        }
        ctx.client = crate::client::address(
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            &req.headers,
            &ctx.snapshot.deployment.edge.trusted_proxies,
        );
        // A request signed by one of our edges was limited there, by its real client.
        if !from_edge && self.enforce_rate_limit(session, ctx).await? {
            return Ok(true);
        }
        // Bounds the body reads from here on. The request header itself was read before
        // any `ProxyHttp` hook runs: pingora 0.9.1 (apps/mod.rs) gives every new HTTP/1
        // session a 60 s keepalive timeout, which is what bounds each header read (the
        // session's read timeout only applies with keepalive off). Bounding slow headers
        // by `client_timeout` needs the service wrapped in an `HttpServerApp` whose
        // `process_new_http` sets the keepalive timeout before delegating, in `lib.rs`.
        let client_timeout = ctx.snapshot.client_timeout;
        session.set_read_timeout(Some(client_timeout));
        // One spelling per preference, forwarded and keyed for `Vary` alike.
        compress::normalise_request(session.req_header_mut())?;
        if !from_edge && ctx.snapshot.latency.is_some() {
            let to = ctx.snapshot.region.clone();
            let from = ctx.client_region.clone().unwrap_or_else(|| to.clone());
            let span = ctx.span.clone();
            self.simulate(ctx, &from, &to).instrument(span).await;
        }
        self.serve_fresh_l1(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.request_body += chunk.len() as u64;
            if ctx.request_body > ctx.snapshot.max_body_size {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    /// GET and HEAD go through the cache when `cache.enabled` (read per request, so it
    /// reloads); everything else bypasses it.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let settings = &ctx.snapshot.deployment.cache;
        if settings.enabled && pingora::cache::filters::request_cacheable(session.req_header()) {
            session.cache.enable(
                self.state.cache,
                None, // both tiers evict by themselves
                None,
                Some(self.state.cache_lock),
                None,
            );
            session.cache.set_max_file_size_bytes(
                usize::try_from(settings.max_object_size).unwrap_or(usize::MAX),
            );
        }
        Ok(())
    }

    /// Host (or the HTTP/2 authority) plus path and query; the purge index relies on it.
    /// The key carries the request's purge epoch to the storage (`cache::purges`).
    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let mut key = ctx
            .cache_key
            .take()
            .unwrap_or_else(|| request_cache_key(&ctx.host, session.req_header()));
        key.extensions
            .insert(cache::purges::FillEpoch(ctx.purge_epoch));
        Ok(key)
    }

    /// The origin's headers decide; when they say nothing about freshness the path's TTL
    /// rule applies. Serve-stale windows default to the configured ones.
    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let settings = &ctx.snapshot.deployment.cache;
        let req = session.req_header();
        let mut decided = cache::policy::response_cacheable(
            resp,
            req.headers.contains_key(http::header::AUTHORIZATION),
            settings.default_ttl(req.uri.path()),
            settings.stale_while_revalidate,
            settings.stale_if_error,
            settings.strip_set_cookie,
        );
        if let RespCacheable::Cacheable(meta) = &mut decided {
            // Purged since this request started: its answer predates the purge. (The
            // storage checks again, atomically, when it would store; this keeps the
            // response from saying `stored`.)
            let url = cache::key::url_of_primary(session.cache.cache_key().primary_key());
            let tags = cache::index::tags_from_headers(meta.response_header());
            if self.state.cache.purged_since(ctx.purge_epoch, &url, &tags) {
                return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
                    "purged while in flight",
                )));
            }
            cache::policy::age_from_upstream(meta, resp, ctx.upstream_age, SystemTime::now());
        }
        Ok(decided)
    }

    /// One variant per combination of the request values the stored `Vary` names
    /// (`Accept-Encoding` included); all variants of a URL purge together.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let mut variance = VarianceBuilder::new();
        let names = meta
            .headers()
            .get_all(http::header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty());
        for name in names {
            let value = req
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            variance.add_owned_name_value(name, value);
        }
        variance.finalize()
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.cache_tier = cache::tier_of(hit_handler);
        Ok(None)
    }

    /// Stale is served within `stale-while-revalidate` (no error: pingora refreshes in the
    /// background) and within `stale-if-error` when no upstream answer could be had —
    /// including when every origin is marked down and none was even tried — unless the
    /// stored response forbids it (`no-cache`, `must-revalidate`). pingora checks the stored
    /// windows before asking.
    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        let wanted = match error {
            None => true,
            Some(e) => e.esource() == &ErrorSource::Upstream || ctx.failure.is_some(),
        };
        wanted
            && session
                .cache
                .maybe_cache_meta()
                .is_none_or(|meta| cache::policy::stale_allowed(meta, error.is_some()))
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // A retry ends the previous attempt's accounting.
        ctx.active = None;
        let upstream = &ctx.snapshot.upstream;
        let req = session.req_header();
        let key: &[u8] = match upstream.hash_key() {
            Some(HashKey::Header(name)) => req
                .headers
                .get(name.as_str())
                .map_or(req.uri.path().as_bytes(), |v| v.as_bytes()),
            _ => req.uri.path().as_bytes(),
        };
        let Some(origin) = upstream.pick(key, &ctx.tried) else {
            if ctx.failure.is_none() {
                ctx.failure = Some(Failure::NoOrigin);
            }
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                format!("no usable origin in {}", upstream.label),
            );
        };
        ctx.tried.push(origin.addr);
        ctx.span
            .record("origin", tracing::field::display(origin.addr));
        let mut peer = HttpPeer::new(origin.addr, false, String::new());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.read_timeout);
        ctx.active = Some(origin.begin());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let hop = HopByHop::find(&upstream_request.headers);
        for name in hop.names() {
            upstream_request.remove_header(name);
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(ip) = client_ip {
            let forwarded = match upstream_request
                .headers
                .get(&name::X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
            {
                Some(previous) => http::HeaderValue::try_from(format!("{previous}, {ip}"))
                    .map_err(|e| {
                        Error::because(ErrorType::InvalidHTTPHeader, "x-forwarded-for", e)
                    })?,
                None => forwarded_for(ip),
            };
            upstream_request.insert_header("x-forwarded-for", forwarded)?;
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        // Static values: a `&str` value would be copied into a new allocation.
        let proto = if tls { "https" } else { "http" };
        upstream_request
            .insert_header("x-forwarded-proto", http::HeaderValue::from_static(proto))?;
        let via_value = via_chain(
            upstream_request.headers.get(http::header::VIA),
            via(&self.state, session),
        );
        upstream_request.insert_header("via", via_value)?;
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.clone())?;
        // The upstream sees the host the cache key holds, in origin-form (an absolute
        // target's authority was checked against it and is dropped).
        match &ctx.host_value {
            Some(host) => upstream_request.insert_header(http::header::HOST, host.clone())?,
            None => upstream_request.insert_header(http::header::HOST, ctx.host.as_str())?,
        }
        if upstream_request.uri.authority().is_some() {
            let target = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request target", e))?;
            upstream_request.set_uri(target);
        }
        for name in &UNKEYED {
            upstream_request.remove_header(name);
        }
        upstream_request.remove_header(&name::REGION);
        upstream_request.remove_header(&name::HOP);
        if ctx.snapshot.edge.parent.is_some() {
            let signature = ctx
                .snapshot
                .hop_key
                .sign(&hop_signed(upstream_request), SystemTime::now());
            upstream_request.insert_header(HOP_HEADER, signature)?;
        }
        // Only with the latency simulation on: the region names are copied for the await.
        if ctx.snapshot.latency.is_some()
            && let Some(region) = ctx.active.as_ref().map(|a| a.stats().region.clone())
        {
            let own = ctx.snapshot.region.clone();
            let span = ctx.span.clone();
            self.simulate(ctx, &own, &region).instrument(span).await;
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(sent) = ctx.upstream_sent {
            ctx.origin_time = sent.elapsed();
        }
        if let Some(active) = &ctx.active {
            let stats = active.stats();
            stats.observe_latency(ctx.origin_time);
            if upstream_response.status.is_server_error() {
                let upstream = &ctx.snapshot.upstream;
                stats.passive_failure(
                    upstream.eject_for(),
                    upstream.health.unhealthy_threshold,
                    false,
                );
            } else {
                stats.passive_success();
            }
        }
        // A retryable 5xx on a replayable request goes to another origin while tries
        // remain; the last try's answer is passed through as it is. This runs before
        // pingora hands the response to the cache or the client, so neither sees it.
        let status = upstream_response.status.as_u16();
        if retryable_status(status)
            && replayable(session.req_header())
            && !session.as_ref().retry_buffer_truncated()
            && ctx.tried.len() <= ctx.snapshot.upstream.retries as usize
        {
            let origin = ctx
                .tried
                .last()
                .map(ToString::to_string)
                .unwrap_or_default();
            let reason = format!("origin {origin} answered {status}");
            // Its accounting ends here; `error_while_proxy` must not count it twice.
            ctx.active = None;
            ctx.failure = Some(Failure::Status(status, reason.clone()));
            let mut e = Error::explain(ORIGIN_5XX, reason);
            e.set_retry(true);
            return Err(e.into_up());
        }
        let hop = HopByHop::find(&upstream_response.headers);
        for name in hop.names() {
            upstream_response.remove_header(name);
        }
        // A parent edge says how it served the object; a hit there means the origin was
        // spared. Its labels are then dropped so the stored copy never carries them.
        if ctx.snapshot.edge.parent.is_some() {
            let parent_cached = upstream_response
                .headers
                .get(&name::X_CACHE)
                .and_then(|v| v.to_str().ok())
                .and_then(CacheStatus::parse)
                .is_some_and(|status| {
                    matches!(
                        status,
                        CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated
                    )
                });
            ctx.upstream_tier = if parent_cached {
                ServedTier::Parent
            } else {
                ServedTier::Origin
            };
            // The parent's simulated time is part of this response's path: count it as
            // simulated here, not as real upstream time.
            let parent_sim = upstream_response
                .headers
                .get(&name::SERVER_TIMING)
                .and_then(|v| v.to_str().ok())
                .and_then(parent_simulated);
            if let Some(parent_sim) = parent_sim {
                let parent_sim = parent_sim.min(ctx.origin_time);
                ctx.simulated += parent_sim;
                ctx.origin_time -= parent_sim;
            }
        }
        upstream_response.remove_header(&name::SERVER_TIMING);
        upstream_response.remove_header(&name::X_CACHE);
        upstream_response.remove_header(&name::X_CACHE_TIER);
        // The upstream's `Cache-Status` describes this request only: chained onto this
        // edge's entry in `response_filter`, never stored (a later hit here did not pass
        // through the upstream).
        ctx.upstream_cache_status = upstream_response.remove_header(&name::CACHE_STATUS);
        ctx.upstream_age = upstream_response
            .headers
            .get(http::header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(policy) = &ctx.snapshot.compression
            && session.req_header().method != http::Method::HEAD
            && policy.eligible(response)
        {
            compress::add_vary(response);
            let accept = header_str(session.req_header(), "accept-encoding").unwrap_or("");
            if let Some(encoding) = policy.negotiate(accept)
                && let Some(encoder) = compress::encoder(encoding)
            {
                ctx.encoder = Some(encoder);
                response.remove_header(&http::header::CONTENT_LENGTH);
                response.remove_header(&http::header::ACCEPT_RANGES);
                response.insert_header(http::header::CONTENT_ENCODING, encoding.token())?;
                // The bytes differ, so a strong validator no longer holds.
                if let Some(etag) = response
                    .headers
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .filter(|e| !e.starts_with("W/"))
                    .map(|e| format!("W/{e}"))
                {
                    response.insert_header(http::header::ETAG, etag)?;
                }
                if !session.is_http2() {
                    response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                }
            }
        }
        let phase = session.cache.phase();
        let from_cache = matches!(
            phase,
            CachePhase::Hit
                | CachePhase::Stale
                | CachePhase::StaleUpdating
                | CachePhase::Revalidated
                | CachePhase::RevalidatedNoCache(_)
        );
        let tier = match (from_cache, ctx.cache_tier) {
            (true, Some(tier)) => tier.served(),
            _ => ctx.upstream_tier,
        };
        let status = cache::policy::x_cache(phase);
        // Static values: a `&str` value would be copied into a new allocation.
        response.insert_header("x-cache", http::HeaderValue::from_static(status.as_str()))?;
        response.insert_header(
            "x-cache-tier",
            http::HeaderValue::from_static(tier.as_str()),
        )?;
        let meta = session.cache.maybe_cache_meta();
        // `X-Cache: BYPASS` covers both a request the cache never handled and a response
        // it declined to store; `Cache-Status` tells them apart (`fwd=bypass` vs a miss
        // that was not stored).
        let declined = status == CacheStatus::Bypass
            && matches!(&phase, CachePhase::Disabled(reason) if *reason != NoCacheReason::NeverEnabled);
        let entry = cache_status::Entry {
            status: if declined { CacheStatus::Miss } else { status },
            collapsed: status == CacheStatus::Hit && session.cache.lock_duration().is_some(),
            stored: matches!(phase, CachePhase::Miss | CachePhase::Expired),
            ttl: meta
                .filter(|_| status != CacheStatus::Bypass)
                .map(|meta| cache_status::ttl(meta.fresh_until(), SystemTime::now())),
        };
        response.insert_header(
            cache_status::NAME,
            entry.value(
                &self.state.cache_status_fixed,
                &self.state.cache_status_name,
                ctx.upstream_cache_status.as_ref(),
            ),
        )?;
        ctx.served = Some((tier, status));
        if from_cache && let Some(meta) = session.cache.maybe_cache_meta() {
            response.insert_header(http::header::AGE, meta.age().as_secs().to_string())?;
        }
        let via_value = via_chain(
            response.headers.get(http::header::VIA),
            via(&self.state, session),
        );
        response.insert_header("via", via_value)?;
        response.insert_header(REQUEST_ID, ctx.request_id.clone())?;
        response.insert_header("server-timing", ctx.server_timing())?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(encoder) = ctx.encoder.as_mut() {
            let input = body.take().unwrap_or_default();
            let output = encoder.encode(&input, end_of_stream)?;
            *body = (!output.is_empty() || end_of_stream).then_some(output);
        }
        if let Some(chunk) = body {
            ctx.response_bytes += chunk.len() as u64;
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        failure::connect_failed(peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        failure::proxy_failed(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (status, code, message) = failure::client_error(e, ctx);
        let written = session.response_written().is_some();
        // pingora drops the connection after a failure (`can_reuse_downstream: false`);
        // saying so in the response keeps a client from sending its next request into
        // the closing socket (a reset, seen once retries made every origin eject at once).
        session.set_keepalive(None);
        if status > 0
            && !written
            && let Err(error) = self
                .respond_json(session, ctx, status, code, &message)
                .await
        {
            tracing::debug!(parent: &ctx.span, %error, "could not send the error response");
        }
        FailToProxy {
            error_code: if written { 0 } else { status },
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if session.cache.lock_duration().is_some() {
            self.state.cache.note_lock_wait();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.state.stats.record(status, ctx.response_bytes);
        let elapsed = ctx.started.elapsed();
        self.state.stats.record_latency(elapsed);
        if let Some((tier, cache_status)) = ctx.served {
            self.state
                .stats
                .record_served(tier, cache_status, ctx.response_bytes);
        }
        self.log_access(session, ctx);
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        match e {
            Some(error) => {
                tracing::warn!(parent: &ctx.span, status, elapsed_ms, tried = ctx.tried.len(), error = %error, "request failed")
            }
            None => {
                tracing::debug!(parent: &ctx.span, status, elapsed_ms, bytes = ctx.response_bytes, "request served")
            }
        }
        ctx.active = None;
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // Logged once, with the request's span, in `logging`.
        true
    }
}
