//! Response headers the static origin cannot send (`Vary`, `Expires`), from a small scripted
//! HTTP origin in the test process, and compression of cached objects on the way out.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::{Edge, Origin, get, purge};

type Counts = Arc<Mutex<HashMap<String, u64>>>;

/// `/vary`: varies by Accept-Encoding and says which it saw; `/expires/N`: an `Expires`
/// N seconds ahead (negative: in the past) and no `Cache-Control`.
async fn scripted(State(counts): State<Counts>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    if path == "/healthz" {
        return "ok".into_response();
    }
    *counts.lock().unwrap().entry(path.clone()).or_default() += 1;
    if path == "/vary" {
        let encoding = headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        return (
            [
                ("cache-control", "max-age=300"),
                ("vary", "Accept-Encoding"),
            ],
            format!("variant for {encoding}"),
        )
            .into_response();
    }
    if let Some(secs) = path.strip_prefix("/expires/") {
        let secs: i64 = secs.parse().unwrap();
        let now = SystemTime::now();
        let at = if secs >= 0 {
            now + Duration::from_secs(secs as u64)
        } else {
            now - Duration::from_secs(secs.unsigned_abs())
        };
        return ([("expires", httpdate::fmt_http_date(at))], path).into_response();
    }
    (axum::http::StatusCode::NOT_FOUND, "no such path").into_response()
}

async fn start_scripted() -> (SocketAddr, Counts) {
    let counts = Counts::default();
    let app = axum::Router::new()
        .fallback(scripted)
        .with_state(counts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, counts)
}

fn count(counts: &Counts, path: &str) -> u64 {
    counts.lock().unwrap().get(path).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_request_value_and_purges_them_together() {
    let (addr, counts) = start_scripted().await;
    let edge = Edge::start_at(addr, "", "");
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(get(&edge.daemon, "/vary", &gzip).await.cache, "MISS");
    assert_eq!(get(&edge.daemon, "/vary", &br).await.cache, "MISS");
    let got = get(&edge.daemon, "/vary", &gzip).await;
    assert_eq!(
        (got.cache.as_str(), &got.body[..]),
        ("HIT", &b"variant for gzip"[..])
    );
    let got = get(&edge.daemon, "/vary", &br).await;
    assert_eq!(
        (got.cache.as_str(), &got.body[..]),
        ("HIT", &b"variant for br"[..])
    );
    assert_eq!(count(&counts, "/vary"), 2);
    assert_eq!(
        purge(&edge.daemon, r#"{"url": "/vary"}"#).await.1["purged"],
        2,
        "both variants"
    );
    assert_eq!(get(&edge.daemon, "/vary", &br).await.cache, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_decides_freshness_when_there_is_no_cache_control() {
    let (addr, counts) = start_scripted().await;
    let edge = Edge::start_at(addr, "", "");
    // An Expires in the past is stored already stale: the next request refetches it.
    for (path, second) in [("/expires/300", "HIT"), ("/expires/-60", "EXPIRED")] {
        get(&edge.daemon, path, &[]).await;
        let got = get(&edge.daemon, path, &[]).await;
        assert_eq!((got.status, got.cache.as_str()), (200, second), "{path}");
    }
    assert_eq!(count(&counts, "/expires/300"), 1);
    assert_eq!(count(&counts, "/expires/-60"), 2);
}

#[tokio::test]
async fn cached_objects_are_compressed_on_the_way_out_and_ranges_stay_identity() {
    let text = "cacheable text that compresses well. ".repeat(200);
    let origin = Origin::start(
        &[("page.txt", text.as_bytes())],
        "",
        "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n",
    );
    let edge = Edge::start(&origin, "", "");
    let gzip = [("accept-encoding", "gzip")];
    for expected in ["MISS", "HIT"] {
        let got = get(&edge.daemon, "/page.txt", &gzip).await;
        assert_eq!((got.status, got.cache.as_str()), (200, expected));
        assert_eq!(got.header("content-encoding"), "gzip");
        assert!(
            got.header("vary")
                .to_ascii_lowercase()
                .contains("accept-encoding")
        );
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&got.body[..])
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, text);
    }
    let identity = get(&edge.daemon, "/page.txt", &[]).await;
    assert_eq!(
        (identity.cache.as_str(), identity.header("content-encoding")),
        ("HIT", "")
    );
    assert_eq!(identity.body, text.as_bytes());
    // A range is cut from the cached identity object and never compressed.
    let range = get(
        &edge.daemon,
        "/page.txt",
        &[("accept-encoding", "gzip"), ("range", "bytes=10-29")],
    )
    .await;
    assert_eq!(
        (
            range.status,
            range.cache.as_str(),
            range.header("content-encoding")
        ),
        (206, "HIT", "")
    );
    assert_eq!(&range.body[..], &text.as_bytes()[10..30]);
    assert_eq!(origin.count("/page.txt").await, 1);
}
