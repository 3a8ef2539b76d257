//! Fan-out to the fleet: purge on every edge, node health, stats aggregation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::support::{TestDir, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn purge_fans_out_to_every_edge_with_per_edge_results() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a", "shield"], false, real::CACHEABLE_HTML).await;
    let cp = &real.cp;
    let edges = ["edge-a", "shield"];

    // Both edges cache the tagged pages.
    for edge in edges {
        for path in ["/index.html", "/about.html"] {
            assert_eq!(real.fetch(edge, path).await, (200, "MISS".to_owned()));
            assert_eq!(real.fetch(edge, path).await, (200, "HIT".to_owned()));
        }
    }

    // By tag: every edge drops both pages and says how many it purged.
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/purge",
            Some(OPERATOR),
            Some(json!({"tag": "html"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    let results = body["results"].as_array().unwrap();
    let mut purged_on: Vec<&str> = results
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    purged_on.sort();
    assert_eq!(purged_on, ["edge-a", "shield"]);
    for result in results {
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["purged"], 2, "{result}");
    }
    for edge in edges {
        for path in ["/index.html", "/about.html"] {
            assert_eq!(
                real.fetch(edge, path).await,
                (200, "MISS".to_owned()),
                "{edge} {path} after the purge"
            );
            // Stored again (a hit proves the write finished) for the purges below.
            assert_eq!(real.fetch(edge, path).await, (200, "HIT".to_owned()));
        }
    }

    // By URL, prefix and everything: each edge answers for itself.
    for (request, purged) in [
        (json!({"url": "/index.html"}), 1),
        (json!({"prefix": "/about"}), 1),
        (json!({"all": true}), 0),
    ] {
        let (status, body) = cp
            .call(
                Method::POST,
                "/v1/purge",
                Some(OPERATOR),
                Some(request.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{request}: {body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        for result in results {
            assert_eq!(result["ok"], true, "{request}: {result}");
            assert_eq!(result["purged"], purged, "{request}: {result}");
        }
    }

    // Soft: every edge keeps the page, marked stale; the next answer is served stale
    // (the default stale-while-revalidate) or revalidated, never refetched whole.
    for edge in edges {
        assert_eq!(real.fetch(edge, "/index.html").await.1, "MISS", "{edge}");
        assert_eq!(real.fetch(edge, "/index.html").await.1, "HIT", "{edge}");
    }
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/purge",
            Some(OPERATOR),
            Some(json!({"url": "/index.html", "soft": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for result in body["results"].as_array().unwrap() {
        assert_eq!(
            (&result["ok"], &result["purged"]),
            (&json!(true), &json!(1)),
            "{result}"
        );
    }
    for edge in edges {
        let (_, how) = real.fetch(edge, "/index.html").await;
        assert!(
            matches!(how.as_str(), "STALE" | "REVALIDATED"),
            "{edge}: {how}"
        );
        let stats = real.edge_stats(edge).await;
        assert_eq!(stats.cache.marked_stale, 1, "{edge}");
    }
    // Cold again for what follows.
    let (status, _) = cp
        .call(
            Method::POST,
            "/v1/purge",
            Some(OPERATOR),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bad requests never reach an edge.
    for request in [
        json!({}),
        json!({"url": "/a", "tag": "x"}),
        json!({"all": false}),
        json!({"url": "a"}),
    ] {
        let (status, body) = cp
            .call(Method::POST, "/v1/purge", Some(OPERATOR), Some(request))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_purge",
        );
    }
    for request in [
        json!({"everything": true}),
        json!({"all": true, "soft": "yes"}),
    ] {
        let (status, body) = cp
            .call(Method::POST, "/v1/purge", Some(OPERATOR), Some(request))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
    }

    // One edge down, one failing: reported per edge, 207, the healthy ones still purged.
    // The failing edge is a stand-in: a real edge has no way to be made to answer 500
    // to a purge, and this is the control plane's handling of such an answer.
    let broken = standins::broken_edge_admin("edge-broken").await;
    let down = standins::closed_port();
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let v2 = with_edges(
        &v1,
        &[
            ("edge-down", down.to_string()),
            ("edge-broken", broken.to_string()),
        ],
    );
    assert_eq!(cp.put_config(&v2).await.0, StatusCode::OK);
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "HIT");
    let started = Instant::now();
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/purge",
            Some(OPERATOR),
            Some(json!({"tag": "html"})),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "purge waited {:?}",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["ok"], false);
    let by_node: BTreeMap<String, Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["node"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    assert_eq!(by_node.len(), 4, "{body}");
    assert_eq!(by_node["edge-a"]["ok"], true);
    assert_eq!(by_node["edge-a"]["purged"], 1);
    assert_eq!(by_node["shield"]["ok"], true);
    assert_eq!(by_node["shield"]["purged"], 0);
    assert_eq!(by_node["edge-broken"]["ok"], false);
    assert_eq!(by_node["edge-broken"]["status"], 500);
    assert_eq!(by_node["edge-broken"]["error"], "disk on fire");
    assert_eq!(by_node["edge-down"]["ok"], false);
    assert!(
        by_node["edge-down"]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{body}"
    );
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_listed_with_health_and_down_nodes_reported_quickly() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-up"], true, "").await;
    let cp = &real.cp;
    // Nodes that are not running: one that accepts and never answers, one whose port
    // is closed, and one on port 0 that never reported its address.
    let hung = standins::black_hole().await;
    let down = standins::closed_port();
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let v2 = with_edges(
        &v1,
        &[
            ("edge-hung", hung.to_string()),
            ("edge-down", down.to_string()),
            ("edge-idle", "127.0.0.1:0".to_owned()),
        ],
    );
    assert_eq!(cp.put_config(&v2).await.0, StatusCode::OK);
    let started = Instant::now();
    let (status, list) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    // Probes run concurrently with a short timeout: one hung node does not add up.
    assert!(took < Duration::from_secs(5), "listing took {took:?}");
    let nodes: BTreeMap<String, Value> = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_owned(), n.clone()))
        .collect();
    assert_eq!(nodes.len(), 7, "{list}");
    assert_eq!(nodes["control"]["health"], "up");
    assert_eq!(nodes["control"]["role"], "control-plane");
    assert_eq!(nodes["control"]["config_version"], 2);
    for name in ["edge-up", "origin-1", "sandbox"] {
        assert_eq!(nodes[name]["health"], "up", "{name}: {list}");
        assert_eq!(nodes[name]["region"], "local");
    }
    assert_eq!(nodes["edge-up"]["role"], "edge");
    assert_eq!(nodes["sandbox"]["role"], "sandbox");
    // Edges and origins say how long they have been up.
    for name in ["edge-up", "origin-1"] {
        assert!(
            nodes[name]["uptime_ms"].as_u64().is_some(),
            "{name}: {}",
            nodes[name]
        );
    }
    assert_eq!(nodes["edge-hung"]["health"], "down");
    assert_eq!(nodes["edge-hung"]["health_error"], "timed out");
    assert_eq!(nodes["edge-down"]["health"], "down");
    // A port-0 listener nobody reported: unknown, with no made-up address.
    assert_eq!(nodes["edge-idle"]["health"], "unknown");
    assert_eq!(nodes["edge-idle"]["listeners"][0]["addr"], Value::Null);
    let admin = nodes["edge-up"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["service"] == "admin")
        .unwrap()
        .clone();
    assert_eq!(admin["url"], real.edge("edge-up").url("admin"));

    // Drain: forwarded to the real edge's admin; its healthz turns 503 and the
    // listing says draining, while it keeps serving.
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/nodes/edge-up/drain",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"node": "edge-up", "draining": true}));
    let health = client()
        .get(format!("{}/healthz", real.edge("edge-up").url("admin")))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, list) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let edge_up = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "edge-up")
        .unwrap();
    assert_eq!(edge_up["health"], "draining");
    assert_eq!(real.fetch("edge-up", "/index.html").await.0, 200);
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/nodes/edge-down/drain",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, "node_unreachable");
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/nodes/origin-1/drain",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "not_an_edge");
    let (status, body) = cp
        .call(Method::POST, "/v1/nodes/ghost/drain", Some(OPERATOR), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_aggregate_real_edges_and_sandbox_and_list_the_unreachable() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a", "edge-b"], true, real::CACHEABLE_HTML).await;
    let cp = &real.cp;
    // Traffic: a miss then hits on edge-a, a miss on edge-b; one job on the sandbox.
    assert_eq!(
        real.fetch("edge-a", "/index.html").await,
        (200, "MISS".to_owned())
    );
    assert_eq!(
        real.fetch("edge-a", "/index.html").await,
        (200, "HIT".to_owned())
    );
    assert_eq!(
        real.fetch("edge-a", "/index.html").await,
        (200, "HIT".to_owned())
    );
    assert_eq!(
        real.fetch("edge-b", "/about.html").await,
        (200, "MISS".to_owned())
    );
    assert_eq!(real.fetch("edge-b", "/missing.html").await.0, 404);
    let (status, run) = cp
        .call(
            Method::POST,
            "/v1/run",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "print('hi')"})),
        )
        .await;
    assert_eq!(
        (status, run["stdout"].clone()),
        (StatusCode::OK, json!("hi\n")),
        "{run}"
    );
    // An edge that is down is listed, not waited on.
    let down = standins::closed_port();
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    assert_eq!(
        cp.put_config(&with_edges(&v1, &[("edge-down", down.to_string())]))
            .await
            .0,
        StatusCode::OK
    );

    // An edge counts a request once its response has gone out, which may be just after
    // the client read it.
    let stats = eventually("every request counted", Duration::from_secs(20), || async {
        let (status, stats) = cp.get("/v1/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        (stats["edges"]["requests"]["total"] == 5).then_some(stats)
    })
    .await;
    assert_eq!(stats["edges"]["reporting"], 2, "{stats}");
    let a = &stats["per_node"]["edge-a"];
    let b = &stats["per_node"]["edge-b"];
    assert_eq!(a["node"], "edge-a");
    assert_eq!(b["node"], "edge-b");
    // The sums are the sums of what the real edges reported, in their own field names.
    assert_eq!(a["requests"]["total"], 3, "{a}");
    assert_eq!(b["requests"]["total"], 2, "{b}");
    assert_eq!(stats["edges"]["requests"]["total"], 5);
    assert_eq!(stats["edges"]["requests"]["2xx"], 4);
    assert_eq!(stats["edges"]["requests"]["4xx"], 1);
    let bytes = a["bytes_sent"].as_u64().unwrap() + b["bytes_sent"].as_u64().unwrap();
    assert!(bytes > 0);
    assert_eq!(stats["edges"]["bytes_sent"], bytes);
    let l1 = |doc: &Value, field: &str| doc["cache"]["l1"][field].as_u64().unwrap();
    let (hits, misses) = (
        l1(a, "hits") + l1(b, "hits"),
        l1(a, "misses") + l1(b, "misses"),
    );
    assert_eq!(hits, 2, "{a}");
    assert_eq!(stats["edges"]["cache"]["l1"]["hits"], hits);
    assert_eq!(stats["edges"]["cache"]["l1"]["misses"], misses);
    assert_eq!(
        stats["edges"]["hit_ratio"]["l1"].as_f64().unwrap(),
        hits as f64 / (hits + misses) as f64
    );
    assert!(
        stats["edges"]["hit_ratio"]["l2"].as_f64().is_some(),
        "{stats}"
    );
    // Jobs by state, from the real sandbox.
    assert_eq!(stats["jobs"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["jobs"]["running"], 0);
    let unreachable = stats["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1);
    assert_eq!(unreachable[0]["node"], "edge-down");
}
