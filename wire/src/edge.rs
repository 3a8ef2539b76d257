//! What an edge's admin listener serves and accepts: `/stats`, and the answers of
//! `POST /reload`, `/purge` and `/drain`; plus the two vocabularies of its response
//! headers, [`Tier`] (`X-Cache-Tier`) and [`CacheStatus`] (`X-Cache`), which the edge's
//! hot path, its counters and every reader of them share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a response came from: the `X-Cache-Tier` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// This edge's memory cache.
    L1,
    /// This edge's disk cache.
    L2,
    /// The parent (shield) edge answered.
    Parent,
    /// An origin answered.
    Origin,
}

impl Tier {
    /// Every tier, in the order of [`Tier::index`].
    pub const ALL: [Tier; 4] = [Tier::L1, Tier::L2, Tier::Parent, Tier::Origin];

    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
            Tier::Parent => "parent",
            Tier::Origin => "origin",
        }
    }

    /// A dense index for per-tier counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a header value (as sent by a parent edge).
    pub fn parse(value: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|tier| tier.as_str() == value)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the cache answered: the `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum CacheStatus {
    /// Fresh from a cache tier.
    Hit,
    /// Not cached; fetched and (if cacheable) stored.
    Miss,
    /// Served stale (stale-while-revalidate or stale-if-error).
    Stale,
    /// Stale entry revalidated with the upstream (304) and served.
    Revalidated,
    /// Not cacheable (method, `no-store`, cache off).
    Bypass,
    /// Expired entry replaced by a fresh fetch.
    Expired,
}

impl CacheStatus {
    /// Every status, in the order of [`CacheStatus::index`].
    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
        CacheStatus::Expired,
    ];

    /// The header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Expired => "EXPIRED",
        }
    }

    /// A dense index for per-status counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Option<CacheStatus> {
        CacheStatus::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /stats` on an edge's admin listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeStats {
    pub node: String,
    pub region: String,
    pub uptime_ms: u64,
    /// The edge's own count of applied configurations (1 at start).
    pub config_version: u64,
    /// The load-balancing policy in use, as written in the deployment file.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub policy: edgebox_config::LbPolicy,
    /// What misses go to: `parent NAME` or `group NAME`.
    pub upstream: String,
    pub draining: bool,
    pub in_flight: i64,
    pub requests: RequestCounts,
    /// Response body bytes sent to clients.
    pub bytes_sent: u64,
    /// The origins of the upstream pool (empty when misses go to a parent).
    pub origins: Vec<UpstreamOrigin>,
    pub cache: CacheStats,
    /// How long requests took, start to end of response (real time, simulated delays
    /// included), since the edge started.
    #[serde(default)]
    pub latency: LatencyHistogram,
    /// `[edge.rate_limit]`: what was checked and refused.
    #[serde(default)]
    pub rate_limit: RateLimitStats,
    /// `[edge.access_log]`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<crate::health::AccessLogState>,
}

/// A bounded latency histogram: request counts per bucket of [`LATENCY_BOUNDS_MS`] (the
/// last bucket counts everything slower). Cumulative, so that two readings' difference
/// ([`LatencyHistogram::since`]) gives the percentiles of the interval between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatencyHistogram {
    /// Upper bounds of the buckets in milliseconds; the last bucket has none.
    pub bounds_ms: Vec<u64>,
    /// One count per bound, plus one for the overflow bucket.
    pub counts: Vec<u64>,
}

/// Bucket bounds of [`LatencyHistogram`], in milliseconds: roughly 1-2-5 steps.
pub const LATENCY_BOUNDS_MS: [u64; 16] = [
    1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 30_000,
];

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            counts: vec![0; LATENCY_BOUNDS_MS.len() + 1],
        }
    }
}

impl LatencyHistogram {
    /// The bucket a request of `ms` milliseconds counts in.
    pub fn bucket(ms: u64) -> usize {
        LATENCY_BOUNDS_MS.partition_point(|bound| *bound < ms)
    }

