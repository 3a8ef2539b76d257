//! Unit tests of the cache's rules, without storage: purge requests, surrogate keys,
//! keys and URLs, and the response policy (freshness, serve-stale, `X-Cache`).

use std::time::{Duration, SystemTime};

use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::http::ResponseHeader;

use super::super::key::cache_key;
use super::super::*;

#[test]
fn purge_requests_need_exactly_one_selector() {
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        PurgeRequest::from_fields(s("/a"), None, None, None),
        Ok(PurgeRequest::Url("/a".into()))
    );
    assert_eq!(
        PurgeRequest::from_fields(None, None, None, Some(true)),
        Ok(PurgeRequest::All)
    );
    assert!(PurgeRequest::from_fields(s("/a"), s("/b"), None, None).is_err());
    assert!(PurgeRequest::from_fields(None, None, None, Some(false)).is_err());
    assert!(PurgeRequest::from_fields(None, None, s(""), None).is_err());
}

#[test]
fn surrogate_keys_are_split_and_bounded() {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.append_header("surrogate-key", "a b,c  a").unwrap();
    let long = "t".repeat(index::MAX_TAG_BYTES + 1);
    header
        .append_header("surrogate-key", long.as_str())
        .unwrap();
    let many: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    header
        .append_header("surrogate-key", many.join(" "))
        .unwrap();
    let tags = index::tags_from_headers(&header);
    assert_eq!(&tags[..3], ["a", "b", "c"]);
    assert_eq!(tags.len(), index::MAX_TAGS);
    assert!(!tags.contains(&long));
}

#[test]
fn urls_are_recovered_from_keys_and_bounded() {
    assert_eq!(
        key::url_of_primary(cache_key("example.com", "/a?b=1").primary_key()),
        "/a?b=1"
    );
    // Keys made some other way read as URLs whole.
    assert_eq!(key::url_of_primary(b"/raw"), "/raw");
    assert_eq!(key::purge_url("https://x.example/p/q"), "/p/q");
    assert_eq!(key::purge_url("http://x.example"), "/");
    assert_eq!(cache_key("[::1]:80", "/").primary_key(), b"h5:[::1]p1:/");
    assert_eq!(cache_key("[0::1]", "/").primary_key(), b"h5:[::1]p1:/");
    assert_eq!(
        cache_key("Example.COM:8080", "/?").primary_key(),
        b"h11:example.comp1:/q0:"
    );
    let long = format!("/{}", "é".repeat(5000));
    let bounded = key::bounded(&long);
    assert!(bounded.len() <= key::MAX_URL_BYTES && long.starts_with(&bounded));
    let _: HashBinary = cache_key("h", "/").combined_bin();
}

fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut header = ResponseHeader::build(status, None).unwrap();
    for (name, value) in headers {
        header.append_header(name.to_string(), *value).unwrap();
    }
    header
}

/// `response_cacheable` → Some(seconds of freshness) or None (not stored).
fn check(
    status: u16,
    headers: &[(&str, &str)],
    auth: bool,
    default_ttl: Option<u64>,
) -> Option<u64> {
    let resp = response(status, headers);
    let ttl = default_ttl.map(Duration::from_secs);
    match policy::response_cacheable(
        &resp,
        auth,
        ttl,
        Duration::from_secs(10),
        Duration::from_secs(300),
        false,
    ) {
        pingora::cache::RespCacheable::Cacheable(meta) => Some(meta.fresh_sec()),
        pingora::cache::RespCacheable::Uncacheable(_) => None,
    }
}

