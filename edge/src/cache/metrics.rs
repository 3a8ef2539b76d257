//! Cache counters: hits, misses and bytes served per tier, evictions, corrupt entries, write
//! failures; a serialisable snapshot for the admin `/stats` JSON and Prometheus text lines.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

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

/// Per-tier figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TierStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes_served: u64,
    pub objects: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub evictions: u64,
}

/// The `cache` section of the edge's `/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub l1: TierStats,
    pub l2: TierStats,
    /// Whether the disk tier is in use (false when off in config or its directory is unusable).
    pub l2_enabled: bool,
    pub misses: u64,
    pub promotions: u64,
    pub corrupt_entries: u64,
    pub l2_write_errors: u64,
    pub stored: u64,
    pub purged: u64,
    pub lock_waits: u64,
    /// L1 hits answered by the fast path (included in `l1.hits`).
    pub fast_hits: u64,
}

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
            lock_waits: get(|c| &c.lock_waits),
            fast_hits: get(|c| &c.fast_hits),
        }
    }
}

impl CacheStats {
    /// Prometheus text-format lines (with `# TYPE` headers) labelled with `node`.
    pub fn prometheus(&self, node: &str) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, values: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (tier, value) in values {
                if tier.is_empty() {
                    let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{node=\"{node}\",tier=\"{tier}\"}} {value}");
                }
            }
        };
        let (l1, l2) = (&self.l1, &self.l2);
        family(
            "edgebox_cache_hits_total",
            "counter",
            "Cache hits per tier.",
            &[("l1", l1.hits), ("l2", l2.hits)],
        );
        family(
            "edgebox_cache_tier_misses_total",
            "counter",
            "Lookups a tier could not answer.",
            &[("l1", l1.misses), ("l2", l2.misses)],
        );
        family(
            "edgebox_cache_misses_total",
            "counter",
            "Lookups no tier could answer.",
            &[("", self.misses)],
        );
        family(
            "edgebox_cache_served_bytes_total",
            "counter",
            "Body bytes served from each tier.",
            &[("l1", l1.bytes_served), ("l2", l2.bytes_served)],
        );
        family(
            "edgebox_cache_objects",
            "gauge",
            "Objects held per tier.",
            &[("l1", l1.objects), ("l2", l2.objects)],
        );
        family(
            "edgebox_cache_bytes",
            "gauge",
            "Bytes held per tier.",
            &[("l1", l1.bytes), ("l2", l2.bytes)],
        );
        family(
            "edgebox_cache_capacity_bytes",
            "gauge",
            "Byte capacity per tier.",
            &[("l1", l1.capacity), ("l2", l2.capacity)],
        );
        family(
            "edgebox_cache_evictions_total",
            "counter",
            "Objects evicted for space per tier.",
            &[("l1", l1.evictions), ("l2", l2.evictions)],
        );
        family(
            "edgebox_cache_promotions_total",
            "counter",
            "L2 hits copied into L1.",
            &[("", self.promotions)],
        );
        family(
            "edgebox_cache_corrupt_entries_total",
            "counter",
            "Damaged disk entries detected and deleted.",
            &[("", self.corrupt_entries)],
        );
        family(
            "edgebox_cache_l2_write_errors_total",
            "counter",
            "Disk writes that failed.",
            &[("", self.l2_write_errors)],
        );
        family(
            "edgebox_cache_stored_total",
            "counter",
            "Objects stored on a miss.",
            &[("", self.stored)],
        );
        family(
            "edgebox_cache_purged_total",
            "counter",
            "Objects removed by purge.",
            &[("", self.purged)],
        );
        family(
            "edgebox_cache_lock_waits_total",
            "counter",
            "Requests that waited for another request's fetch.",
            &[("", self.lock_waits)],
        );
        family(
            "edgebox_cache_fast_hits_total",
            "counter",
            "L1 hits answered by the fast path (included in the l1 hits).",
            &[("", self.fast_hits)],
        );
        out
    }
}
