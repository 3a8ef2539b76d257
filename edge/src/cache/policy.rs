//! Cache policy helpers for the proxy's hooks: whether a response may be stored and for how
//! long (the origin's headers first, then the configured TTL rule for its path), and the
//! `X-Cache` value for a request's cache phase.

use std::time::{Duration, SystemTime};

use edgebox_wire::edge::CacheStatus;
use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::filters::{calculate_serve_stale_durations, resp_cacheable};
use pingora::cache::{CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;

/// Statuses stored without explicit freshness (RFC 9111 §4.2.2 "heuristically cacheable",
/// minus the ones we never want a default TTL for).
fn cacheable_by_default(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 410)
}

fn no_default_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

/// Decide whether `resp` may be cached, for `response_cache_filter`.
///
/// The origin's `Cache-Control` (`s-maxage`, `max-age`, `no-store`, `no-cache`, `private`,
/// `stale-while-revalidate`, `stale-if-error`) and `Expires` decide when present; when the
/// origin says nothing about freshness, `default_ttl` (the config's TTL rule for the path)
/// applies. `swr`/`sie` are the configured serve-stale defaults, overridden by the origin's
/// directives. A `Cache-Control` that is present but does not parse, `Vary: *`, and a request
/// with `Authorization` (unless the response allows it) are not cached: when in doubt, don't
/// store — the response is still served.
///
/// A response that sets a cookie is one client's: it is not stored unless the origin says
/// `Cache-Control: public` and `strip_set_cookie` (the config's switch) allows it, and then
/// the stored copy has no `Set-Cookie` (only the client that caused the fetch gets it).
pub fn response_cacheable(
    resp: &ResponseHeader,
    authorization_present: bool,
    default_ttl: Option<Duration>,
    swr: Duration,
    sie: Duration,
    strip_set_cookie: bool,
) -> RespCacheable {
    let status = resp.status.as_u16();
    let cache_control = CacheControl::from_resp_headers(resp);
    let stored;
    let resp = if resp.headers.contains_key(http::header::SET_COOKIE) {
        let public = cache_control.as_ref().is_some_and(|cc| cc.public());
        if !(strip_set_cookie && public) {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
        }
        let mut copy = resp.clone();
        copy.remove_header(&http::header::SET_COOKIE);
        stored = copy;
        &stored
    } else {
        resp
    };
    // pingora's parser is lenient: a directive whose value is not a number parses but reads
    // as an error; treat that like a header that does not parse at all.
    // pingora's parser is lenient: a numeric directive without a readable number (`max-age=`,
    // `max-age="x`, `max-age=abc`) parses but yields nothing. Treat that as a header that does
    // not parse: the origin meant something we cannot tell.
    let malformed = cache_control.as_ref().is_some_and(|cc| {
        let bad = |name: &str, value: pingora::Result<Option<u32>>| {
            cc.has_key(name) && !matches!(value, Ok(Some(_)))
        };
        bad("max-age", cc.max_age())
            || bad("s-maxage", cc.s_maxage())
            || bad("stale-while-revalidate", cc.stale_while_revalidate())
            || bad("stale-if-error", cc.stale_if_error())
    });
    if malformed
        || (cache_control.is_none() && resp.headers.contains_key(http::header::CACHE_CONTROL))
    {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("unparsable cache-control"));
    }
    let vary_star = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|name| name.trim() == "*"))
    });
    if vary_star {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("vary: *"));
    }
    let explicit = cache_control
        .as_ref()
        .is_some_and(|cc| cc.fresh_duration().is_some())
        || resp.headers.contains_key(http::header::EXPIRES);
    if !explicit && !cacheable_by_default(status) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let defaults = CacheMetaDefaults::new(no_default_ttl, secs(swr), secs(sie));
    let decided = resp_cacheable(
        cache_control.as_ref(),
        resp.clone(),
        authorization_present,
        &defaults,
    );
    if decided.is_cacheable() || explicit {
        return decided;
    }
    // The origin gave no freshness. It may still have forbidden storing (no-store, private,
    // Authorization): those answers stand; otherwise the path's TTL rule applies.
    let forbidden = cache_control.as_ref().is_some_and(|cc| {
        matches!(
            cc.is_cacheable(),
            pingora::cache::cache_control::Cacheable::No
        ) || (authorization_present && !cc.allow_caching_authorized_req())
    }) || (authorization_present && cache_control.is_none());
    // The fallback itself is the shared policy the simulator's model runs too.
    match edgebox_cache_model::freshness::fallback_ttl(forbidden, default_ttl) {
        Some(ttl) => {
            let now = SystemTime::now();
            let (swr, sie) = calculate_serve_stale_durations(cache_control.as_ref(), &defaults);
            let mut header = resp.clone();
            if let Some(cc) = &cache_control {
                cc.strip_private_headers(&mut header);
            }
            RespCacheable::Cacheable(CacheMeta::new(now + ttl, now, swr, sie, header))
        }
        _ => decided,
    }
}