    /// Requests counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another histogram with the same bounds (a fleet total); one with other bounds
    /// (another version) is left out rather than mixed in wrongly.
    pub fn add(&mut self, other: &LatencyHistogram) {
        if other.bounds_ms != self.bounds_ms || other.counts.len() != self.counts.len() {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The requests counted since `earlier` (a previous reading of the same counters).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut delta = self.clone();
        if earlier.counts.len() == delta.counts.len() {
            for (now, then) in delta.counts.iter_mut().zip(&earlier.counts) {
                *now = now.saturating_sub(*then);
            }
        }
        delta
    }

    /// The upper bound (ms) of the bucket holding quantile `q` (0..=1), or `None` when
    /// nothing was counted; the overflow bucket reports the largest bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(
                    self.bounds_ms
                        .get(i)
                        .or(self.bounds_ms.last())
                        .copied()
                        .unwrap_or(0),
                );
            }
        }
        self.bounds_ms.last().copied()
    }
}

/// Requests answered, by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestCounts {
    pub total: u64,
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl RequestCounts {
    /// The count of status class `class` (1 for 1xx ... 5 for 5xx).
    pub fn class(&self, class: u16) -> u64 {
        match class {
            1 => self.informational,
            2 => self.success,
            3 => self.redirection,
            4 => self.client_error,
            5 => self.server_error,
            _ => 0,
        }
    }

    /// `(name, count)` for `total` and each class, as keyed in JSON.
    pub fn entries(&self) -> [(&'static str, u64); 6] {
        [
            ("total", self.total),
            ("1xx", self.informational),
            ("2xx", self.success),
            ("3xx", self.redirection),
            ("4xx", self.client_error),
            ("5xx", self.server_error),
        ]
    }
}

/// One origin as the edge's balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpstreamOrigin {
    pub address: String,
    pub region: String,
    pub healthy: bool,
    /// Smoothed response-header latency; absent before the first response.
    pub ewma_ms: Option<f64>,
    /// Requests on it now.
    pub active: u64,
    pub requests: u64,
    pub failures: u64,
}

/// The `cache` object of `/stats`: the storage tiers' counters plus the responses
/// (and bytes) by the tier that served them, `parent` and `origin` included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CacheStats {
    /// The eviction policy this edge's L1 runs (`[cache] l1_policy`: `moka`, `lru`,
    /// `s3fifo`, `sieve`, `tinyufo`); an edge's own, left empty in fleet totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l1_policy: Option<String>,
    pub l1: TierStats,
    pub l2: TierStats,
    /// Whether the disk tier is in use (false when off in config or its directory is unusable).
    pub l2_enabled: bool,
    /// Lookups no tier could answer.
    pub misses: u64,
    /// L2 hits copied into L1.
    pub promotions: u64,
    /// L2 entries found damaged, deleted, not served.
    pub corrupt_entries: u64,
    /// L2 writes that failed; those objects were not kept on disk.
    pub l2_write_errors: u64,
    /// Objects stored on a miss.
    pub stored: u64,
    /// Objects removed by purges.
    pub purged: u64,
    /// Objects marked stale by soft purges.
    #[serde(default)]
    pub marked_stale: u64,
    /// Requests that waited for another request's fetch of the same key.
    pub lock_waits: u64,
    /// L1 hits answered by the fast path (included in `l1.hits`).
    pub fast_hits: u64,
    /// Responses and body bytes by `X-Cache-Tier`.
    #[serde(default)]
    pub by_tier: BTreeMap<Tier, Served>,
    /// Responses by `X-Cache`.
    #[serde(default)]
    pub by_status: BTreeMap<CacheStatus, u64>,
}

impl CacheStats {
    /// Adds another edge's counters into these (for fleet totals). `l2_enabled` is
    /// true when any edge has its disk tier in use.
    pub fn add(&mut self, other: &CacheStats) {
        self.l1.add(&other.l1);
        self.l2.add(&other.l2);
        self.l2_enabled |= other.l2_enabled;
        for (mine, theirs) in [
            (&mut self.misses, other.misses),
            (&mut self.promotions, other.promotions),
            (&mut self.corrupt_entries, other.corrupt_entries),
            (&mut self.l2_write_errors, other.l2_write_errors),
            (&mut self.stored, other.stored),
            (&mut self.purged, other.purged),
            (&mut self.marked_stale, other.marked_stale),
            (&mut self.lock_waits, other.lock_waits),
            (&mut self.fast_hits, other.fast_hits),
        ] {
            *mine = mine.saturating_add(theirs);
        }
        for (tier, served) in &other.by_tier {
            let mine = self.by_tier.entry(*tier).or_default();
            mine.responses = mine.responses.saturating_add(served.responses);
            mine.bytes = mine.bytes.saturating_add(served.bytes);
        }
        for (status, count) in &other.by_status {
            let mine = self.by_status.entry(*status).or_default();
            *mine = mine.saturating_add(*count);
        }
    }
}

