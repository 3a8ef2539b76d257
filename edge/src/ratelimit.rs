//! Per-client rate limits (`[[edge.rate_limit.rules]]`): a token bucket of `burst`
//! requests refilled at `rate` per `per`, one per client address (or header value) and
//! rule, shared by every worker thread, answered 429 with `Retry-After` when empty.
//!
//! Buckets are kept as GCRA "theoretical arrival times" (the instant the bucket will be
//! full again, minus the burst: one `u64` per bucket, GCRA being the token bucket written
//! with one number) in a count-min sketch ([`Buckets`]): `ROWS` rows of `WIDTH` atomic
//! cells, a key's estimate the minimum of its cell in each row, an admitted request
//! raising each of those cells to the key's new time (`fetch_max`). Clients choose their
//! keys (addresses, API keys), so the table must not grow with them: the sketch is a fixed
//! 2 MiB however many keys arrive, takes no lock and never evicts. What it trades is
//! exactness in one direction only: a key is limited early, never late, and only when
//! each of its four cells is shared with keys that together spent its burst (a cell holds
//! the latest time any of its keys reached). An unrelated client shares all four cells
//! with one flooding key with probability 2^-64. What fills the sketch is many distinct
//! keys within one burst window (`burst` × the refill interval): beyond roughly `WIDTH` ×
//! `burst` / 4 of them, fresh keys start to be refused early (e.g. a one-per-minute rule
//! keyed by an API key, sprayed with over ~16,000 random keys a minute).
//!
//! Two workers checking one key at the same instant may both be admitted on one token
//! (the check reads, then raises): at most one extra request per concurrent worker.
//! pingora-limits was considered: its `Rate` counts fixed intervals (no burst, no time
//! until the next token for `Retry-After`) and its `Estimator` only adds, while a bucket
//! needs a compare-and-raise.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use edgebox_config::{RateKey, RateRule};
use edgebox_node::metrics::MetricsText;
use edgebox_wire::edge::{RateLimitStats, RateRuleStats};

use crate::sharded::Sharded;

const ROWS: usize = 4;
/// Cells per row; a power of two (a key's column is 16 bits of its hash).
const WIDTH: usize = 1 << 16;

/// The buckets of every rule and key, for the life of the process (a reload keeps each
/// client's state: a new limit applies to the bucket as the client left it).
pub struct Buckets {
    cells: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
    counts: Sharded<Counts>,
}

#[derive(Default)]
struct Counts {
    checked: AtomicU64,
    limited: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            cells: (0..ROWS * WIDTH).map(|_| AtomicU64::new(0)).collect(),
            // Seeded per process, so that nobody can pick keys that collide on purpose.
            hasher: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
            counts: Sharded::default(),
        }
    }
}

/// The rules of one snapshot, with counters since it was applied.
pub struct Rules {
    rules: Vec<Rule>,
}

struct Rule {
    config: RateRule,
    /// Nanoseconds per token (GCRA's emission interval).
    interval: u64,
    /// `burst` × `interval`: how far ahead of now a bucket's time may run.
    tolerance: u64,
    counts: Sharded<Counts>,
}

impl Rules {
    pub fn new(rules: &[RateRule]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|config| {
                    let interval = u64::try_from(config.interval().as_nanos())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    Rule {
                        interval,
                        tolerance: interval.saturating_mul(u64::from(config.burst)),
                        config: config.clone(),
                        counts: Sharded::default(),
                    }
                })
                .collect(),
        }
    }

    /// The first rule whose pattern matches `path`.
    pub fn find(&self, path: &str) -> Option<RuleRef<'_>> {
        self.rules
            .iter()
            .position(|rule| rule.config.pattern.matches(path))
            .map(|index| RuleRef {
                index,
                rule: &self.rules[index],
            })
    }

    pub fn stats(&self, buckets: &Buckets) -> RateLimitStats {
        RateLimitStats {
            checked: buckets.counts.sum(|c| &c.checked),
            limited: buckets.counts.sum(|c| &c.limited),
            rules: self
                .rules
                .iter()
                .map(|rule| RateRuleStats {
                    pattern: rule.config.pattern.to_string(),
                    key: match &rule.config.key {
                        RateKey::Ip => "ip".to_owned(),
                        RateKey::Header(name) => format!("header:{name}"),
                    },
                    rate_per_second: f64::from(rule.config.rate) / rule.config.per.as_secs_f64(),
                    burst: rule.config.burst,
                    checked: rule.counts.sum(|c| &c.checked),
                    limited: rule.counts.sum(|c| &c.limited),
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|rule| &rule.config))
            .finish()
    }
}

/// A rule that applies to a request.
#[derive(Clone, Copy)]
pub struct RuleRef<'a> {
    index: usize,
    rule: &'a Rule,
}

impl RuleRef<'_> {
    pub fn key(&self) -> &RateKey {
        &self.rule.config.key
    }
}

/// What a request's bucket is keyed by.
#[derive(Hash)]
pub enum Key<'a> {
    Ip(Option<IpAddr>),
    Header(&'a [u8]),
}

impl Buckets {
    /// Takes a token from `key`'s bucket under `rule`: `Ok` when there was one, else the
    /// time until there will be.
    pub fn take(&self, rule: RuleRef<'_>, key: Key<'_>) -> Result<(), Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let result = self.take_at(rule, key, now);
        let (global, local) = (self.counts.local(), rule.rule.counts.local());
        global.checked.fetch_add(1, Relaxed);
        local.checked.fetch_add(1, Relaxed);
        if result.is_err() {
            global.limited.fetch_add(1, Relaxed);
            local.limited.fetch_add(1, Relaxed);
        }
        result
    }

    fn take_at(&self, rule: RuleRef<'_>, key: Key<'_>, now: u64) -> Result<(), Duration> {
        let hash = self.hasher.hash_one((rule.index, key));
        let cells: [&AtomicU64; ROWS] = std::array::from_fn(|row| {
            let column = (hash >> (row * 16)) as usize & (WIDTH - 1);
            &self.cells[row * WIDTH + column]
        });
        let tat = cells.iter().map(|c| c.load(Relaxed)).min().unwrap_or(0);
        let next = tat.max(now).saturating_add(rule.rule.interval);
        let limit = now.saturating_add(rule.rule.tolerance);
        if next > limit {
            return Err(Duration::from_nanos(next - limit));
        }
        for cell in cells {
            cell.fetch_max(next, Relaxed);
        }
        Ok(())
    }
}

/// `Retry-After` in whole seconds, rounded up (a client that waits that long finds a
/// token), at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The rate-limit families of `/metrics`.
pub fn prometheus(stats: &RateLimitStats, node: &str, out: &mut MetricsText) {
    out.counter(
        "edgebox_edge_rate_limit_checked_total",
        "Requests a rate-limit rule applied to.",
        &[("node", node)],
        stats.checked,
    )
    .counter(
        "edgebox_edge_rate_limited_total",
        "Requests refused with 429 by a rate limit.",
        &[("node", node)],
        stats.limited,
    );
    for rule in &stats.rules {
        out.counter(
            "edgebox_edge_rate_limit_rule_limited_total",
            "Requests refused with 429, by rule (since the rule was applied).",
            &[("node", node), ("rule", &rule.pattern), ("key", &rule.key)],
            rule.limited,
        );
    }
}

#[cfg(test)]
mod tests;
