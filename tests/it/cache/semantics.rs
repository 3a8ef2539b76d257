//! HTTP cache semantics through the real edge: Cache-Control directives from the origin's
//! per-path rules, the edge's default TTL per path pattern, 304 revalidation, HEAD and
//! Range from cache, stale-while-revalidate and stale-if-error.

use std::time::Duration;

use super::{Edge, Origin, cache_stats, get, request};
use crate::support::{client, eventually};

fn rule(pattern: &str, cache_control: &str) -> String {
    format!("[[origin.rules]]\npattern = \"{pattern}\"\ncache_control = \"{cache_control}\"\n\n")
}

#[tokio::test]
async fn cache_control_directives_and_default_ttls_decide_what_is_stored() {
    let rules = [
        rule("/max-age/**", "max-age=300"),
        rule("/s-maxage/**", "max-age=0, s-maxage=300"),
        rule("/no-store/**", "no-store"),
        rule("/private/**", "private, max-age=300"),
        rule("/no-cache/**", "no-cache"),
        rule("/bad/**", "max-age=soon"),
    ]
    .concat();
    let files: &[(&str, &[u8])] = &[
        ("max-age/x.txt", b"x"),
        ("s-maxage/x.txt", b"x"),
        ("no-store/x.txt", b"x"),
        ("private/x.txt", b"x"),
        ("no-cache/x.txt", b"x"),
        ("bad/x.txt", b"x"),
        ("ttl/x.txt", b"x"),
        ("zero/x.txt", b"x"),
        ("none/x.txt", b"x"),
    ];
    let origin = Origin::start(files, "", &rules);
    // The origin says nothing for /ttl, /zero and /none: the edge's rules decide.
    let edge = Edge::start(
        &origin,
        "",
        "[[cache.rules]]\npattern = \"/ttl/**\"\nttl = \"5m\"\n\n[[cache.rules]]\npattern = \"/zero/**\"\nttl = \"0s\"\n",
    );
    // What each path was answered with, twice in a row: stored objects are hits the second
    // time; what must not be stored goes past the cache (BYPASS) both times; no-cache is
    // stored but revalidated on every use.
    let cases = [
        ("/max-age/x.txt", "MISS", "HIT"),
        ("/s-maxage/x.txt", "MISS", "HIT"),
        ("/no-store/x.txt", "BYPASS", "BYPASS"),
        ("/private/x.txt", "BYPASS", "BYPASS"),
        ("/no-cache/x.txt", "MISS", "REVALIDATED"),
        ("/bad/x.txt", "BYPASS", "BYPASS"),
        ("/ttl/x.txt", "MISS", "HIT"),
        ("/zero/x.txt", "BYPASS", "BYPASS"),
        ("/none/x.txt", "BYPASS", "BYPASS"),
    ];
    let mut seen = Vec::new();
    for (path, _, _) in cases {
        let first = get(&edge.daemon, path, &[]).await;
        let second = get(&edge.daemon, path, &[]).await;
        assert_eq!(
            (first.status, second.status, &second.body[..]),
            (200, 200, &b"x"[..]),
            "{path}"
        );
        assert_eq!(first.tier, "origin", "{path}");
        seen.push((path, leak(first.cache), leak(second.cache.clone())));
        let expected_fetches = if second.cache == "HIT" { 1 } else { 2 };
        assert_eq!(origin.count(path).await, expected_fetches, "{path}");
        if second.cache == "HIT" {
            assert_eq!(second.tier, "l1", "{path}");
            assert!(
                second.header("age").parse::<u64>().is_ok(),
                "{path}: Age on a hit"
            );
        }
    }
    assert_eq!(seen, cases);
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn revalidation_head_and_ranges_are_answered_from_the_cached_object() {
    let body: Vec<u8> = super::pattern(10_000);
    let rules = rule("/reval/**", "no-cache") + &rule("/**", "max-age=300");
    let origin = Origin::start(
        &[
            ("reval/r.txt", b"revalidate me"),
            ("reval/h.txt", b"h"),
            ("data.bin", &body),
            ("data2.bin", &body),
        ],
        "",
        &rules,
    );
    let edge = Edge::start(&origin, "", "");

    // no-cache + ETag/Last-Modified: every use revalidates with a conditional request; the
    // origin answers 304 and the body comes from the cache.
    assert_eq!(get(&edge.daemon, "/reval/r.txt", &[]).await.cache, "MISS");
    for _ in 0..2 {
        let got = get(&edge.daemon, "/reval/r.txt", &[]).await;
        assert_eq!(
            (got.status, got.cache.as_str(), &got.body[..]),
            (200, "REVALIDATED", &b"revalidate me"[..])
        );
        assert_eq!(got.tier, "l1");
    }
    assert_eq!(origin.count("/reval/r.txt").await, 3);

    // HEAD and Range from the cached GET.
    assert_eq!(get(&edge.daemon, "/data.bin", &[]).await.cache, "MISS");
    let head = request(
        &client(),
        reqwest::Method::HEAD,
        &format!("{}/data.bin", edge.daemon.url("http")),
        &[],
    )
    .await;
    assert_eq!((head.status, head.cache.as_str()), (200, "HIT"));
    assert_eq!(head.header("content-length"), "10000");
    assert!(head.body.is_empty());
    let range = get(&edge.daemon, "/data.bin", &[("range", "bytes=100-199")]).await;
    assert_eq!((range.status, range.cache.as_str()), (206, "HIT"));
    assert_eq!(range.header("content-range"), "bytes 100-199/10000");
    assert_eq!(&range.body[..], &body[100..200]);
    let tail = get(&edge.daemon, "/data.bin", &[("range", "bytes=-10")]).await;
    assert_eq!((tail.status, &tail.body[..]), (206, &body[9990..]));
    assert_eq!(origin.count("/data.bin").await, 1);

    // A HEAD for a cold object never leaves an empty body behind for the next GET.
    let head = request(
        &client(),
        reqwest::Method::HEAD,
        &format!("{}/reval/h.txt", edge.daemon.url("http")),
        &[],
    )
    .await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    let head = request(
        &client(),
        reqwest::Method::HEAD,
        &format!("{}/data2.bin", edge.daemon.url("http")),
        &[],
    )
    .await;
    assert_eq!((head.status, head.header("content-length")), (200, "10000"));
    let got = get(&edge.daemon, "/data2.bin", &[]).await;
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &body[..]),
        "{}",
        got.how()
    );
    let got = get(&edge.daemon, "/data2.bin", &[]).await;
    assert_eq!((got.cache.as_str(), &got.body[..]), ("HIT", &body[..]));
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let origin = Origin::start(
        &[("swr.txt", b"swr")],
        "",
        &rule("/**", "max-age=1, stale-while-revalidate=60"),
    );
    let edge = Edge::start(&origin, "", "");
    assert_eq!(get(&edge.daemon, "/swr.txt", &[]).await.cache, "MISS");
    // Once the second of freshness is over: served stale at once, refreshed behind it.
    let stale = eventually(
        "the object to turn stale",
        Duration::from_secs(10),
        || async {
            let got = get(&edge.daemon, "/swr.txt", &[]).await;
            (got.cache != "HIT").then_some(got)
        },
    )
    .await;
    assert_eq!(
        (stale.status, stale.cache.as_str(), &stale.body[..]),
        (200, "STALE", &b"swr"[..])
    );
    eventually(
        "the background refresh",
        Duration::from_secs(10),
        || async { (origin.count("/swr.txt").await == 2).then_some(()) },
    )
    .await;
    assert_eq!(get(&edge.daemon, "/swr.txt", &[]).await.cache, "HIT");
}

