//! The edge's cache storage: L1 memory (moka or a cache-model policy) → L2 disk, behind pingora-cache's `Storage`,
//! with a purge index (URL, prefix, surrogate tag, everything) and counters.
//!
//! pingora-cache does the HTTP caching (freshness, Vary, revalidation, stale serving, the
//! cache lock, ranges); this module only stores objects. Modules: [`memory`] (L1), [`disk`]
//! (L2 file format, budget, restart), [`tiered`] (the `Storage` impl and its hit/miss
//! handlers), [`index`] (purge selection), [`key`] (cache keys), [`metrics`].
//!
//! # Wiring it into the proxy (`ProxyHttp`)
//!
//! `crate::proxy` does exactly this (storage and lock in `EdgeState`); the end-to-end tests
//! are `tests/it/cache/*`.
//!
//! 1. **At start**, once per process (not on reload: capacities and the directory are fixed
//!    for the life of the process; the TTL rules and serve-stale defaults are read per request
//!    from the config snapshot, so they do reload):
//!    ```text
//!    let options = cache::CacheOptions::for_node(&deployment, &node_name, edge_node);
//!    let storage: &'static TieredStorage = TieredStorage::open_static(&options);
//!    let lock: &'static CacheKeyLockImpl =
//!        Box::leak(pingora::cache::lock::CacheLock::new_boxed(Duration::from_secs(10)));
//!    ```
//!    Keep `storage` in the shared edge state (the admin server needs it too). Pass no
//!    eviction manager: both tiers evict by themselves (moka for L1, LRU by byte budget for L2).
//! 2. **`request_cache_filter`**: when `cache.enabled` and the method is GET or HEAD
//!    (`pingora::cache::filters::request_cacheable`):
//!    `session.cache.enable(storage, None, None, Some(lock), None)` and
//!    `session.cache.set_max_file_size_bytes(max_object_size as usize)`.
//! 3. **`cache_key_callback`**: `Ok(cache::key::key_for(host, path, query))` with the
//!    request's normalised host after the virtual-host decision (`crate::authority`,
//!    `proxy/host.rs`) and the URI's path and query. The URL purge index relies on this
//!    framing (`key::url_of_primary`).
//! 4. **`response_cache_filter(session, resp, ctx)`**:
//!    `Ok(cache::policy::response_cacheable(resp, req_has_authorization,
//!    settings.default_ttl(path), settings.stale_while_revalidate, settings.stale_if_error,
//!    settings.strip_set_cookie))`
//!    — origin headers first (`s-maxage`, `max-age`, `Expires`, `no-store`, `no-cache`,
//!    `private`, swr/sie overriding the configured defaults), then the path's TTL rule; an
//!    unparsable `Cache-Control` or `Vary: *` is not stored. `Surrogate-Key` tags are read from
//!    the stored response headers automatically (strip the header from client responses in
//!    `response_filter` if wanted; the stored copy keeps it, which restarts rely on).
//! 5. **`cache_vary_filter(meta, ctx, req)`**: a `pingora::cache::VarianceBuilder` over the
//!    request values of the names in the stored response's `Vary` (Accept-Encoding included);
//!    every variant of a URL is purged together by this module.
//! 6. **`cache_hit_filter(session, meta, hit_handler, is_fresh, ctx)`**: remember the tier:
//!    `ctx.cache_tier = cache::tier_of(hit_handler)` (`Tier::as_str()` → `l1`/`l2`); on a miss
//!    the proxy sets `parent` or `origin` itself from the peer it used.
//! 7. **`response_filter`**: `X-Cache: cache::policy::x_cache(session.cache.phase())`
//!    (HIT, MISS, STALE, EXPIRED, REVALIDATED, BYPASS), `X-Cache-Tier` from step 6, and on hits
//!    `Age: session.cache.cache_meta().age().as_secs()`. If `session.cache.lock_duration()` is
//!    `Some`, call `storage.note_lock_wait()` (once per request, e.g. in `logging`). Skip
//!    compression for 206 responses (ranges served from cache by `seek`).
//! 8. **`should_serve_stale(session, ctx, error)`**: pingora's default serves stale only on
//!    upstream errors; to also serve within `stale-while-revalidate` return
//!    `error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)` (pingora checks the stored
//!    windows before asking), and refuse when [`policy::stale_allowed`] says the object forbids
//!    it (`no-cache`, `must-revalidate`). The edge also treats "every origin is marked down" as
//!    an upstream failure. The in-process harness here keeps pingora's default (so it shows
//!    `EXPIRED` where the edge shows `STALE` and refreshes in the background).
//! 9. **Purge** (admin `POST /purge`): map the JSON body to a [`PurgeRequest`] with
//!    [`PurgeRequest::from_fields`] (400 with its message otherwise) and answer
//!    `{"purged": storage.purge_by(&request, kind).await}` ([`PurgeKind::MarkStale`] for a
//!    soft purge). To keep a fill that was in flight during a purge from storing its old
//!    body, note `storage.purge_epoch()` when the request starts and put it in the cache
//!    key's extensions as [`purges::FillEpoch`] (`cache_key_callback`).
//! 10. **Stats**: `serde_json::to_value(storage.snapshot())` is the `cache` object of `/stats`,
//!     and `metrics::prometheus(&snapshot, node, &mut text)` its samples on `/metrics`.
//!
//! `tests::proxy` runs exactly this wiring in an in-process pingora proxy (a reference
//! implementation to copy from).
//!
//! Failure behaviour: an unusable cache directory at start disables L2 (logged once, memory
//! caching goes on); a failed disk write (full disk...) is logged once, counted, and the object
//! is served uncached on disk; a damaged entry is detected on read, deleted, counted, and
//! treated as a miss. Keys are stored by 128-bit hash, so a huge URL costs nothing extra.

