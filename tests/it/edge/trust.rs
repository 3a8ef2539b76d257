//! What a client cannot make the edge believe: a host it does not serve, headers outside
//! the cache key that would change a cached answer, a cookie for everyone, or that it is
//! a child edge (to skip the simulated latency); and what a parent cannot make it do
//! with a hostile `Server-Timing`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Deploy, NEAR_FAR_80MS, TestOrigin, sim_ms};
use crate::support::{Daemon, TestDir, client};

/// Sends `request` raw and returns (status, head, body) of the answer.
pub async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

const CACHE_ALL: &str = "[[cache.rules]]\npattern = \"/**\"\nttl = \"60s\"\n";

#[tokio::test]
async fn malformed_hosts_get_400_json_and_nothing_is_forwarded() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").extra(CACHE_ALL).start(&dir);
    let addr = edge.addr("http");
    for host in [
        "127.0.0.1/assets",
        "127.0.0.1\\assets",
        "127.0.0.1?x=1",
        "127.0.0.1#x",
        "127.0.0.1:99999",
        "[::1",
        "a..b",
        "caf\u{e9}.example",
    ] {
        let (status, head, body) = raw(addr, &get("/index.html", host, "")).await;
        assert_eq!(status, 400, "{host:?}: {head}\n{body}");
        assert!(
            head.contains("content-type: application/json"),
            "{host:?}: {head}"
        );
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "bad_host", "{host:?}: {body}");
    }
    // pingora's own parser refuses a Host with user info before any hook runs (its 400
    // has no body); either way it is refused and not forwarded.
    let (status, _, _) = raw(addr, &get("/index.html", "user@127.0.0.1", "")).await;
    assert_eq!(status, 400);
    let (status, _, body) = raw(
        addr,
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "two Host headers: {body}");
    let (status, _, body) = raw(
        addr,
        "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "absolute target naming another host: {body}");
    // (pingora's parser may refuse it first, with an empty body)
    assert!(
        body.is_empty() || body.contains("conflicting_host"),
        "{body}"
    );
    let (status, _, body) = raw(addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "HTTP/1.1 without Host: {body}");
    assert_eq!(origin.requests(), 0, "nothing refused was forwarded");
    // The edge keeps serving, also absolute-form targets that agree with their Host
    // (sent upstream in origin-form).
    let (status, _, _) = raw(addr, &get("/ok", "localhost", "")).await;
    assert_eq!(status, 200);
    let (status, _, body) = raw(
        addr,
        "GET http://localhost/echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["host"], "localhost", "{seen}");
}

#[tokio::test]
async fn the_upstream_sees_only_keyed_inputs() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").start(&dir);
    let addr = edge.addr("http");
    let hostile = "X-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\n\
                   X-Original-URL: /admin\r\nX-HTTP-Method-Override: DELETE\r\n\
                   X-Edgebox-Region: local\r\nX-Edgebox-Hop: edge\r\n\
                   Accept-Encoding: gzip, x-made-up, BR;q=1.0\r\n";
    let (status, _, body) = raw(addr, &get("/echo", "LocalHost.:8080", hostile)).await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["host"], "localhost",
        "the normalised, keyed host: {seen}"
    );
    assert_eq!(seen["accept-encoding"], "br, gzip", "{seen}");
    for name in [
        "x-forwarded-host",
        "forwarded",
        "x-original-url",
        "x-http-method-override",
        "x-edgebox-region",
        "x-edgebox-hop",
    ] {
        assert!(seen.get(name).is_none(), "{name} forwarded: {seen}");
    }
    // A host the edge does not serve is served as the default host (the embedded
    // default's policy), so it cannot start a cache space of its own.
    let (status, _, body) = raw(addr, &get("/echo", "other.example", "")).await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["host"], "localhost", "{seen}");
    let (_, _, body) = raw(addr, &get("/echo", "[0:0::1]:1", "")).await;
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["host"], "[::1]", "{seen}");
}

