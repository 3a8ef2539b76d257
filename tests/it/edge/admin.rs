//! The admin listener and the process life cycle: health, stats, metrics, drain, purge
//! placeholder, SIGTERM with requests in flight.

use std::time::Duration;

use super::{Deploy, SECOND, TestOrigin, stats};
use crate::support::{TestDir, client};

#[tokio::test]
async fn healthz_stats_metrics_and_drain() {
    let origin = TestOrigin::start("o0");
    let dir = TestDir::new();
    let (edge, _) = Deploy::local(&[&origin], "").start(&dir);
    let client = client();
    let admin = edge.url("admin");
    let health: serde_json::Value = client
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node"], "edge");

    for path in ["/a", "/b", "/status/404"] {
        client
            .get(format!("{}{path}", edge.url("http")))
            .send()
            .await
            .unwrap();
    }
    let body = stats(&edge).await;
    assert_eq!(body.requests.total, 3, "{body:?}");
    assert_eq!(body.requests.success, 2);
    assert_eq!(body.requests.client_error, 1);
    assert!(body.bytes_sent > 0);
    assert_eq!(body.origins[0].address, origin.addr.to_string());
    assert!(body.origins[0].healthy);
    assert!(body.origins[0].ewma_ms.is_some());
    assert_eq!(body.config_version, 1);

    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgebox_edge_requests_total{node=\"edge\",class=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("edgebox_edge_origin_healthy"), "{metrics}");

    let purge = client
        .post(format!("{admin}/purge"))
        .body("{\"all\":true}")
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let purged: serde_json::Value = purge.json().await.unwrap();
    assert!(purged["purged"].is_u64(), "{purged}");
    let missing = client.get(format!("{admin}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let drain = client.post(format!("{admin}/drain")).send().await.unwrap();
    assert_eq!(drain.status(), 200);
    let health = client.get(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    // Draining keeps serving.
    let still = client
        .get(format!("{}/c", edge.url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let origin = TestOrigin::start("o0");
    origin.set_delay(Duration::from_millis(800));
    let dir = TestDir::new();
    let (mut edge, _) = Deploy::local(&[&origin], "").start(&dir);
    let url = format!("{}/slow", edge.url("http"));
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    crate::support::eventually("the request reached the origin", 10 * SECOND, || async {
        (origin.requests() == 1).then_some(())
    })
    .await;
    let status = tokio::task::spawn_blocking(move || {
        let status = edge.terminate(15 * SECOND);
        (status, edge)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit status {:?}\n{}",
        status.0,
        status.1.logs()
    );
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
}
