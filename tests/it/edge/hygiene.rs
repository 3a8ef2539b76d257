//! What the edge does to requests and responses on the way through: forwarding
//! headers, request ids, hop-by-hop stripping, limits, smuggling, compression and the
//! latency simulation.

use std::io::Read;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::origin::text_body;
use super::{Deploy, NEAR_FAR_80MS, TestOrigin, sim_ms};
use crate::support::{TestDir, client};

#[tokio::test]
async fn forwarding_headers_request_id_and_hop_by_hop() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").start(&dir);
    let response = client()
        .get(format!("{}/echo", edge.url("http")))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!id.is_empty());
    assert_eq!(response.headers()["via"], "1.1 edgebox-edge");
    assert!(
        response.headers()["server-timing"]
            .to_str()
            .unwrap()
            .contains("total;dur=")
    );
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        seen["x-request-id"],
        id.as_str(),
        "the generated id went upstream"
    );
    assert_eq!(seen["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["via"], "1.1 edgebox-edge");
    assert!(
        seen.get("x-private").is_none(),
        "headers named by Connection are stripped: {seen}"
    );
    assert!(seen.get("keep-alive").is_none(), "{seen}");

    // A client's own request id is kept.
    let response = client()
        .get(format!("{}/echo", edge.url("http")))
        .header("x-request-id", "client-chosen-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-1");
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["x-request-id"], "client-chosen-1");
}

const LIMITS: &str = "[edge.limits]\nmax_header_size = \"4KiB\"\nmax_body_size = \"64KiB\"\nclient_timeout = \"1s\"\n";

#[tokio::test]
async fn oversized_headers_431_and_bodies_413() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").extra(LIMITS).start(&dir);
    let client = client();
    let response = client
        .get(format!("{}/big-header", edge.url("http")))
        .header("x-big", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "header_too_large");

    let response = client
        .post(format!("{}/upload", edge.url("http")))
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");

    // Chunked, so the size is only known while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b'y'; 16 * 1024])).collect();
    let response = client
        .post(format!("{}/upload", edge.url("http")))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    } // else: the edge closed the connection mid-upload, also a refusal.
    assert_eq!(origin.requests_for("/big-header"), 0);

    // Within the limits, everything passes.
    let response = client
        .post(format!("{}/upload", edge.url("http")))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends raw bytes and returns everything the edge answers until it closes.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn smuggling_attempts_are_never_forwarded_ambiguously() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").start(&dir);
    // CL.TE: Content-Length says the body is the whole tail, chunked says it ends at 0.
    let attack = b"POST /echo HTTP/1.1\r\nHost: edge\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: edge\r\n\r\n";
    let answer = raw(edge.addr("http"), attack).await;
    assert_eq!(
        origin.requests_for("/smuggled"),
        0,
        "edge answered: {answer}"
    );
    for headers in origin.headers_seen() {
        assert!(
            !(headers.contains_key("content-length") && headers.contains_key("transfer-encoding")),
            "a request with both framings reached the origin: {headers:?}"
        );
    }
    // Two Content-Length values that disagree: rejected outright.
    let answer = raw(
        edge.addr("http"),
        b"POST /echo HTTP/1.1\r\nHost: edge\r\nContent-Length: 3\r\nContent-Length: 7\r\n\r\nabcdefg",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Garbage is a 400 (or a closed connection), never a crash.
    let answer = raw(edge.addr("http"), b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let ok = client()
        .get(format!("{}/after", edge.url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the edge still serves");
}

#[tokio::test]
async fn slow_client_body_times_out_with_408() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").extra(LIMITS).start(&dir);
    let started = Instant::now();
    let answer = raw(
        edge.addr("http"),
        b"POST /slow HTTP/1.1\r\nHost: edge\r\nContent-Length: 100\r\n\r\nonly-a-little",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("client_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout fired"
    );
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::stream::decode_all(bytes).unwrap(),
        other => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test]
async fn compression_round_trips_for_each_algorithm() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let compression = "[edge.compression]\nenabled = true\nmin_size = \"1KiB\"\nalgorithms = [\"zstd\", \"br\", \"gzip\"]\ncontent_types = [\"text/*\", \"application/json\"]\n";
    let (edge, _) = Deploy::local(&[&origin], "").extra(compression).start(&dir);
    let client = client();
    let url = format!("{}/text/20000", edge.url("http"));
    for (accept, expected) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip, br, zstd", "zstd"),
        ("zstd;q=0, br;q=0, *;q=0.1", "gzip"),
    ] {
        let response = client
            .get(&url)
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-encoding"], expected,
            "Accept-Encoding: {accept}"
        );
        assert!(
            headers["vary"]
                .to_str()
                .unwrap()
                .contains("Accept-Encoding")
        );
        let body = response.bytes().await.unwrap();
        assert!(
            body.len() < 20000 / 4,
            "{expected} compressed {} bytes",
            body.len()
        );
        assert_eq!(
            decode(expected, &body),
            text_body(20000),
            "{expected} round-trips"
        );
    }
    // HTTP/1.1 keep-alive survives compressed (chunked) responses: same client again.
    let plain = client
        .get(&url)
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "Accept-Encoding");
    assert_eq!(plain.bytes().await.unwrap().len(), 20000);
    // Below min_size: untouched.
    let small = client
        .get(format!("{}/text/100", edge.url("http")))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
    // Already encoded by the origin: passed through byte for byte.
    let encoded = client
        .get(format!("{}/encoded", edge.url("http")))
        .header("accept-encoding", "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.headers()["content-encoding"], "gzip");
    assert_eq!(
        decode("gzip", &encoded.bytes().await.unwrap()),
        text_body(4096)
    );
}