/// The largest upstream `Age` believed (a year): beyond it the upstream is confused.
const MAX_UPSTREAM_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A response that was `age` seconds old already when it arrived (its `Age`: a parent
/// edge's copy, or an origin behind another cache) is stored as that old: its age counts
/// from `now - age`, so a later hit here reports the parent's age plus its own time here.
/// When its freshness was given relative to its receipt (`max-age`, `s-maxage` or the
/// path's TTL rule, not an absolute `Expires`), it also goes stale `age` sooner
/// (RFC 9111 §4.2.3: the freshness lifetime counts from the response's generation).
pub fn age_from_upstream(meta: &mut CacheMeta, resp: &ResponseHeader, age: u64, now: SystemTime) {
    if age == 0 {
        return;
    }
    let age = Duration::from_secs(age).min(MAX_UPSTREAM_AGE);
    let Some(epoch) = now.checked_sub(age) else {
        return;
    };
    meta.set_epoch_override(epoch);
    let relative = CacheControl::from_resp_headers(resp)
        .is_some_and(|cc| cc.fresh_duration().is_some())
        || !resp.headers.contains_key(http::header::EXPIRES);
    if relative && let Some(until) = meta.fresh_until().checked_sub(age) {
        meta.expire_at(until);
    }
}

/// The `X-Cache` value for a request that went through the cache in `phase`.
pub fn x_cache(phase: CachePhase) -> CacheStatus {
    match phase {
        CachePhase::Hit => CacheStatus::Hit,
        CachePhase::Miss => CacheStatus::Miss,
        CachePhase::Stale | CachePhase::StaleUpdating => CacheStatus::Stale,
        CachePhase::Expired => CacheStatus::Expired,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
        CachePhase::Disabled(_)
        | CachePhase::Bypass
        | CachePhase::Uninit
        | CachePhase::CacheKey => CacheStatus::Bypass,
    }
}

/// Whether the stored response's own directives allow serving it stale at all: `no-cache`
/// requires a successful revalidation before every use (so no stale-while-revalidate, even
/// with a configured default), and `must-revalidate`/`proxy-revalidate` forbid stale serving
/// even when the origin fails. `upstream_failed` says which case is asked about.
pub fn stale_allowed(meta: &CacheMeta, upstream_failed: bool) -> bool {
    let directives: Vec<String> = meta
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            d.split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let has = |name: &str| directives.iter().any(|d| d == name);
    if has("must-revalidate") || has("proxy-revalidate") {
        return false;
    }
    upstream_failed || !has("no-cache")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pingora::cache::RespCacheable;
    use pingora::http::ResponseHeader;

    use super::response_cacheable;

    fn decide(cache_control: &str, strip_set_cookie: bool) -> RespCacheable {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("cache-control", cache_control).unwrap();
        resp.append_header("set-cookie", "session=alice").unwrap();
        let none = Duration::ZERO;
        response_cacheable(&resp, false, None, none, none, strip_set_cookie)
    }

    #[test]
    fn an_upstream_age_makes_the_stored_copy_that_much_older_and_sooner_stale() {
        use std::time::SystemTime;
        let now = SystemTime::now();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("cache-control", "max-age=60").unwrap();
        let RespCacheable::Cacheable(mut meta) =
            response_cacheable(&resp, false, None, Duration::ZERO, Duration::ZERO, false)
        else {
            panic!("max-age=60 is stored");
        };
        let fresh_until = meta.fresh_until();
        super::age_from_upstream(&mut meta, &resp, 20, now);
        assert_eq!(meta.epoch(), now - Duration::from_secs(20));
        assert!(meta.age() >= Duration::from_secs(20));
        assert_eq!(meta.fresh_until(), fresh_until - Duration::from_secs(20));
        // An absurd Age is bounded, never a panic.
        super::age_from_upstream(&mut meta, &resp, u64::MAX, now);
    }

    #[test]
    fn responses_setting_cookies_are_stored_only_when_public_and_allowed_and_never_with_the_cookie()
    {
        assert!(!decide("max-age=60", false).is_cacheable());
        assert!(!decide("max-age=60", true).is_cacheable());
        assert!(!decide("public, max-age=60", false).is_cacheable());
        let RespCacheable::Cacheable(meta) = decide("public, max-age=60", true) else {
            panic!("public + strip_set_cookie is stored");
        };
        assert!(!meta.headers().contains_key("set-cookie"));
    }
}
