//! One deployment across hosts: every node in a network namespace of its own
//! (`support::netns`), started as `ip netns exec NS edgebox ROLE --config F --node N`
//! from one deployment file that names each node by host name, resolved through the
//! hosts file each namespace gets. The same checks as on one machine, through real
//! links: MISS → parent → origin → HIT, a purge by tag on every edge, TLS with the
//! generated CA, a sandbox job relayed with its live line, a config change applied by
//! every node, and an origin, then a sandbox, killed under load without a client error.
//!
//! Needs root and iproute2 (network namespaces); elsewhere it prints why and passes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::netns::Network;
use crate::support::{Daemon, TestDir, client, edgebox_bin, eventually, tls_client};

const OPERATOR: &str = "multihost-operator-0123456789";
const SUBMITTER: &str = "multihost-submitter-0123456789";

/// Host names (one namespace each), which are also the node names.
const HOSTS: &[&str] = &[
    "control",
    "shield",
    "edge-eu",
    "edge-us",
    "origin-1",
    "origin-2",
    "origin-3",
    "sandbox",
    "sandbox-2",
];

/// The deployment: nodes by host name, fixed ports (each host has its own addresses).
fn deployment() -> String {
    let mut text = String::from(
        r#"[deployment]
name = "multihost"
data_dir = "data"

[regions.eu]
[regions.us]

[latency]
enabled = false

[[nodes]]
name = "control"
role = "control-plane"
region = "eu"
listen = "control:9090"

[[nodes]]
name = "shield"
role = "edge"
region = "eu"
listen = "shield:8080"
admin = "shield:9180"
admin_public = true
origin_group = "web"
"#,
    );
    for (edge, region) in [("edge-eu", "eu"), ("edge-us", "us")] {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"{edge}\"\nrole = \"edge\"\nregion = \"{region}\"\n\
             listen = \"{edge}:8080\"\nhttps = \"{edge}:8443\"\nadmin = \"{edge}:9180\"\n\
             admin_public = true\norigin_group = \"web\"\nparent = \"shield\"\n"
        ));
    }
    for origin in ["origin-1", "origin-2", "origin-3"] {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"{origin}\"\nrole = \"origin\"\nregion = \"eu\"\nlisten = \"{origin}:8080\"\n"
        ));
    }
    text.push_str(&format!(
        r#"
[[nodes]]
name = "sandbox"
role = "sandbox"
region = "us"
listen = "sandbox:9300"

[[nodes]]
name = "sandbox-2"
role = "sandbox"
region = "eu"
listen = "sandbox-2:9300"

[origin_groups.web]
policy = "round_robin"
retries = 2
members = [{{ node = "origin-1" }}, {{ node = "origin-2" }}, {{ node = "origin-3" }}]

[[origin.rules]]
pattern = "/**/*.html"
cache_control = "public, max-age=600"
surrogate_keys = ["html"]

[[control_plane.tokens]]
name = "ops"
role = "operator"
token = "{OPERATOR}"

[[control_plane.tokens]]
name = "jobs"
role = "submitter"
token = "{SUBMITTER}"
"#
    ));
    text
}

fn role_of(node: &str) -> &'static str {
    match node {
        "control" => "control-plane",
        node if node.starts_with("sandbox") => "sandbox",
        node if node.starts_with("origin") => "origin",
        _ => "edge",
    }
}

fn services_of(node: &str) -> &'static [&'static str] {
    match role_of(node) {
        "edge" if node == "shield" => &["http", "admin"],
        "edge" => &["http", "https", "admin"],
        "origin" => &["http"],
        _ => &["api"],
    }
}

/// Starts `node` on its host.
fn start(network: &Network, config: &Path, node: &str) -> Daemon {
    Daemon::start_through(
        network.command(node, edgebox_bin()),
        role_of(node),
        config,
        node,
        services_of(node),
        &[],
    )
}