#[tokio::test]
async fn simulated_latency_shows_in_server_timing_and_in_measured_time() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let regions = NEAR_FAR_80MS;
    let deploy = Deploy {
        regions,
        edge_region: "near",
        origins: vec![(&origin, "far")],
        group: "",
        extra: "",
    };
    let (edge, _) = deploy.start(&dir);
    let client = client();
    let url = format!("{}/sim", edge.url("http"));
    // Client in the edge's region: 2 ms to the edge, 80 ms edge -> far origin.
    let started = Instant::now();
    let response = client.get(&url).send().await.unwrap();
    let elapsed = started.elapsed();
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let sim = sim_ms(&timing);
    assert!((sim - 82.0).abs() < 1.0, "{timing}");
    assert!(timing.contains("origin;dur="), "{timing}");
    assert!(elapsed >= Duration::from_millis(82), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(82 + 1500), "{elapsed:?}");
    // Client in the far region: 80 ms more on the client hop.
    let started = Instant::now();
    let response = client
        .get(&url)
        .header("x-edgebox-region", "far")
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!((sim_ms(&timing) - 160.0).abs() < 1.0, "{timing}");
    assert!(elapsed >= Duration::from_millis(160), "{elapsed:?}");
}

#[tokio::test]
async fn disabled_simulation_adds_nothing() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").start(&dir);
    let response = client()
        .get(format!("{}/nosim", edge.url("http")))
        .header("x-edgebox-region", "local")
        .send()
        .await
        .unwrap();
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim_ms(&timing), 0.0, "{timing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_latency_through_a_parent_counts_each_hop_once() {
    let origin = TestOrigin::start("o0");
    // Client and child edge in `near`; shield and origin in `far`. The path is
    // client -> child (2 ms) -> shield (80 ms) -> origin (2 ms): 84 ms, each hop once.
    // Two copies of the deployment in two data dirs (as on two machines): they share
    // the hop key through the config, as such edges must.
    let network = "[edge]\nhop_key = \"test-hop-key-0123456789\"\n\n[regions.near]\n[regions.far]\n\n[latency]\nenabled = true\nintra_region = { rtt = \"2ms\", jitter = \"0ms\", loss = 0.0 }\n[[latency.links]]\nbetween = [\"near\", \"far\"]\nrtt = \"80ms\"\njitter = \"0ms\"\nloss = 0.0\n";
    let nodes = |shield_listen: &str, child_admin: &str, shield_admin: &str| {
        format!(
            "{network}\n[cache]\nenabled = false\n\n[[nodes]]\nname = \"child\"\nrole = \"edge\"\nregion = \"near\"\nlisten = \"127.0.0.1:0\"\nadmin = \"{child_admin}\"\norigin_group = \"g\"\nparent = \"shield\"\n\n[[nodes]]\nname = \"shield\"\nrole = \"edge\"\nregion = \"far\"\nlisten = \"{shield_listen}\"\nadmin = \"{shield_admin}\"\norigin_group = \"g\"\n\n[[nodes]]\nname = \"o0\"\nrole = \"origin\"\nregion = \"far\"\nlisten = \"{}\"\n\n[origin_groups.g]\nmembers = [{{ node = \"o0\" }}]\n",
            origin.addr
        )
    };
    let shield_dir = TestDir::new();
    let shield_config = shield_dir.config(&nodes("127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:0"));
    let shield = crate::support::Daemon::start("edge", &shield_config, "shield", &["http"]);
    let child_dir = TestDir::new();
    let shield_http = shield.addr("http").to_string();
    let child_config = child_dir.config(&nodes(&shield_http, "127.0.0.1:0", "127.0.0.1:1"));
    let child = crate::support::Daemon::start("edge", &child_config, "child", &["http"]);

    let started = Instant::now();
    let response = client()
        .get(format!("{}/through-the-shield", child.url("http")))
        .header("x-edgebox-region", "near")
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    let timing = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let sim = sim_ms(&timing);
    assert!(
        (sim - 84.0).abs() < 2.0,
        "each simulated hop once: {timing}"
    );
    assert!(
        elapsed >= Duration::from_millis(84),
        "{elapsed:?} for {timing}"
    );
    assert_eq!(origin.headers_seen().len(), 1);
}

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_disconnected_after_client_timeout() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").extra(LIMITS).start(&dir);
    let mut stalled = tokio::net::TcpStream::connect(edge.addr("http"))
        .await
        .unwrap();
    stalled
        .write_all(b"GET /stalled HTTP/1.1\r\nHost: edge\r\nX-Half: ")
        .await
        .unwrap();
    // pingora's own default would hold this connection for 60 s; client_timeout is 1 s.
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the stalled connection is still open after 20 s"
    );
    assert_eq!(
        origin.requests_for("/stalled"),
        0,
        "nothing half-read is forwarded"
    );
    // Meanwhile the edge serves everyone else.
    let response = client()
        .get(format!("{}/after", edge.url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
