//! The config lifecycle through real node agents: put, validate, roll back, persist
//! across restarts, and nodes that keep serving while the control plane is away.

use std::time::{Duration, Instant};

use edgebox_config::LbPolicy;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;
use crate::support::{TestDir, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn config_put_is_applied_by_real_nodes_and_reported_per_node() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a"], true, "").await;
    let cp = &real.cp;
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 1);
    assert_eq!(current["toml"], v1.as_str());
    assert_eq!(real.edge_stats("edge-a").await.policy, LbPolicy::RoundRobin);

    // A new version reaches every node through the watch; the edge applies it through
    // its reload path (its LB policy changes).
    let v2 = v1.replacen(
        "members = [{ node = \"origin-1\" }]",
        "members = [{ node = \"origin-1\" }]\npolicy = \"least_connections\"",
        1,
    );
    assert_ne!(v1, v2);
    let (status, applied) = cp.put_config(&v2).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied, json!({"version": 2, "changed": true}));
    real.wait_in_sync(2).await;
    assert_eq!(
        real.edge_stats("edge-a").await.policy,
        LbPolicy::LeastConnections
    );

    // Valid, but the sandbox cannot change its slot count without a restart: reported
    // per node, the others apply it, the sandbox keeps running v2.
    let v3 = format!("{v2}\n[sandbox]\nmax_concurrent_jobs = 7\n");
    let (status, applied) = cp.put_config(&v3).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["version"], 3);
    let sandbox_status = eventually(
        "the sandbox reports its failure",
        Duration::from_secs(30),
        || async {
            let s = status_of(cp, "sandbox").await;
            (s["version"] == 3).then_some(s)
        },
    )
    .await;
    assert_eq!(sandbox_status["applied"], false);
    assert_eq!(sandbox_status["in_sync"], false);
    assert!(
        sandbox_status["error"]
            .as_str()
            .unwrap()
            .contains("needs a restart"),
        "{sandbox_status}"
    );
    for node in ["origin-1", "edge-a"] {
        eventually(
            &format!("{node} on v3"),
            Duration::from_secs(30),
            || async {
                let s = status_of(cp, node).await;
                (s["version"] == 3 && s["in_sync"] == true).then_some(())
            },
        )
        .await;
    }
    let (_, sandbox_health) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let sandbox = sandbox_health["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "sandbox")
        .unwrap()
        .clone();
    assert_eq!(
        sandbox["health"], "up",
        "the sandbox keeps running: {sandbox}"
    );

    // The addresses the real nodes reported make them reachable: listed and probed up.
    let (_, nodes) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let listed = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "edge-a")
        .unwrap();
    let admin = listed["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["service"] == "admin")
        .unwrap();
    assert_eq!(admin["addr"], real.edge("edge-a").addr("admin").to_string());
    assert_eq!(listed["health"], "up", "{listed}");
    assert_eq!(listed["config_version"], 3);
    assert!(listed["uptime_ms"].as_u64().is_some(), "{listed}");

    // Unchanged text: no new version.
    let (_, applied) = cp.put_config(&v3).await;
    assert_eq!(applied, json!({"version": 3, "changed": false}));
    // Optimistic concurrency.
    let (status, body) = cp
        .call(
            Method::PUT,
            "/v1/config",
            Some(OPERATOR),
            Some(json!({"toml": v1, "expected_version": 2})),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "version_conflict");
    // Reports for nodes that do not exist are refused.
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/config/status",
            Some(OPERATOR),
            Some(json!({"node": "ghost", "version": 3, "applied": true})),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_config_is_rejected_with_every_diagnostic_and_nothing_changes() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a"], false, "").await;
    let cp = &real.cp;
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let edge_before = real.edge_stats("edge-a").await.config_version;

    // Two problems at once: an unknown parent and a bad duration.
    let invalid = v1.replace(
        "origin_group = \"web\"",
        "origin_group = \"web\"\nparent = \"nowhere\"",
    ) + "\n[edge]\nshutdown_grace = \"soon\"\n";
    let (status, validation) = cp
        .call(
            Method::POST,
            "/v1/config/validate",
            Some(OPERATOR),
            Some(json!({"toml": invalid})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(validation["valid"], false);
    let diagnostics = validation["diagnostics"].as_array().unwrap();
    assert!(diagnostics.len() >= 2, "{validation}");
    for diagnostic in diagnostics {
        assert!(diagnostic["line"].as_u64().is_some(), "{diagnostic}");
        assert!(
            !diagnostic["path"].as_str().unwrap().is_empty(),
            "{diagnostic}"
        );
    }

    let (status, body) = cp.put_config(&invalid).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
    );
    assert_eq!(body["error"]["diagnostics"], validation["diagnostics"]);
    let (status, body) = cp.put_config("this is = = not toml").await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
    );
    assert_eq!(body["error"]["diagnostics"][0]["line"], 1);
    // A config without this control plane in it cannot be applied here.
    let without_cp = v1.replace("role = \"control-plane\"", "role = \"sandbox\"");
    let (status, body) = cp.put_config(&without_cp).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
    );

    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 1);
    assert_eq!(current["toml"], v1.as_str());
    let (_, history) = cp.get("/v1/config/history").await;
    assert_eq!(history["versions"].as_array().unwrap().len(), 1);
    let (_, valid) = cp
        .call(
            Method::POST,
            "/v1/config/validate",
            Some(OPERATOR),
            Some(json!({"toml": v1})),
        )
        .await;
    assert_eq!(valid, json!({"valid": true, "diagnostics": []}));
    // The real edge never saw a new config: still on v1, no local reload since.
    let edge_a = status_of(cp, "edge-a").await;
    assert_eq!(
        (edge_a["version"].clone(), edge_a["in_sync"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(real.edge_stats("edge-a").await.config_version, edge_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_and_restart_keep_every_version() {
    let dir = TestDir::new();
    let mut cp = Cp::start(&dir, &deployment(&[], None, ""));
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let v2 = format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n");
    let v3 = format!("{v1}\n[edge]\nshutdown_grace = \"4s\"\n");
    assert_eq!(cp.put_config(&v2).await.1["version"], 2);
    assert_eq!(cp.put_config(&v3).await.1["version"], 3);

    let (status, applied) = cp
        .call(Method::POST, "/v1/config/rollback/2", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied, json!({"version": 4, "changed": true}));
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["toml"], v2.as_str());
    assert_eq!(current["source"], "rollback to 2");
    let (status, body) = cp
        .call(Method::POST, "/v1/config/rollback/99", Some(OPERATOR), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (_, history_before) = cp.get("/v1/config/history").await;
    let versions: Vec<u64> = history_before["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);

    // Restart: SIGTERM exits 0 promptly even with a node's long poll open (the poll
    // is answered 204); the new process prefers the persisted state.
    let watch = tokio::spawn(
        cp.http
            .get(cp.url("/v1/config/watch?after=4&timeout_ms=60000"))
            .bearer_auth(OPERATOR)
            .send(),
    );
    eventually(
        "the long poll is waiting",
        Duration::from_secs(10),
        || async {
            let metrics = cp
                .http
                .get(cp.url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            metrics
                .contains("edgebox_cp_config_watchers 1")
                .then_some(())
        },
    )
    .await;
    let stopping = Instant::now();
    let exit = tokio::task::block_in_place(|| cp.daemon.terminate(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        watch.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    cp = Cp::start_file(cp.config.clone());
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 4);
    assert_eq!(current["toml"], v2.as_str());
    let (_, history_after) = cp.get("/v1/config/history").await;
    assert_eq!(history_after, history_before);
    assert!(
        cp.daemon
            .logs()
            .contains("using the persisted current config"),
        "{}",
        cp.daemon.logs()
    );
    assert_eq!(cp.get("/healthz").await.1["config_version"], 4);

    // Files on disk: one text + metadata per version, and the pointer.
    let store = dir.path().join("data/nodes/control/config");
    assert_eq!(
        std::fs::read_to_string(store.join("current"))
            .unwrap()
            .trim(),
        "4"
    );
    assert_eq!(
        std::fs::read_to_string(store.join("versions/000003.toml")).unwrap(),
        v3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_keep_their_config_while_the_control_plane_is_away_and_catch_up() {
    let dir = TestDir::new();
    let mut real = real::Real::start(&dir, &["edge-a"], false, "").await;
    let v1 = std::fs::read_to_string(&real.cp.config).unwrap();
    let v2 = v1.replacen(
        "members = [{ node = \"origin-1\" }]",
        "members = [{ node = \"origin-1\" }]\npolicy = \"least_connections\"",
        1,
    );
    assert_eq!(real.cp.put_config(&v2).await.1["version"], 2);
    real.wait_in_sync(2).await;
    let local_version = real.edge_stats("edge-a").await.config_version;

    // The control plane crashes. The edge notices, keeps serving what it applied, and
    // keeps trying.
    real.cp.daemon.kill();
    eventually(
        "the edge noticed the control plane is gone",
        Duration::from_secs(30),
        || async {
            real.edge("edge-a")
                .logs()
                .contains("control plane unreachable")
                .then_some(())
        },
    )
    .await;
    assert_eq!(real.fetch("edge-a", "/index.html").await.0, 200);
    // ... and says so on its /healthz, still `ok`: it serves.
    let health = eventually(
        "the edge's /healthz says it lost the control plane",
        Duration::from_secs(10),
        || async {
            let health = edge_health(&real, "edge-a").await;
            (health["control_plane"]["connected"] == false).then_some(health)
        },
    )
    .await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["control_plane"]["applied_version"], 2, "{health}");
    assert!(health["control_plane"]["error"].is_string(), "{health}");
    let stats = real.edge_stats("edge-a").await;
    assert_eq!(stats.policy, LbPolicy::LeastConnections);
    assert_eq!(
        stats.config_version, local_version,
        "nothing re-applied while away"
    );

    // It comes back on its address with the persisted v2. The agent re-reports, so the
    // new process knows the node is in sync without a new version; then follows v3.
    let config = real.cp.config.clone();
    real.cp = Cp::start_file(config);
    let cp = &real.cp;
    assert_eq!(cp.get("/v1/config").await.1["version"], 2);
    eventually(
        "edge-a re-reported v2 to the restarted control plane",
        Duration::from_secs(30),
        || async {
            let s = status_of(cp, "edge-a").await;
            (s["version"] == 2 && s["in_sync"] == true).then_some(())
        },
    )
    .await;
    let v3 = v2.replacen("least_connections", "latency_aware", 1);
    assert_eq!(cp.put_config(&v3).await.1["version"], 3);
    real.wait_in_sync(3).await;
    assert_eq!(
        real.edge_stats("edge-a").await.policy,
        LbPolicy::LatencyAware
    );
    let health = eventually(
        "the edge's /healthz says it is back",
        Duration::from_secs(10),
        || async {
            let health = edge_health(&real, "edge-a").await;
            (health["control_plane"]["applied_version"] == 3).then_some(health)
        },
    )
    .await;
    assert_eq!(health["control_plane"]["connected"], true, "{health}");
    assert!(
        real.edge("edge-a")
            .logs()
            .contains("control plane reachable again")
    );
    // The reported addresses survive too.
    let (_, nodes) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let edge = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "edge-a")
        .unwrap()
        .clone();
    assert_eq!(edge["health"], "up", "{edge}");
    assert!(
        edge["listeners"]
            .to_string()
            .contains(&real.edge("edge-a").addr("admin").to_string()),
        "{edge}"
    );
}

/// A damaged store (a `current` pointer far past the last version, a text whose
/// checksum does not match) never stops the control plane: it starts at once from the
/// newest intact version, says which file is damaged, and numbers new versions past
/// the damaged one, which it leaves alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_store_starts_from_the_newest_intact_version() {
    let dir = TestDir::new();
    let mut cp = Cp::start(&dir, &deployment(&[], None, ""));
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let v2 = format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n");
    let v3 = format!("{v1}\n[edge]\nshutdown_grace = \"4s\"\n");
    assert_eq!(cp.put_config(&v2).await.1["version"], 2);
    assert_eq!(cp.put_config(&v3).await.1["version"], 3);
    let store = dir.path().join("data/nodes/control/config");

    // The pointer names a version that never existed (and would take forever to count
    // up to).
    let exit = tokio::task::block_in_place(|| cp.daemon.terminate(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}");
    std::fs::write(store.join("current"), "18446744073709551615\n").unwrap();
    let started = Instant::now();
    cp = Cp::start_file(cp.config.clone());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 3);
    assert_eq!(current["toml"], v3.as_str());
    let logs = cp.daemon.logs();
    assert!(
        logs.contains(&store.join("current").display().to_string())
            && logs.contains("18446744073709551615"),
        "{logs}"
    );

    // Version 3's text no longer matches its checksum: version 2 is current.
    let exit = tokio::task::block_in_place(|| cp.daemon.terminate(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}");
    let damaged = store.join("versions/000003.toml");
    std::fs::write(&damaged, "[deployment]\nname = \"tampered\"\n").unwrap();
    cp = Cp::start_file(cp.config.clone());
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 2, "{current}");
    assert_eq!(current["toml"], v2.as_str());
    let logs = cp.daemon.logs();
    assert!(
        logs.contains(&damaged.display().to_string()) && logs.contains("checksum"),
        "{logs}"
    );
    // New versions go past the damaged one, which stays as it was.
    let v5 = format!("{v1}\n[edge]\nshutdown_grace = \"5s\"\n");
    assert_eq!(cp.put_config(&v5).await.1["version"], 4);
    assert_eq!(
        std::fs::read_to_string(&damaged).unwrap(),
        "[deployment]\nname = \"tampered\"\n"
    );
    assert_eq!(cp.get("/healthz").await.1["config_version"], 4);
}

/// Edge `name`'s open `/healthz` on its admin port.
pub(super) async fn edge_health(real: &real::Real, name: &str) -> serde_json::Value {
    client()
        .get(format!("{}/healthz", real.edge(name).url("admin")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
