//! Soft purge through the real edge: selected objects are marked stale, not removed, so the
//! next request revalidates with the origin (a conditional request answered 304) and the
//! serve-stale windows still protect clients; and a purge that lands while a fill is in
//! flight keeps that fill's (older) body out of the cache.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Edge, Origin, cache_stats, get, purge};
use crate::support::eventually;

/// Tagged pages under `/a/`, one more elsewhere; fresh for five minutes.
const RULES: &str = "[[origin.rules]]\npattern = \"/a/**\"\ncache_control = \"max-age=300\"\nsurrogate_keys = [\"ta\"]\n\n\
     [[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";

/// No stale-while-revalidate: a stale object is revalidated before it is served.
const NO_SWR: &str = "[cache]\nstale_while_revalidate = \"0s\"\n";

/// Conditional requests the origin answered `304` so far (its `3xx` responses).
async fn not_modified(origin: &Origin) -> u64 {
    origin
        .stats()
        .await
        .responses
        .get("3xx")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_by_url_prefix_tag_or_all_turns_the_next_request_into_a_revalidation() {
    let files: &[(&str, &[u8])] = &[
        ("a/one.txt", b"one"),
        ("a/two.txt", b"two"),
        ("b.txt", b"b"),
    ];
    let origin = Origin::start(files, "", RULES);
    let edge = Edge::start(&origin, "", NO_SWR);
    let paths = ["/a/one.txt", "/a/two.txt", "/b.txt"];
    for path in paths {
        assert_eq!(get(&edge.daemon, path, &[]).await.how(), "MISS origin");
        assert_eq!(get(&edge.daemon, path, &[]).await.how(), "HIT l1");
    }
    let cases: [(&str, &[&str]); 4] = [
        (r#"{"url": "/a/one.txt", "soft": true}"#, &["/a/one.txt"]),
        (
            r#"{"prefix": "/a/", "soft": true}"#,
            &["/a/one.txt", "/a/two.txt"],
        ),
        (
            r#"{"tag": "ta", "soft": true}"#,
            &["/a/one.txt", "/a/two.txt"],
        ),
        (r#"{"all": true, "soft": true}"#, &paths),
    ];
    for (body, selected) in cases {
        let before_304 = not_modified(&origin).await;
        let (status, answer) = purge(&edge.daemon, body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["purged"], selected.len(), "{body}: {answer}");
        for path in paths {
            let count = origin.count(path).await;
            let got = get(&edge.daemon, path, &[]).await;
            let file = files
                .iter()
                .find(|(name, _)| format!("/{name}") == path)
                .unwrap()
                .1;
            assert_eq!(&got.body[..], file, "{body} {path}");
            if selected.contains(&path) {
                // Kept (L1 answers), revalidated: the origin saw a conditional request
                // and answered 304 without a body.
                assert_eq!(got.how(), "REVALIDATED l1", "{body} {path}");
                assert_eq!(origin.count(path).await, count + 1, "{body} {path}");
                let status = got.header("cache-status");
                assert!(
                    status.starts_with("edge; fwd=stale; fwd-status=304; ttl="),
                    "{body} {path}: {status}"
                );
            } else {
                assert_eq!(got.how(), "HIT l1", "{body} {path}");
                assert_eq!(origin.count(path).await, count, "{body} {path}");
            }
            // Fresh again after the 304: the fast path answers it.
            assert_eq!(
                get(&edge.daemon, path, &[]).await.how(),
                "HIT l1",
                "{body} {path}"
            );
        }
        assert_eq!(
            not_modified(&origin).await - before_304,
            selected.len() as u64,
            "{body}: one 304 per selected object"
        );
    }
    let stats = cache_stats(&edge.daemon).await;
    assert_eq!(stats.marked_stale, 1 + 2 + 2 + 3, "{stats:?}");
    assert_eq!(stats.purged, 0, "nothing was removed: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_marks_the_disk_copy_stale_too() {
    // Larger than L1's per-object cap (an eighth of 1 MiB): only L2 holds it.
    let body = super::pattern(200_000);
    let origin = Origin::start(&[("d.bin", &body)], "", RULES);
    let edge = Edge::start(&origin, "l1_capacity = \"1MiB\"", NO_SWR);
    assert_eq!(get(&edge.daemon, "/d.bin", &[]).await.how(), "MISS origin");
    assert_eq!(get(&edge.daemon, "/d.bin", &[]).await.how(), "HIT l2");
    let (status, answer) = purge(&edge.daemon, r#"{"url": "/d.bin", "soft": true}"#).await;
    assert_eq!((status, &answer["purged"]), (200, &serde_json::json!(1)));
    let got = get(&edge.daemon, "/d.bin", &[]).await;
    assert_eq!(got.how(), "REVALIDATED l2");
    assert!(got.body[..] == body[..], "the kept body");
    assert_eq!(get(&edge.daemon, "/d.bin", &[]).await.how(), "HIT l2");
    assert_eq!(origin.count("/d.bin").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_soft_purge_stale_while_revalidate_answers_at_once_and_revalidates_behind() {
    let origin = Origin::start(
        &[("swr.txt", b"swr")],
        "",
        "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300, stale-while-revalidate=60\"\n",
    );
    let edge = Edge::start(&origin, "", "");
    assert_eq!(
        get(&edge.daemon, "/swr.txt", &[]).await.how(),
        "MISS origin"
    );
    let (status, _) = purge(&edge.daemon, r#"{"tag": "none-such", "soft": true}"#).await;
    assert_eq!(
        status, 200,
        "a soft purge that selects nothing changes nothing"
    );
    assert_eq!(get(&edge.daemon, "/swr.txt", &[]).await.how(), "HIT l1");
    let (status, _) = purge(&edge.daemon, r#"{"url": "/swr.txt", "soft": true}"#).await;
    assert_eq!(status, 200);
    let stale = get(&edge.daemon, "/swr.txt", &[]).await;
    assert_eq!(
        (stale.cache.as_str(), &stale.body[..]),
        ("STALE", &b"swr"[..])
    );
    // The background revalidation is a conditional request the origin answers 304.
    eventually(
        "the background revalidation",
        Duration::from_secs(10),
        || async { (not_modified(&origin).await == 1).then_some(()) },
    )
    .await;
    eventually("the refreshed copy", Duration::from_secs(10), || async {
        (get(&edge.daemon, "/swr.txt", &[]).await.how() == "HIT l1").then_some(())
    })
    .await;
    assert_eq!(origin.count("/swr.txt").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_soft_purge_stale_if_error_still_serves_while_the_origin_is_down() {
    let mut origin = Origin::start(
        &[("sie.txt", b"kept")],
        "",
        "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300, stale-if-error=300\"\n",
    );
    let edge = Edge::start(&origin, "", NO_SWR);
    assert_eq!(
        get(&edge.daemon, "/sie.txt", &[]).await.how(),
        "MISS origin"
    );
    origin.daemon.kill();
    let (status, _) = purge(&edge.daemon, r#"{"url": "/sie.txt", "soft": true}"#).await;
    assert_eq!(status, 200);
    // The revalidation fails (connection refused, or every origin marked down): the stale
    // copy is served within its stale-if-error window, measured from the purge.
    for _ in 0..3 {
        let got = get(&edge.daemon, "/sie.txt", &[]).await;
        assert_eq!(
            (got.status, got.cache.as_str(), &got.body[..]),
            (200, "STALE", &b"kept"[..]),
            "{got:?}"
        );
        let status = got.header("cache-status");
        assert!(status.starts_with("edge; hit; ttl=-"), "{status}");
    }
}

/// An origin whose every content answer waits until the test opens the gate (one permit
/// per answer): the Nth request for a path answers `v<N>`, with an ETag of its own.
struct GatedOrigin {
    addr: SocketAddr,
    gate: Arc<Semaphore>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

impl GatedOrigin {
    async fn start() -> Self {
        let gate = Arc::new(Semaphore::new(0));
        let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let (g, s) = (gate.clone(), seen.clone());
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let (gate, seen) = (g.clone(), s.clone());
            async move {
                if uri.path() == "/healthz" {
                    return axum::response::Response::new(axum::body::Body::from("ok"));
                }
                let n = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(uri.path().to_owned()).or_default();
                    *n += 1;
                    *n
                };
                gate.acquire().await.unwrap().forget();
                axum::response::Response::builder()
                    .header("cache-control", "max-age=300")
                    .header("etag", format!("\"v{n}\""))
                    .body(axum::body::Body::from(format!("v{n}")))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, gate, seen }
    }

    fn count(&self, path: &str) -> u64 {
        self.seen.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_applied_while_a_fill_is_in_flight_keeps_its_old_body_out_of_the_cache() {
    let origin = GatedOrigin::start().await;
    let edge = Edge::start_at(origin.addr, "", NO_SWR);
    for (path, purge_body) in [
        ("/hard", r#"{"url": "/hard"}"#),
        ("/soft", r#"{"url": "/soft", "soft": true}"#),
        ("/all", r#"{"all": true}"#),
    ] {
        // The fill starts and reaches the origin, which holds its answer...
        let url = format!("{}{path}", edge.daemon.url("http"));
        let fill = tokio::spawn(async move {
            super::request(&crate::support::client(), reqwest::Method::GET, &url, &[]).await
        });
        eventually(
            "the fill to reach the origin",
            Duration::from_secs(10),
            || async { (origin.count(path) == 1).then_some(()) },
        )
        .await;
        // ... the purge is applied (its answer came back) ...
        let (status, answer) = purge(&edge.daemon, purge_body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        // ... and only then does the origin answer, with what it had before the purge.
        origin.gate.add_permits(1);
        let first = fill.await.unwrap();
        assert_eq!((first.status, &first.body[..]), (200, &b"v1"[..]), "{path}");
        // Declined for storing (an `X-Cache: BYPASS`), which Cache-Status tells as a miss
        // that was not stored.
        assert_eq!(first.cache, "BYPASS", "{path}");
        assert_eq!(
            first.header("cache-status"),
            "edge; fwd=uri-miss",
            "{path}: not stored"
        );
        // Not stored: the next request goes to the origin and gets the new body.
        origin.gate.add_permits(1);
        let second = get(&edge.daemon, path, &[]).await;
        assert_eq!(
            (second.how().as_str(), &second.body[..]),
            ("MISS origin", &b"v2"[..]),
            "{path}"
        );
        assert_eq!(origin.count(path), 2, "{path}");
        // A fill that started after the purge is stored as usual.
        let third = get(&edge.daemon, path, &[]).await;
        assert_eq!(
            (third.how().as_str(), &third.body[..]),
            ("HIT l1", &b"v2"[..]),
            "{path}"
        );
    }
    // The permits given to later requests' answers were all used: nothing else reached it.
    eventually("the gate to be drained", Duration::from_secs(5), || async {
        (origin.gate.available_permits() == 0).then_some(())
    })
    .await;
}
