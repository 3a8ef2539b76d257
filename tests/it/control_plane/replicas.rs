//! The control plane on etcd: replicas serving one API from one store, node agents
//! failing over between them, writes racing across replicas while one is killed, and
//! an etcd that goes away (at start-up or later). Against a real etcd
//! (`support::etcd`), the real control plane, origin and edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::real::free_port;
use super::*;
use crate::support::etcd::Etcd;
use crate::support::{Daemon, TestDir, eventually};

/// Two control-plane replicas (`cp-a`, `cp-b`) on fixed free ports with the etcd
/// store, an origin on a fixed port and `edges` on port 0.
fn replicated(etcd: &Etcd, edges: &[&str]) -> String {
    let listed: Vec<(&str, String)> = edges
        .iter()
        .map(|name| (*name, "127.0.0.1:0".to_owned()))
        .collect();
    deployment(&listed, None, &etcd.store_section())
        .replacen(
            "[[nodes]]\nname = \"control\"\nrole = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n",
            &format!(
                "[[nodes]]\nname = \"cp-a\"\nrole = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:{}\"\n\n\
                 [[nodes]]\nname = \"cp-b\"\nrole = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:{}\"\n",
                free_port(),
                free_port()
            ),
            1,
        )
        .replacen(
            "role = \"origin\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"",
            &format!(
                "role = \"origin\"\nregion = \"local\"\nlisten = \"127.0.0.1:{}\"",
                free_port()
            ),
            1,
        )
}

fn replica(config: &Path, node: &str) -> Cp {
    Cp {
        daemon: Daemon::start("control-plane", config, node, &["api"]),
        http: client(),
        config: config.to_path_buf(),
    }
}

async fn healthz(cp: &Cp) -> Value {
    cp.call(Method::GET, "/healthz", None, None).await.1
}

