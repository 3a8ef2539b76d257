//! Cache counters: hits, misses and bytes served per tier, evictions, corrupt entries, write
//! failures; a serialisable snapshot for the admin `/stats` JSON and Prometheus text lines.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use edgebox_node::metrics::{Kind, MetricsText};

/// The counters, one set per worker thread (see `crate::sharded`): `&metrics.l1_hits`
/// (through `Deref`) is the calling thread's own counter, so the request path bumps it
/// without sharing a cache line with other threads; [`Metrics::snapshot`] sums the sets.
#[derive(Default)]
pub struct Metrics {
    shards: crate::sharded::Sharded<Counters>,
}

impl std::ops::Deref for Metrics {
    type Target = Counters;

    /// This thread's counters: for bumping only (reads must sum every thread's).
    fn deref(&self) -> &Counters {
        self.shards.local()
    }
}

#[derive(Default)]
pub struct Counters {
    pub l1_hits: AtomicU64,
    pub l1_misses: AtomicU64,
    pub l2_hits: AtomicU64,
    pub l2_misses: AtomicU64,
    /// Lookups no tier could answer.
    pub misses: AtomicU64,
    pub l1_bytes_served: AtomicU64,
    pub l2_bytes_served: AtomicU64,
    pub l1_evictions: AtomicU64,
    pub l2_evictions: AtomicU64,
    /// L2 hits copied into L1.
    pub promotions: AtomicU64,
    /// L2 entries found damaged (bad checksum, truncated, bad header), deleted, not served.
    pub corrupt_entries: AtomicU64,
    /// L2 writes that failed (full disk, unwritable directory); those objects were not kept on disk.
    pub l2_write_errors: AtomicU64,
    /// Objects stored on a miss (in at least one tier).
    pub stored: AtomicU64,
    /// Objects removed by purge requests.
    pub purged: AtomicU64,
    /// Objects marked stale by soft purges.
    pub marked_stale: AtomicU64,
    /// Requests that waited on the cache lock for another request's fetch (reported by the proxy).
    pub lock_waits: AtomicU64,
    /// L1 hits answered by the proxy's fast path (also counted in `l1_hits`).
    pub fast_hits: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

pub use edgebox_wire::edge::{CacheStats, TierStats};

impl Metrics {
    pub(crate) fn snapshot(
        &self,
        l1: (u64, u64, u64),
        l2: (u64, u64, u64),
        l2_enabled: bool,
    ) -> CacheStats {
        let shards = &self.shards;
        let get = |field: fn(&Counters) -> &AtomicU64| shards.sum(field);
        CacheStats {
            l1_policy: None,
            l1: TierStats {
                hits: get(|c| &c.l1_hits),
                misses: get(|c| &c.l1_misses),
                bytes_served: get(|c| &c.l1_bytes_served),
                objects: l1.0,
                bytes: l1.1,
                capacity: l1.2,
                evictions: get(|c| &c.l1_evictions),
            },
            l2: TierStats {
                hits: get(|c| &c.l2_hits),
                misses: get(|c| &c.l2_misses),
                bytes_served: get(|c| &c.l2_bytes_served),
                objects: l2.0,
                bytes: l2.1,
                capacity: l2.2,
                evictions: get(|c| &c.l2_evictions),
            },
            l2_enabled,
            misses: get(|c| &c.misses),
            promotions: get(|c| &c.promotions),
            corrupt_entries: get(|c| &c.corrupt_entries),
            l2_write_errors: get(|c| &c.l2_write_errors),
            stored: get(|c| &c.stored),
            purged: get(|c| &c.purged),
            marked_stale: get(|c| &c.marked_stale),
            lock_waits: get(|c| &c.lock_waits),
            fast_hits: get(|c| &c.fast_hits),
            // Filled by the admin `/stats` from the proxy's counters.
            by_tier: Default::default(),
            by_status: Default::default(),
        }
    }
}

/// Prometheus samples of the cache counters, labelled with `node` (and `tier`).
pub fn prometheus(stats: &CacheStats, node: &str, out: &mut MetricsText) {
    let (l1, l2) = (&stats.l1, &stats.l2);
    let per_tier: [(&str, Kind, &str, u64, u64); 7] = [
        (
            "edgebox_cache_hits_total",
            Kind::Counter,
            "Cache hits per tier.",
            l1.hits,
            l2.hits,
        ),
        (
            "edgebox_cache_tier_misses_total",
            Kind::Counter,
            "Lookups a tier could not answer.",
            l1.misses,
            l2.misses,
        ),
        (
            "edgebox_cache_served_bytes_total",
            Kind::Counter,
            "Body bytes served from each tier.",
            l1.bytes_served,
            l2.bytes_served,
        ),
        (
            "edgebox_cache_objects",
            Kind::Gauge,
            "Objects held per tier.",
            l1.objects,
            l2.objects,
        ),
        (
            "edgebox_cache_bytes",
            Kind::Gauge,
            "Bytes held per tier.",
            l1.bytes,
            l2.bytes,
        ),
        (
            "edgebox_cache_capacity_bytes",
            Kind::Gauge,
            "Byte capacity per tier.",
            l1.capacity,
            l2.capacity,
        ),
        (
            "edgebox_cache_evictions_total",
            Kind::Counter,
            "Objects evicted for space per tier.",
            l1.evictions,
            l2.evictions,
        ),
    ];
    for (name, kind, help, l1_value, l2_value) in per_tier {
        out.sample(
            name,
            kind,
            help,
            &[("node", node), ("tier", "l1")],
            l1_value,
        )
        .sample(
            name,
            kind,
            help,
            &[("node", node), ("tier", "l2")],
            l2_value,
        );
    }
    let totals: [(&str, &str, u64); 9] = [
        (
            "edgebox_cache_misses_total",
            "Lookups no tier could answer.",
            stats.misses,
        ),
        (
            "edgebox_cache_promotions_total",
            "L2 hits copied into L1.",
            stats.promotions,
        ),
        (
            "edgebox_cache_corrupt_entries_total",
            "Damaged disk entries detected and deleted.",
            stats.corrupt_entries,
        ),
        (
            "edgebox_cache_l2_write_errors_total",
            "Disk writes that failed.",
            stats.l2_write_errors,
        ),
        (
            "edgebox_cache_stored_total",
            "Objects stored on a miss.",
            stats.stored,
        ),
        (
            "edgebox_cache_purged_total",
            "Objects removed by purge.",
            stats.purged,
        ),
        (
            "edgebox_cache_marked_stale_total",
            "Objects marked stale by soft purge.",
            stats.marked_stale,
        ),
        (
            "edgebox_cache_lock_waits_total",
            "Requests that waited for another request's fetch.",
            stats.lock_waits,
        ),
        (
            "edgebox_cache_fast_hits_total",
            "L1 hits answered by the fast path (included in the l1 hits).",
            stats.fast_hits,
        ),
    ];
    for (name, help, value) in totals {
        out.counter(name, help, &[("node", node)], value);
    }
}