struct Fleet {
    http: reqwest::Client,
    api: String,
    daemons: Vec<Daemon>,
}

impl Fleet {
    fn daemon(&self, node: &str) -> &Daemon {
        self.daemons.iter().find(|d| d.node == node).unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to the control plane");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until every node but the control plane reports `version` applied.
    async fn wait_in_sync(&self, version: u64) {
        eventually(
            &format!("every node applied v{version}"),
            Duration::from_secs(30),
            || async {
                let (_, status) = self
                    .call(Method::GET, "/v1/config/status", OPERATOR, None)
                    .await;
                let nodes = status["nodes"].as_array()?;
                let synced = HOSTS[1..].iter().all(|node| {
                    nodes.iter().any(|n| {
                        n["node"] == *node && n["version"] == version && n["in_sync"] == true
                    })
                });
                synced.then_some(())
            },
        )
        .await;
    }

    /// `GET path` through `edge`: status, `X-Cache`, `X-Cache-Tier`, `Via`.
    async fn fetch(&self, edge: &str, path: &str) -> (u16, String, String, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.daemon(edge).url("http")))
            .send()
            .await
            .expect("request through the edge");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (cache, tier, via) = (header("x-cache"), header("x-cache-tier"), header("via"));
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        (status, cache, tier, via)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_across_hosts_serves_purges_runs_jobs_and_survives_a_lost_origin_and_sandbox()
{
    let network = match Network::create(HOSTS) {
        Ok(network) => network,
        Err(why) => {
            eprintln!(
                "SKIPPED multihost test: {why} (needs root and iproute2 to create network namespaces)"
            );
            return;
        }
    };
    let dir = TestDir::new();
    let config = dir.write("edgebox.toml", deployment());

    // The file checks on a host, where the names resolve...
    let check = network
        .command("control", edgebox_bin())
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // ... and every node starts on its own host, the control plane first (its start-up
    // file becomes version 1), the others at once.
    let control = start(&network, &config, "control");
    let mut daemons: Vec<Daemon> = std::thread::scope(|scope| {
        let (network, config) = (&network, &config);
        let started: Vec<_> = HOSTS[1..]
            .iter()
            .map(|node| scope.spawn(move || start(network, config, node)))
            .collect();
        started
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    for daemon in &daemons {
        let node = daemon.node.as_str();
        assert_eq!(
            daemon.addr(services_of(node)[0]).ip(),
            network.ip(node),
            "{node} bound the address its host name resolves to"
        );
    }
    let api = control.url("api");
    daemons.push(control);
    let fleet = Fleet {
        http: client(),
        api,
        daemons,
    };
    fleet.wait_in_sync(1).await;

    // MISS → parent → origin, then HIT: the first edge's miss goes through the shield to
    // an origin, the other region's edge finds it at the shield, then each has it.
    let (status, cache, tier, via) = fleet.fetch("edge-eu", "/index.html").await;
    assert_eq!(
        (status, cache.as_str(), tier.as_str()),
        (200, "MISS", "origin"),
        "{via}"
    );
    assert!(
        via.contains("edgebox-shield") && via.contains("edgebox-edge-eu"),
        "{via}"
    );
    let (status, cache, tier, _) = fleet.fetch("edge-us", "/index.html").await;
    assert_eq!(
        (status, cache.as_str(), tier.as_str()),
        (200, "MISS", "parent")
    );
    for edge in ["edge-eu", "edge-us", "shield"] {
        let (status, cache, _, _) = fleet.fetch(edge, "/index.html").await;
        assert_eq!((status, cache.as_str()), (200, "HIT"), "{edge}");
    }

    // TLS with the CA the edge generated, over HTTP/2.
    let edge_eu = fleet.daemon("edge-eu");
    let ca = std::fs::read(dir.path().join("data/nodes/edge-eu/tls/ca.pem")).expect("generated CA");
    let https = edge_eu.addr("https");
    let tls = tls_client(&ca, &["localhost"], https);
    let response = tls
        .get(format!("https://localhost:{}/index.html", https.port()))
        .send()
        .await
        .expect("TLS through edge-eu with its generated CA");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.headers()["x-cache"], "HIT");

    // Purge by tag: every edge, across the network, drops the page.
    let (status, body) = fleet
        .call(
            Method::POST,
            "/v1/purge",
            OPERATOR,
            Some(json!({"tag": "html"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut purged: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|r| assert!(r["ok"] == true && r["purged"].as_u64() >= Some(1), "{r}"))
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    purged.sort();
    assert_eq!(purged, ["edge-eu", "edge-us", "shield"]);
    for edge in ["shield", "edge-eu", "edge-us"] {
        let (status, cache, _, _) = fleet.fetch(edge, "/index.html").await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "MISS"),
            "{edge} after the purge"
        );
    }

    // A sandbox job through the control plane, its live line relayed over the WebSocket.
    let source = [
        "(module",
        "  (memory (export \"memory\") 1)",
        "  (func (export \"_start\")",
        "    (local $i i32)",
        "    (loop $spin",
        "      (local.set $i (i32.add (local.get $i) (i32.const 1)))",
        "      (br $spin))))",
    ]
    .join("\n");
    let (status, job) = fleet
        .call(
            Method::POST,
            "/v1/jobs",
            SUBMITTER,
            Some(json!({"language": "wat", "source": source, "limits": {"wall_ms": 60_000}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let events_url = format!(
        "{}/v1/jobs/{id}/events?access_token={SUBMITTER}",
        fleet.api.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(events_url.as_str())
        .await
        .expect("events through the control plane");
    let mut lines = Vec::new();
    let mut result = Value::Null;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .expect("events keep coming")
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message.unwrap() {
            let event: Value = serde_json::from_str(text.as_str()).unwrap();
            match event["type"].as_str() {
                Some("status") if event["state"] == "running" => {
                    lines.extend(event["current_line"].as_u64());
                    // Cancelled through the relay once three lines came: however late
                    // the socket connects on a loaded machine, it sees them.
                    if lines.len() == 3 {
                        socket
                            .send(tokio_tungstenite::tungstenite::Message::text(
                                json!({"type": "cancel"}).to_string(),
                            ))
                            .await
                            .expect("cancel through the relay");
                    }
                }
                Some("result") => result = event,
                _ => {}
            }
        }
    }
    assert!(
        !lines.is_empty() && lines.iter().all(|l| (5..=7).contains(l)),
        "live lines: {lines:?}"
    );
    assert_eq!(result["state"], "cancelled", "{result}");

    // A config change reaches every node on every host.
    let (_, current) = fleet.call(Method::GET, "/v1/config", OPERATOR, None).await;
    let changed = current["toml"]
        .as_str()
        .unwrap()
        .replace("max-age=600", "max-age=300");
    let (status, applied) = fleet
        .call(
            Method::PUT,
            "/v1/config",
            OPERATOR,
            Some(json!({"toml": changed})),
        )
        .await;
    assert_eq!(
        (status, applied["version"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{applied}"
    );
    fleet.wait_in_sync(2).await;
    for edge in ["shield", "edge-eu", "edge-us"] {
        let health: Value = fleet
            .http
            .get(format!("{}/healthz", fleet.daemon(edge).url("admin")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            health["control_plane"]["applied_version"], 2,
            "{edge}: {health}"
        );
        assert_eq!(
            health["control_plane"]["connected"], true,
            "{edge}: {health}"
        );
    }

    // An origin's host loses its process under load: GETs that miss every cache keep
    // succeeding, retried on the other origins.
    let mut fleet = fleet;
    let base = fleet.daemon("edge-eu").url("http");
    let (total, failures) =
        kill_under_load(&mut fleet, "origin-2", 100, 300, move |http, worker, n| {
            // A query of its own: a miss on the edge and the shield alike.
            let url = format!("{base}/about.html?w={worker}&n={n}");
            async move {
                let response = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                (status == StatusCode::OK)
                    .then_some(())
                    .ok_or(format!("{url}: {status} {body}"))
            }
        })
        .await;
    assert!(
        failures.is_empty(),
        "{} of {total} GETs failed after origin-2 was killed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );

    // Jobs spread over both sandboxes; one sandbox's host loses its process while jobs
    // run to completion through the control plane (`POST /v1/run`, which the control
    // plane may run again elsewhere: a job has no effect outside itself). None fails.
    let empty = "(module (memory (export \"memory\") 1) (func (export \"_start\")))";
    let run = move |http: reqwest::Client, api: String| async move {
        let response = http
            .post(format!("{api}/v1/run"))
            .bearer_auth(SUBMITTER)
            .json(&json!({"language": "wat", "source": empty}))
            .send()
            .await
            .map_err(|e| format!("run: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status == StatusCode::OK && body["state"] == "succeeded")
            .then_some(())
            .ok_or(format!("run: {status} {body}"))
    };
    for _ in 0..4 {
        run(fleet.http.clone(), fleet.api.clone()).await.unwrap();
    }
    let metrics = fleet
        .http
        .get(format!("{}/metrics", fleet.daemon("sandbox-2").url("api")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Jobs go to the sandbox with the fewest outstanding jobs, ties in turn: with four
    // jobs one after another on idle nodes, the second host's sandbox runs some of them
    // (how many depends on when the control plane last polled each node's load).
    let on_sandbox_2: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "edgebox_sandbox_jobs_finished_total{node=\"sandbox-2\",state=\"succeeded\"} ",
            )
        })
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        (1..=3).contains(&on_sandbox_2),
        "jobs were spread over both sandboxes (sandbox-2 ran {on_sandbox_2} of 4):\n{metrics}"
    );
    let api = fleet.api.clone();
    let (total, failures) = kill_under_load(&mut fleet, "sandbox-2", 10, 40, move |http, _, _| {
        run(http, api.clone())
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {total} jobs failed after sandbox-2 was killed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    drop(fleet);
    drop(network);
}

/// Runs 4 loops of `request` (given a client, the loop's number and the request's),
/// kills node `victim` once `before` requests succeeded, and stops `after` successes
/// later. Returns how many requests were made and what failed.
async fn kill_under_load<F, Fut>(
    fleet: &mut Fleet,
    victim: &str,
    before: usize,
    after: usize,
    request: F,
) -> (usize, Vec<String>)
where
    F: Fn(reqwest::Client, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..4)
        .map(|worker| {
            let (done, served, failures) = (done.clone(), served.clone(), failures.clone());
            let (http, request) = (fleet.http.clone(), request.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    match request(http.clone(), worker, n).await {
                        Ok(()) => served.fetch_add(1, Ordering::SeqCst),
                        Err(failure) => {
                            failures.lock().unwrap().push(failure);
                            0
                        }
                    };
                    n += 1;
                }
            })
        })
        .collect();
    eventually("load under way", Duration::from_secs(30), || async {
        (served.load(Ordering::SeqCst) >= before).then_some(())
    })
    .await;
    let index = fleet.daemons.iter().position(|d| d.node == victim).unwrap();
    fleet.daemons[index].kill();
    let at_kill = served.load(Ordering::SeqCst);
    eventually(
        &format!("{after} more successes after {victim} was killed"),
        Duration::from_secs(30),
        || async { (served.load(Ordering::SeqCst) >= at_kill + after).then_some(()) },
    )
    .await;
    done.store(true, Ordering::SeqCst);
    for handle in loops {
        handle.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let total = served.load(Ordering::SeqCst) + failures.len();
    eprintln!(
        "multihost: {total} requests, {} after {victim} was killed, {} failed",
        served.load(Ordering::SeqCst) - at_kill,
        failures.len()
    );
    (total, failures)
}