#[tokio::test]
async fn unknown_hosts_get_421_when_the_policy_rejects_them() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let hosts = "[edge.hosts]\nnames = [\"www.example\", \"*.cdn.example\", \"127.0.0.1\"]\nunknown = \"reject\"\n";
    let (edge, _) = Deploy::local(&[&origin], "").extra(hosts).start(&dir);
    let addr = edge.addr("http");
    for host in [
        "WWW.example:443",
        "a.cdn.example",
        "x.y.cdn.example",
        "127.0.0.1:9",
    ] {
        let (status, _, body) = raw(addr, &get("/served", host, "")).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    for host in ["example", "cdn.example", "evil-cdn.example", "localhost"] {
        let (status, head, body) = raw(addr, &get("/served", host, "")).await;
        assert_eq!(status, 421, "{host}: {head}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "unknown_host", "{body}");
    }
    assert_eq!(origin.requests_for("/served"), 4);
}

#[tokio::test]
async fn responses_with_set_cookie_are_never_stored_with_the_cookie() {
    let origin = TestOrigin::start("o0");
    // By default such responses are not stored at all, even `public` ones.
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").start(&dir);
    for _ in 0..2 {
        let response = client()
            .get(format!("{}/cookie", edge.url("http")))
            .send()
            .await
            .unwrap();
        assert_ne!(response.headers()["x-cache"], "HIT");
        assert_eq!(response.headers()["set-cookie"], "session=for-one-client");
    }
    assert_eq!(origin.requests_for("/cookie"), 2);

    // With the switch, a `public` one is stored, without the cookie.
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "")
        .extra("[cache]\nstrip_set_cookie = true\n")
        .start(&dir);
    let url = format!("{}/cookie", edge.url("http"));
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["set-cookie"], "session=for-one-client");
    let second = client().get(&url).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert!(second.headers().get("set-cookie").is_none(), "{second:?}");
    assert_eq!(origin.requests_for("/cookie"), 1);
}

#[tokio::test]
async fn a_client_claiming_to_be_an_edge_still_pays_the_simulated_client_hop() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let regions = NEAR_FAR_80MS;
    let deploy = Deploy {
        regions,
        edge_region: "near",
        origins: vec![(&origin, "near")],
        group: "",
        extra: "",
    };
    let (edge, _) = deploy.start(&dir);
    // The hop key the edge generated for the deployment: private to its user.
    let key = dir.path().join("data/secrets/hop-key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    assert!(std::fs::read_to_string(&key).unwrap().trim().len() >= 32);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!("v1;t={now};mac={}", "0".repeat(64));
    for hop in ["edge", forged.as_str(), "v1;t=1;mac=zz"] {
        let response = client()
            .get(format!("{}/spoof", edge.url("http")))
            .header("x-edgebox-region", "far")
            .header("x-edgebox-hop", hop)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let timing = response.headers()["server-timing"]
            .to_str()
            .unwrap()
            .to_owned();
        // far -> near client hop (80 ms) plus near -> near origin hop (2 ms).
        assert!((sim_ms(&timing) - 82.0).abs() < 1.0, "{hop}: {timing}");
    }
}

#[tokio::test]
async fn a_parents_hostile_server_timing_is_ignored_not_a_panic() {
    // The child's "parent" is a plain HTTP server that reports whatever simulated time
    // the request asks for in `x-test-server-timing`.
    let parent = TestOrigin::start("parent");
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[regions.local]\n\n[cache]\nenabled = false\n\n\
         [[nodes]]\nname = \"child\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n\
         admin = \"127.0.0.1:0\"\norigin_group = \"g\"\nparent = \"shield\"\n\n\
         [[nodes]]\nname = \"shield\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"{}\"\n\
         admin = \"127.0.0.1:1\"\norigin_group = \"g\"\n\n\
         [[nodes]]\nname = \"o0\"\nrole = \"origin\"\nregion = \"local\"\nlisten = \"{}\"\n\n\
         [origin_groups.g]\nmembers = [{{ node = \"o0\" }}]\n",
        parent.addr, origin.addr
    ));
    let child = Daemon::start("edge", &config, "child", &["http"]);
    for value in [
        "sim;dur=-5",
        "sim;dur=NaN",
        "sim;dur=inf",
        "sim;dur=-inf",
        "sim;dur=1e308",
        "sim;dur=18446744073709551616000",
        "sim;dur=",
    ] {
        let response = client()
            .get(format!("{}/timed", child.url("http")))
            .header("x-test-server-timing", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{value}");
        let timing = response.headers()["server-timing"]
            .to_str()
            .unwrap()
            .to_owned();
        let sim = sim_ms(&timing);
        assert!(
            sim.is_finite() && (0.0..1000.0).contains(&sim),
            "{value}: {timing}"
        );
    }
    // The parent saw signed hop headers, never a client's.
    let seen = parent.headers_seen();
    assert_eq!(seen.len(), 7);
    assert!(
        seen.iter()
            .all(|h| h["x-edgebox-hop"].to_str().unwrap().starts_with("v1;t="))
    );
}