#[tokio::test]
async fn with_the_origin_down_stale_is_served_within_stale_if_error_and_an_error_after() {
    let mut origin = Origin::start(
        &[("sie.txt", b"sie"), ("strict.txt", b"strict")],
        "",
        &(rule("/sie.txt", "max-age=1, stale-if-error=4")
            + &rule("/strict.txt", "max-age=1, stale-if-error=0")),
    );
    let edge = Edge::start(&origin, "", "[cache]\nstale_while_revalidate = \"0s\"\n");
    assert_eq!(get(&edge.daemon, "/sie.txt", &[]).await.cache, "MISS");
    assert_eq!(get(&edge.daemon, "/strict.txt", &[]).await.cache, "MISS");
    origin.daemon.kill();
    let stale = eventually(
        "the object to turn stale",
        Duration::from_secs(10),
        || async {
            let got = get(&edge.daemon, "/sie.txt", &[]).await;
            (got.cache != "HIT").then_some(got)
        },
    )
    .await;
    assert_eq!(
        (stale.status, stale.cache.as_str(), &stale.body[..]),
        (200, "STALE", &b"sie"[..])
    );
    // Fetched a moment after /sie.txt, so it may still be fresh for that moment.
    let strict = eventually(
        "the strict object to turn stale",
        Duration::from_secs(10),
        || async {
            let got = get(&edge.daemon, "/strict.txt", &[]).await;
            (got.cache != "HIT").then_some(got)
        },
    )
    .await;
    assert!(matches!(strict.status, 502 | 504), "{strict:?}");
    let error: serde_json::Value = serde_json::from_slice(&strict.body).unwrap();
    assert!(error["error"]["code"].is_string(), "{error}");
    // Past the stale-if-error window (1 s fresh + 4 s) the client gets the error.
    let after = eventually(
        "stale-if-error to run out",
        Duration::from_secs(15),
        || async {
            let got = get(&edge.daemon, "/sie.txt", &[]).await;
            (got.status != 200).then_some(got)
        },
    )
    .await;
    assert!(matches!(after.status, 502 | 504), "{after:?}");
    let stats = cache_stats(&edge.daemon).await;
    assert!(stats.l1.hits >= 1, "{stats:?}");
}