pub mod disk;
pub mod hot;
pub mod index;
pub mod key;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod purges;
pub mod tiered;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

pub use metrics::CacheStats;
pub use tiered::{TieredHit, TieredStorage, tier_of};

/// A storage tier, as reported in `X-Cache-Tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    L1,
    L2,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        self.served().as_str()
    }

    /// The `X-Cache-Tier` of a hit from this storage tier.
    pub fn served(self) -> edgebox_wire::edge::Tier {
        match self {
            Tier::L1 => edgebox_wire::edge::Tier::L1,
            Tier::L2 => edgebox_wire::edge::Tier::L2,
        }
    }
}

/// What to build the tiers with.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// L1 byte capacity (0 = no memory tier).
    pub l1_capacity: u64,
    /// Largest object (meta + body) admitted to L1.
    pub l1_max_object: u64,
    /// L1's eviction policy (`[cache] l1_policy`).
    pub l1_policy: edgebox_config::L1Policy,
    /// Where L2 lives; `None` = no disk tier.
    pub l2_dir: Option<PathBuf>,
    /// L2 byte budget (0 = no disk tier).
    pub l2_capacity: u64,
    /// Largest object kept on disk.
    pub max_object_size: u64,
}

impl CacheOptions {
    /// Options for edge `node` of `deployment`: L2 under `<node data dir>/cache/`.
    ///
    /// L1's per-object cap is an eighth of L1 (at most the configured max object size), so one
    /// object can never flush more than a small part of the memory tier.
    pub fn for_node(
        deployment: &edgebox_config::Deployment,
        node: &str,
        edge: &edgebox_config::model::EdgeNode,
    ) -> Self {
        let settings = &deployment.cache;
        Self {
            l1_capacity: edge.l1_capacity,
            l1_max_object: edgebox_cache_model::admission::l1_max_object(
                edge.l1_capacity,
                settings.max_object_size,
            ),
            l1_policy: settings.l1_policy,
            l2_dir: Some(deployment.node_data_dir(node).join("cache")),
            l2_capacity: edge.l2_capacity,
            max_object_size: settings.max_object_size,
        }
    }
}

/// What an admin purge selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeRequest {
    /// Every variant of this URL (`/path?query`, or absolute: its path is used).
    Url(String),
    /// Every object whose URL starts with this.
    Prefix(String),
    /// Every object whose `Surrogate-Key` named this tag.
    Tag(String),
    All,
}

impl PurgeRequest {
    /// From the admin body's fields (`{"url"}` | `{"prefix"}` | `{"tag"}` | `{"all": true}`);
    /// exactly one must be given. The error is a message for a 400/422 JSON body.
    pub fn from_fields(
        url: Option<String>,
        prefix: Option<String>,
        tag: Option<String>,
        all: Option<bool>,
    ) -> Result<Self, &'static str> {
        match (url, prefix, tag, all.unwrap_or(false)) {
            (Some(url), None, None, false) if !url.is_empty() => Ok(Self::Url(url)),
            (None, Some(prefix), None, false) if !prefix.is_empty() => Ok(Self::Prefix(prefix)),
            (None, None, Some(tag), false) if !tag.is_empty() => Ok(Self::Tag(tag)),
            (None, None, None, true) => Ok(Self::All),
            _ => Err(
                "give exactly one of a non-empty \"url\", \"prefix\" or \"tag\", or \"all\": true",
            ),
        }
    }
}

/// What a purge does to the objects it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeKind {
    /// Remove them from every tier.
    Remove,
    /// Keep them, marked stale: the next request revalidates with the upstream, and the
    /// objects' own serve-stale windows (measured from the purge) still apply.
    MarkStale,
}

/// State the tiers share: counters, the purge index and the purge epochs.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) metrics: metrics::Metrics,
    pub(crate) index: index::PurgeIndex,
    pub(crate) purges: purges::PurgeLog,
}
