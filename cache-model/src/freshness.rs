//! How long a response may be served from cache, and whether a stored one still may.
//!
//! The edge reads the origin's headers with pingora's parser and hands the outcome here as
//! an [`OriginFreshness`]; the simulator's model builds the same value from the trace (its
//! `ttl` column) or from the scenario's origin rules. The decision itself is this code in both.

use std::time::Duration;

/// What the origin said about storing a response, already parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginFreshness {
    /// The origin gave explicit freshness (`s-maxage`, `max-age` or `Expires`).
    pub explicit: Option<Duration>,
    /// The origin (or the request) forbade storing: `no-store`, `private`, or
    /// `Authorization` without permission.
    pub forbidden: bool,
}

/// How long to keep a response the origin said nothing explicit about: the path's configured
/// TTL rule, unless storing is forbidden or the rule's TTL is zero (a zero TTL means "do not
/// cache by default"). `None`: not stored on the rule's account.
pub fn fallback_ttl(forbidden: bool, default_ttl: Option<Duration>) -> Option<Duration> {
    match default_ttl {
        Some(ttl) if !forbidden && !ttl.is_zero() => Some(ttl),
        _ => None,
    }
}

/// How long a response may be served fresh: the origin's explicit freshness when it gave one
/// (even zero: stored, but stale at once), else [`fallback_ttl`]. `None`: not stored.
pub fn ttl(origin: OriginFreshness, default_ttl: Option<Duration>) -> Option<Duration> {
    if origin.forbidden {
        return None;
    }
    match origin.explicit {
        Some(ttl) => Some(ttl),
        None => fallback_ttl(false, default_ttl),
    }
}

/// Whether an entry stored at `stored_ms` with `ttl_ms` of freshness is still fresh at
/// `now_ms` (any clock, in milliseconds). Fresh strictly before `stored + ttl`, as
/// pingora's `CacheMeta::is_fresh`.
pub fn is_fresh(stored_ms: u64, ttl_ms: u64, now_ms: u64) -> bool {
    now_ms < stored_ms.saturating_add(ttl_ms)
}

/// `is_fresh` with the expiry precomputed (`stored + ttl`), as the model keeps it.
pub fn fresh_until(expires_ms: u64, now_ms: u64) -> bool {
    now_ms < expires_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_freshness_wins_then_the_path_rule_and_forbidden_is_never_stored() {
        let rule = Some(Duration::from_secs(60));
        let origin = |explicit, forbidden| OriginFreshness {
            explicit,
            forbidden,
        };
        assert_eq!(
            ttl(origin(Some(Duration::from_secs(5)), false), rule),
            Some(Duration::from_secs(5))
        );
        assert_eq!(ttl(origin(None, false), rule), rule);
        assert_eq!(ttl(origin(None, true), rule), None);
        assert_eq!(ttl(origin(None, false), Some(Duration::ZERO)), None);
        assert_eq!(ttl(origin(None, false), None), None);
        assert!(is_fresh(1000, 500, 1499));
        assert!(!is_fresh(1000, 500, 1500));
    }
}