#[test]
fn the_origin_decides_freshness_and_the_path_rule_fills_in() {
    let near = |got: Option<u64>, want: u64| got.is_some_and(|s| s.abs_diff(want) <= 1);
    assert!(near(
        check(200, &[("cache-control", "max-age=100")], false, Some(60)),
        100
    ));
    assert!(near(
        check(
            200,
            &[("cache-control", "max-age=100, s-maxage=200")],
            false,
            None
        ),
        200
    ));
    assert!(
        near(check(200, &[], false, Some(60)), 60),
        "origin silent: the TTL rule"
    );
    assert!(near(
        check(200, &[("cache-control", "public")], false, Some(60)),
        60
    ));
    assert_eq!(
        check(200, &[], false, None),
        None,
        "silent origin, no rule: not stored"
    );
    assert_eq!(
        check(200, &[("cache-control", "no-store")], false, Some(60)),
        None
    );
    assert_eq!(
        check(
            200,
            &[("cache-control", "private, max-age=100")],
            false,
            Some(60)
        ),
        None
    );
    assert_eq!(
        check(200, &[("cache-control", "no-cache")], false, Some(60)),
        Some(0),
        "stored, always revalidated"
    );
    assert_eq!(
        check(200, &[("cache-control", "max-age=\"oops")], false, Some(60)),
        None,
        "unparsable: not stored"
    );
    assert_eq!(
        check(200, &[("cache-control", "max-age=abc")], false, Some(60)),
        None
    );
    assert_eq!(
        check(
            200,
            &[("cache-control", "public, s-maxage=")],
            false,
            Some(60)
        ),
        None
    );
    assert_eq!(check(200, &[("vary", "*")], false, Some(60)), None);
    assert_eq!(
        check(200, &[], true, Some(60)),
        None,
        "Authorization without permission"
    );
    assert!(near(
        check(
            200,
            &[("cache-control", "public, max-age=50")],
            true,
            Some(60)
        ),
        50
    ));
    assert_eq!(
        check(500, &[], false, Some(60)),
        None,
        "errors get no default TTL"
    );
    assert!(near(check(404, &[], false, Some(60)), 60));
    let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(500));
    assert!(near(
        check(200, &[("expires", expires.as_str())], false, Some(60)),
        500
    ));
}

#[test]
fn serve_stale_defaults_are_overridden_by_the_origin() {
    let resp = response(200, &[("cache-control", "max-age=5, stale-if-error=7")]);
    let pingora::cache::RespCacheable::Cacheable(meta) = policy::response_cacheable(
        &resp,
        false,
        None,
        Duration::from_secs(10),
        Duration::from_secs(300),
        false,
    ) else {
        panic!("not cacheable")
    };
    assert_eq!(
        (meta.stale_while_revalidate_sec(), meta.stale_if_error_sec()),
        (10, 7)
    );
}

#[test]
fn x_cache_names_every_phase() {
    use pingora::cache::{CachePhase, NoCacheReason};
    let cases = [
        (CachePhase::Hit, "HIT"),
        (CachePhase::Miss, "MISS"),
        (CachePhase::Stale, "STALE"),
        (CachePhase::StaleUpdating, "STALE"),
        (CachePhase::Expired, "EXPIRED"),
        (CachePhase::Revalidated, "REVALIDATED"),
        (CachePhase::Disabled(NoCacheReason::NeverEnabled), "BYPASS"),
        (CachePhase::Bypass, "BYPASS"),
    ];
    for (phase, want) in cases {
        assert_eq!(policy::x_cache(phase).as_str(), want);
    }
}

#[test]
fn stale_serving_respects_no_cache_and_must_revalidate() {
    let meta_with = |cache_control: &str| {
        let now = SystemTime::now();
        pingora::cache::CacheMeta::new(
            now,
            now,
            10,
            300,
            response(200, &[("cache-control", cache_control)]),
        )
    };
    // (Cache-Control, stale while revalidating allowed, stale on error allowed)
    let cases = [
        ("max-age=5", true, true),
        ("no-cache", false, true),
        ("No-Cache, max-age=0", false, true),
        ("max-age=5, must-revalidate", false, false),
        ("max-age=5, proxy-revalidate", false, false),
        ("no-cache=\"set-cookie\", max-age=5", false, true),
    ];
    for (cache_control, swr, sie) in cases {
        let meta = meta_with(cache_control);
        assert_eq!(
            (
                policy::stale_allowed(&meta, false),
                policy::stale_allowed(&meta, true)
            ),
            (swr, sie),
            "{cache_control}"
        );
    }
}
