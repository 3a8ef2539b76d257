//! HTTPS: the generated local CA, SNI selection, certificates swapped on disk and by
//! reload without a restart, bad certificates rejected, HTTP/2 by ALPN.

use std::path::Path;

use super::{Deploy, SECOND, TestOrigin, reload};
use crate::support::{Daemon, TestCa, TestDir, eventually, tls_client};

async fn ok(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}

#[tokio::test]
async fn generated_ca_is_trusted_reused_and_serves_http2() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let deploy = Deploy::local(&[&origin], "");
    let (mut edge, config) = deploy.start(&dir);
    let ca_path = dir.path().join("data/nodes/edge/tls/ca.pem");
    let ca = std::fs::read(&ca_path).expect("the CA was generated in the node's data dir");
    assert!(edge.logs().contains("ca.pem"), "the CA path is logged");
    let https = edge.addr("https");
    let client = tls_client(&ca, &["localhost"], https);
    let response = client
        .get(format!("https://localhost:{}/hello", https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose h2"
    );
    assert_eq!(response.headers()["via"], "2 edgebox-edge");
    assert_eq!(response.text().await.unwrap(), "origin o0 /hello");
    // Forwarding headers say the client came over TLS.
    let seen: serde_json::Value = client
        .get(format!("https://localhost:{}/echo", https.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    // Compression over HTTP/2 (no chunked framing there).
    let response = client
        .get(format!("https://localhost:{}/text/30000", https.port()))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert!(response.headers().get("transfer-encoding").is_none());
    let compressed = response.bytes().await.unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain, super::origin::text_body(30000));
    // By IP address too (the certificate names 127.0.0.1).
    let by_ip = tls_client(&ca, &[], https);
    assert!(ok(&by_ip, &format!("https://127.0.0.1:{}/ip", https.port())).await);

    // HTTP/1.1 still works when the client only speaks it.
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve("localhost", https)
        .build()
        .unwrap();
    let response = h1
        .get(format!("https://localhost:{}/h1", https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);

    // A restart reuses the CA instead of generating a new one.
    assert!(edge.terminate(10 * SECOND).success());
    let edge = Daemon::start("edge", &config, "edge", &["https"]);
    assert_eq!(std::fs::read(&ca_path).unwrap(), ca);
    let client = tls_client(&ca, &["localhost"], edge.addr("https"));
    assert!(
        ok(
            &client,
            &format!("https://localhost:{}/again", edge.addr("https").port())
        )
        .await
    );
}

fn write_pair(dir: &Path, name: &str, pair: &(String, String)) {
    std::fs::write(dir.join(format!("{name}.pem")), &pair.0).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), &pair.1).unwrap();
}

#[tokio::test]
async fn sni_picks_the_certificate_and_swaps_take_effect_without_restart() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (ca_a, ca_b) = (TestCa::new("CA A"), TestCa::new("CA B"));
    write_pair(dir.path(), "a", &ca_a.leaf(&["a.test", "www.a.test"]));
    write_pair(dir.path(), "b", &ca_b.leaf(&["b.test", "*.b.test"]));
    let tls = "[tls]\ncertificates = [\n  { names = [\"a.test\", \"www.a.test\"], cert = \"a.pem\", key = \"a-key.pem\" },\n  { names = [\"b.test\", \"*.b.test\"], cert = \"b.pem\", key = \"b-key.pem\" },\n]\n";
    let deploy = Deploy::local(&[&origin], "").extra(tls);
    let (edge, _) = deploy.start(&dir);
    let https = edge.addr("https");
    let port = https.port();
    let names = ["a.test", "www.a.test", "b.test", "x.b.test"];
    let trust_a = tls_client(&ca_a.pem(), &names, https);
    let trust_b = tls_client(&ca_b.pem(), &names, https);
    assert!(ok(&trust_a, &format!("https://a.test:{port}/")).await);
    assert!(ok(&trust_a, &format!("https://www.a.test:{port}/")).await);
    assert!(
        !ok(&trust_a, &format!("https://b.test:{port}/")).await,
        "b.test is served B's certificate"
    );
    assert!(ok(&trust_b, &format!("https://b.test:{port}/")).await);
    assert!(
        ok(&trust_b, &format!("https://x.b.test:{port}/")).await,
        "wildcard name"
    );
    assert!(!ok(&trust_b, &format!("https://a.test:{port}/")).await);

    // Swap a.test's files for a certificate from CA B: served without a restart.
    write_pair(dir.path(), "a", &ca_b.leaf(&["a.test", "www.a.test"]));
    eventually("a.test served the new certificate", 10 * SECOND, || async {
        let fresh = tls_client(&ca_b.pem(), &names, https);
        ok(&fresh, &format!("https://a.test:{port}/"))
            .await
            .then_some(())
    })
    .await;

    // A broken file on disk is rejected; the previous certificate keeps serving.
    std::fs::write(dir.path().join("a.pem"), "not a certificate").unwrap();
    eventually(
        "the broken certificate was noticed",
        10 * SECOND,
        || async { edge.logs().contains("keeping the old ones").then_some(()) },
    )
    .await;
    let fresh = tls_client(&ca_b.pem(), &names, https);
    assert!(ok(&fresh, &format!("https://a.test:{port}/")).await);

    // A reload naming a missing key is rejected with 422 and changes nothing.
    // (The key file exists, so it is the edge's own certificate check that refuses it.)
    std::fs::write(
        dir.path().join("garbage-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = "[tls]\ncertificates = [{ names = [\"a.test\"], cert = \"b.pem\", key = \"garbage-key.pem\" }]\n";
    let bad = Deploy::local(&[&origin], "").extra(missing);
    let (status, body) = reload(&edge, super::balancing::full(&bad.toml())).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        ok(
            &tls_client(&ca_b.pem(), &names, https),
            &format!("https://b.test:{port}/")
        )
        .await
    );
}