/// One storage tier's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes_served: u64,
    pub objects: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub evictions: u64,
}

impl TierStats {
    fn add(&mut self, other: &TierStats) {
        for (mine, theirs) in [
            (&mut self.hits, other.hits),
            (&mut self.misses, other.misses),
            (&mut self.bytes_served, other.bytes_served),
            (&mut self.objects, other.objects),
            (&mut self.bytes, other.bytes),
            (&mut self.capacity, other.capacity),
            (&mut self.evictions, other.evictions),
        ] {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// hits / (hits + misses), or `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

/// Responses and body bytes served by one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Served {
    pub responses: u64,
    pub bytes: u64,
}

/// `POST /reload` on an edge, when the configuration was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadApplied {
    pub applied: bool,
    /// The edge's config version after the reload.
    pub version: u64,
}

/// `POST /purge` on an edge: how many objects were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCount {
    pub purged: u64,
}

/// `POST /drain` on an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_vocabularies_round_trip_through_their_strings_and_json() {
        for tier in Tier::ALL {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
            assert_eq!(
                serde_json::to_value(tier).unwrap(),
                serde_json::Value::from(tier.as_str())
            );
            assert_eq!(Tier::ALL[tier.index()], tier);
        }
        for status in CacheStatus::ALL {
            assert_eq!(CacheStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
            assert_eq!(CacheStatus::ALL[status.index()], status);
        }
        assert_eq!(Tier::parse("L1"), None);
    }

    #[test]
    fn latency_histogram_buckets_sums_and_quantiles() {
        assert_eq!(LatencyHistogram::bucket(0), 0);
        assert_eq!(LatencyHistogram::bucket(1), 0);
        assert_eq!(LatencyHistogram::bucket(2), 1);
        assert_eq!(LatencyHistogram::bucket(3), 2);
        assert_eq!(LatencyHistogram::bucket(u64::MAX), LATENCY_BOUNDS_MS.len());
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        h.counts[LatencyHistogram::bucket(4)] += 98;
        h.counts[LatencyHistogram::bucket(700)] += 2;
        assert_eq!(h.quantile_ms(0.5), Some(5));
        assert_eq!(h.quantile_ms(0.99), Some(1_000));
        let earlier = h.clone();
        h.counts[LatencyHistogram::bucket(40_000)] += 1;
        let delta = h.since(&earlier);
        assert_eq!(delta.total(), 1);
        assert_eq!(delta.quantile_ms(0.5), Some(30_000));
        let mut sum = LatencyHistogram::default();
        sum.add(&h);
        sum.add(&h);
        assert_eq!(sum.total(), 2 * h.total());
    }

    #[test]
    fn request_counts_keep_their_status_class_keys() {
        let counts = RequestCounts {
            total: 3,
            success: 2,
            client_error: 1,
            ..RequestCounts::default()
        };
        let json = serde_json::to_value(counts).unwrap();
        assert_eq!(json["2xx"], 2);
        assert_eq!(json["4xx"], 1);
        assert_eq!(counts.class(2), 2);
    }
}

/// Rate limiting on an edge since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimitStats {
    /// Requests a rule applied to.
    pub checked: u64,
    /// Requests answered 429.
    pub limited: u64,
    /// Per rule of the configuration in use, in its order.
    #[serde(default)]
    pub rules: Vec<RateRuleStats>,
}

/// One `[[edge.rate_limit.rules]]` entry and what it did since the edge applied it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateRuleStats {
    /// The rule's path pattern.
    pub pattern: String,
    /// `ip` or `header:NAME`.
    pub key: String,
    /// Sustained requests per second per key.
    pub rate_per_second: f64,
    pub burst: u32,
    pub checked: u64,
    pub limited: u64,
}