async fn edge_health(edge: &Daemon) -> Value {
    client()
        .get(format!("{}/healthz", edge.url("admin")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `text` with one more origin rule, so that each version differs.
fn variant(text: &str, n: usize) -> String {
    format!("{text}\n# variant {n}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_serve_one_history_and_agents_fail_over_between_them() {
    let etcd = Etcd::start();
    let dir = TestDir::new();
    let config = dir.config(&replicated(&etcd, &["edge-1"]));
    let v1 = std::fs::read_to_string(&config).unwrap();
    let mut a = replica(&config, "cp-a");
    let mut b = replica(&config, "cp-b");
    let _origin = Daemon::start("origin", &config, "origin-1", &["http"]);
    let edge = Daemon::start("edge", &config, "edge-1", &["http", "admin"]);

    // One version 1, written by whichever replica came first; both serve it.
    for cp in [&a, &b] {
        let health = healthz(cp).await;
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(
            health["store"],
            json!({"backend": "etcd", "reachable": true})
        );
        let (_, current) = cp.get("/v1/config").await;
        assert_eq!(current["version"], 1, "{current}");
        assert_eq!(current["toml"], v1.as_str());
    }

    // A version written through one replica is served by the other at once (its
    // long polls are driven by etcd's watch), and the edge applies it.
    let (status, applied) = a.put_config(&variant(&v1, 2)).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied, json!({"version": 2, "changed": true}));
    eventually("cp-b serves v2", Duration::from_secs(10), || async {
        (b.get("/v1/config").await.1["version"] == 2).then_some(())
    })
    .await;
    // The edge's report reaches both replicas, whichever it was sent to.
    for cp in [&a, &b] {
        eventually(
            "edge-1 in sync with v2 on both replicas",
            Duration::from_secs(30),
            || async {
                let s = status_of(cp, "edge-1").await;
                (s["version"] == 2 && s["in_sync"] == true).then_some(())
            },
        )
        .await;
    }
    // Rollback through the other replica: a new version, the same history on both.
    let (status, applied) = b
        .call(Method::POST, "/v1/config/rollback/1", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["version"], 3);
    let history_b = b.get("/v1/config/history").await.1;
    let history_a = eventually(
        "cp-a has the rollback in its history",
        Duration::from_secs(10),
        || async {
            let history = a.get("/v1/config/history").await.1;
            (history["current_version"] == 3).then_some(history)
        },
    )
    .await;
    assert_eq!(history_a, history_b);
    assert_eq!(history_a["versions"][2]["source"], "rollback to 1");
    assert_eq!(a.get("/v1/config").await.1["toml"], v1.as_str());

    // A replica killed with SIGKILL loses nothing; the edge fails over to the other.
    let health = edge_health(&edge).await;
    let urls = health["control_plane"]["urls"].clone();
    assert_eq!(urls.as_array().unwrap().len(), 2, "{health}");
    a.daemon.kill();
    let (status, applied) = b.put_config(&variant(&v1, 4)).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["version"], 4);
    eventually(
        "edge-1 applied v4 through cp-b",
        Duration::from_secs(30),
        || async {
            let health = edge_health(&edge).await;
            (health["control_plane"]["applied_version"] == 4).then_some(())
        },
    )
    .await;
    let health = edge_health(&edge).await;
    assert_eq!(health["control_plane"]["connected"], true, "{health}");
    assert_eq!(
        health["control_plane"]["url"],
        b.daemon.url("api"),
        "{health}"
    );

    // Every replica gone: the edge keeps serving its last config, and says so.
    b.daemon.kill();
    let health = eventually(
        "the edge says it lost every replica",
        Duration::from_secs(30),
        || async {
            let health = edge_health(&edge).await;
            (health["control_plane"]["connected"] == false).then_some(health)
        },
    )
    .await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["control_plane"]["applied_version"], 4, "{health}");
    let response = client()
        .get(format!("{}/index.html", edge.url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A replica comes back (on the same address) with everything: the edge catches
    // up with a version written meanwhile, without a restart.
    a = replica(&config, "cp-a");
    let (_, history) = a.get("/v1/config/history").await;
    assert_eq!(history["current_version"], 4, "{history}");
    assert_eq!(history["versions"].as_array().unwrap().len(), 4);
    let (status, applied) = a.put_config(&variant(&v1, 5)).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["version"], 5);
    eventually(
        "edge-1 caught up with v5",
        Duration::from_secs(30),
        || async {
            let health = edge_health(&edge).await;
            (health["control_plane"]["applied_version"] == 5
                && health["control_plane"]["connected"] == true)
                .then_some(())
        },
    )
    .await;
    drop(b);
}

/// What became of one PUT.
enum Outcome {
    /// 200 with this version.
    Acknowledged(u64),
    /// The replica died with the request in flight: it may or may not have landed.
    Ambiguous,
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_puts_across_two_replicas_with_one_killed_lose_and_duplicate_nothing() {
    const PUTS: usize = 500;
    let etcd = Etcd::start();
    let dir = TestDir::new();
    let config = dir.config(&replicated(&etcd, &[]));
    let base = std::fs::read_to_string(&config).unwrap();
    let a = replica(&config, "cp-a");
    let b = replica(&config, "cp-b");
    let urls = [a.url("/v1/config"), b.url("/v1/config")];
    let b_config = b.config.clone();
    let b = Arc::new(std::sync::Mutex::new(Some(b)));

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let text_of = |i: usize| format!("{base}\n# put {i}\n");
    let mut tasks = Vec::new();
    for i in 0..PUTS {
        let http = http.clone();
        let urls = urls.clone();
        let text = text_of(i);
        let acknowledged = Arc::clone(&acknowledged);
        tasks.push(tokio::spawn(async move {
            // Spread across both replicas; a refused connection (the request never
            // left) goes to the other one, which is safe to retry.
            let mut target = i % 2;
            loop {
                let sent = http
                    .put(&urls[target])
                    .bearer_auth(OPERATOR)
                    .json(&json!({ "toml": text }))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == StatusCode::OK => {
                        let body: Value = response.json().await.unwrap();
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                        return (i, Outcome::Acknowledged(body["version"].as_u64().unwrap()));
                    }
                    Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                        // Refused before anything was written (store busy or away).
                        target = 1 - target;
                    }
                    Ok(response) => panic!(
                        "PUT {i}: {} {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    ),
                    Err(error) if error.is_connect() => target = 1 - target,
                    Err(_) => return (i, Outcome::Ambiguous),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // Mid-load, cp-b is killed with SIGKILL and started again on its address.
    eventually(
        "a fifth of the PUTs acknowledged",
        Duration::from_secs(120),
        || async { (acknowledged.load(Ordering::SeqCst) >= PUTS / 5).then_some(()) },
    )
    .await;
    let restarted = {
        let b = Arc::clone(&b);
        tokio::task::spawn_blocking(move || {
            let mut old = b.lock().unwrap().take().unwrap();
            old.daemon.kill();
            replica(&b_config, "cp-b")
        })
    };

    let mut outcomes = BTreeMap::new();
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        outcomes.insert(i, outcome);
    }
    let b = restarted.await.unwrap();

    // Both replicas agree on one history.
    let history = eventually(
        "both replicas show the same history",
        Duration::from_secs(30),
        || async {
            let (_, from_a) = a.get("/v1/config/history").await;
            let (_, from_b) = b.get("/v1/config/history").await;
            (from_a == from_b).then_some(from_a)
        },
    )
    .await;
    // A PUT whose replica died mid-request landed or did not: it is sent again only
    // if it is not in the history (what a careful client does).
    let sha = |text: &str| edgebox_sha256(text);
    let landed: BTreeSet<String> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["sha256"].as_str().unwrap().to_owned())
        .collect();
    let mut resent = 0;
    for (i, outcome) in outcomes.iter_mut() {
        if matches!(outcome, Outcome::Ambiguous) && !landed.contains(&sha(&text_of(*i))) {
            let (status, applied) = a.put_config(&text_of(*i)).await;
            assert_eq!(status, StatusCode::OK, "{applied}");
            *outcome = Outcome::Acknowledged(applied["version"].as_u64().unwrap());
            resent += 1;
        }
    }
    let (_, history) = a.get("/v1/config/history").await;
    let versions = history["versions"].as_array().unwrap();

    // Versions 1..=501, each once, each a different PUT's text, every PUT there
    // exactly once, and every acknowledged one at the version it was told.
    let numbers: Vec<u64> = versions
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=(PUTS as u64 + 1)).collect();
    assert_eq!(numbers, expected, "no version lost or written twice");
    let by_sha: BTreeMap<String, u64> = versions
        .iter()
        .map(|v| {
            (
                v["sha256"].as_str().unwrap().to_owned(),
                v["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_sha.len(), versions.len(), "no text stored twice");
    let mut ambiguous_landed = 0;
    for (i, outcome) in &outcomes {
        let version = by_sha
            .get(&sha(&text_of(*i)))
            .unwrap_or_else(|| panic!("PUT {i} is missing from the history"));
        match outcome {
            Outcome::Acknowledged(told) => assert_eq!(told, version, "PUT {i}"),
            Outcome::Ambiguous => ambiguous_landed += 1,
        }
    }
    eprintln!(
        "{PUTS} PUTs: {} acknowledged, {ambiguous_landed} in flight at the kill and landed, {resent} resent",
        PUTS - ambiguous_landed
    );
    // The restarted replica serves the last version too, once its watch has seen the
    // PUTs just resent through the other one.
    let last = a.get("/v1/config").await.1["version"].clone();
    eventually(
        "cp-b serves the last version",
        Duration::from_secs(10),
        || async { (b.get("/v1/config").await.1["version"] == last).then_some(()) },
    )
    .await;
}

fn edgebox_sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_that_goes_away_degrades_the_control_plane_but_not_the_nodes() {
    let mut etcd = Etcd::start();
    let dir = TestDir::new();
    let config = dir.config(&replicated(&etcd, &["edge-1"]));
    let v1 = std::fs::read_to_string(&config).unwrap();
    let a = replica(&config, "cp-a");
    let _origin = Daemon::start("origin", &config, "origin-1", &["http"]);
    let edge = Daemon::start("edge", &config, "edge-1", &["http", "admin"]);
    eventually("edge-1 applied v1", Duration::from_secs(30), || async {
        (edge_health(&edge).await["control_plane"]["applied_version"] == 1).then_some(())
    })
    .await;

    etcd.kill();
    let health = eventually(
        "/healthz says etcd is away",
        Duration::from_secs(30),
        || async {
            let health = healthz(&a).await;
            (health["status"] == "degraded").then_some(health)
        },
    )
    .await;
    assert_eq!(health["store"]["backend"], "etcd");
    assert_eq!(health["store"]["reachable"], false);
    assert!(health["store"]["error"].is_string(), "{health}");
    // Writes: 503 with a JSON reason. Reads: the last view.
    let (status, body) = a.put_config(&variant(&v1, 2)).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    let (status, body) = a
        .call(Method::POST, "/v1/config/rollback/1", Some(OPERATOR), None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    let (status, current) = a.get("/v1/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["version"], 1);
    assert_eq!(a.get("/v1/config/history").await.1["current_version"], 1);
    // Nodes keep serving.
    let response = client()
        .get(format!("{}/index.html", edge.url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // etcd back: the replica reconnects by itself, and writes work again.
    etcd.restart();
    eventually(
        "/healthz says ok again",
        Duration::from_secs(30),
        || async { (healthz(&a).await["status"] == "ok").then_some(()) },
    )
    .await;
    let (status, applied) = a.put_config(&variant(&v1, 2)).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["version"], 2);
    eventually("edge-1 applied v2", Duration::from_secs(30), || async {
        (edge_health(&edge).await["control_plane"]["applied_version"] == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_started_while_etcd_is_down_serves_its_file_refuses_writes_and_joins_later() {
    let mut etcd = Etcd::start();
    etcd.kill();
    let dir = TestDir::new();
    let config = dir.config(&replicated(&etcd, &[]));
    let v1 = std::fs::read_to_string(&config).unwrap();
    let a = replica(&config, "cp-a");
    let health = healthz(&a).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["config_version"], 0, "nothing stored yet: {health}");
    let (status, body) = a.put_config(&variant(&v1, 2)).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );

    etcd.restart();
    eventually(
        "the replica stored its start-up file as v1",
        Duration::from_secs(30),
        || async {
            let health = healthz(&a).await;
            (health["status"] == "ok" && health["config_version"] == 1).then_some(())
        },
    )
    .await;
    assert_eq!(a.get("/v1/config").await.1["toml"], v1.as_str());
}

#[test]
fn two_control_plane_nodes_without_a_shared_store_are_refused() {
    let dir = TestDir::new();
    let etcd_less = deployment(&[], None, "").replacen(
        "[[nodes]]\nname = \"origin-1\"",
        "[[nodes]]\nname = \"control-2\"\nrole = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\n\n[[nodes]]\nname = \"origin-1\"",
        1,
    );
    let config = dir.config(&etcd_less);
    let output = crate::support::edgebox(&["check-config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nodes[1].role") && stderr.contains("backend = \"etcd\""),
        "{stderr}"
    );
}
