//! The control plane as a real process on port 0: auth, config lifecycle with node
//! agents, persistence across restarts, nodes, purge fan-out, stats, the sandbox relay,
//! the OpenAPI document and the CLI.
//!
//! Nodes are the real daemons (`real.rs`: origin, edges and sandbox following the
//! control plane through their config agents); `standins.rs` only supplies faults a
//! real daemon cannot be made to show (a purge answered 500, a hung node, a closed port).

mod dashboard;
mod real;
mod standins;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Daemon, TestDir, client, eventually};

const OPERATOR: &str = "operator-secret-0123456789";
const SUBMITTER: &str = "submitter-secret-0123456789";

/// A deployment body: a control plane, one origin, the given edges (name, admin
/// address) and optionally a sandbox.
fn deployment(edges: &[(&str, String)], sandbox: Option<SocketAddr>, extra: &str) -> String {
    let mut text = String::from(
        r#"[regions.local]

[latency]
enabled = false

[[nodes]]
name = "control"
role = "control-plane"
region = "local"
listen = "127.0.0.1:0"

[[nodes]]
name = "origin-1"
role = "origin"
region = "local"
listen = "127.0.0.1:0"
"#,
    );
    for (name, admin) in edges {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"{name}\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\nadmin = \"{admin}\"\norigin_group = \"web\"\n"
        ));
    }
    if let Some(sandbox) = sandbox {
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"sandbox\"\nrole = \"sandbox\"\nregion = \"local\"\nlisten = \"{sandbox}\"\n"
        ));
    }
    text.push_str(&format!(
        r#"
[origin_groups.web]
members = [{{ node = "origin-1" }}]

[[control_plane.tokens]]
name = "ops"
role = "operator"
token = "{OPERATOR}"

[[control_plane.tokens]]
name = "jobs"
role = "submitter"
token = "{SUBMITTER}"

[[control_plane.tokens]]
name = "generated"
role = "operator"
token_file = "tokens/generated"
{extra}"#
    ));
    text
}

/// A running control plane and a client for it.
struct Cp {
    daemon: Daemon,
    http: reqwest::Client,
    config: PathBuf,
}

impl Cp {
    fn start(dir: &TestDir, body: &str) -> Self {
        let config = dir.config(body);
        Self::start_file(config)
    }

    fn start_file(config: PathBuf) -> Self {
        let daemon = Daemon::start("control-plane", &config, "control", &["api"]);
        Self {
            daemon,
            http: client(),
            config,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.daemon.url("api"))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request to the control plane");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(OPERATOR), None).await
    }

    async fn put_config(&self, toml: &str) -> (StatusCode, Value) {
        self.call(
            Method::PUT,
            "/v1/config",
            Some(OPERATOR),
            Some(json!({"toml": toml})),
        )
        .await
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_matrix_and_json_errors() {
    let dir = TestDir::new();
    let cp = Cp::start(&dir, &deployment(&[], None, ""));

    // Open reads.
    for path in [
        "/healthz",
        "/v1/nodes",
        "/v1/config/status",
        "/openapi.json",
        "/metrics",
        "/",
    ] {
        let (status, _) = cp.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // No token, unknown token, malformed header: 401 with a challenge.
    let response = cp.http.get(cp.url("/v1/config")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let (status, body) = cp
        .call(Method::GET, "/v1/config", Some("not-a-token-at-all"), None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let response = cp
        .http
        .get(cp.url("/v1/config"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Submitter: jobs yes (no sandbox in this deployment: 503, but past auth), the rest 403.
    let operator_only: [(Method, &str, Option<Value>); 7] = [
        (Method::GET, "/v1/config", None),
        (Method::PUT, "/v1/config", Some(json!({"toml": ""}))),
        (
            Method::POST,
            "/v1/config/validate",
            Some(json!({"toml": ""})),
        ),
        (Method::GET, "/v1/config/history", None),
        (Method::POST, "/v1/purge", Some(json!({"all": true}))),
        (Method::GET, "/v1/stats", None),
        (Method::POST, "/v1/nodes/origin-1/drain", None),
    ];
    for (method, path, body) in operator_only {
        let (status, response) = cp
            .call(method.clone(), path, Some(SUBMITTER), body.clone())
            .await;
        assert_error(status, &response, StatusCode::FORBIDDEN, "forbidden");
        let (status, _) = cp.call(method.clone(), path, None, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "print(1)"})),
        )
        .await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "no_sandbox");
    let (status, _) = cp
        .call(Method::POST, "/v1/jobs", None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Operators may do everything, including jobs.
    let (status, _) = cp
        .call(Method::POST, "/v1/jobs", Some(OPERATOR), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // The generated token file: private, in the data dir, and it works.
    let token_path = dir.path().join("data/tokens/generated");
    let generated = std::fs::read_to_string(&token_path).expect("token file generated");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (status, _) = cp
        .call(Method::GET, "/v1/config", Some(generated.trim()), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bad bodies: malformed JSON, unknown fields, wrong content type, oversized.
    let bad = |body: &'static str, content_type: &'static str| {
        cp.http
            .post(cp.url("/v1/config/validate"))
            .bearer_auth(OPERATOR)
            .header("content-type", content_type)
            .body(body)
    };
    for (request, expected, code) in [
        (
            bad("{\"toml\": ", "application/json"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            bad("{\"toml\": \"\", \"extra\": 1}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            bad("{\"toml\": 5}", "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            bad("toml = 1", "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ] {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("JSON error body");
        assert_error(status, &body, expected, code);
    }
    let huge = format!("{{\"toml\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    // Its own connection: the server answers before reading the whole body and then
    // closes that connection, which a pooled client could otherwise try to reuse.
    let response = client()
        .put(cp.url("/v1/config"))
        .bearer_auth(OPERATOR)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.expect("JSON error body");
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    let (status, body) = cp.call(Method::GET, "/v1/nope", Some(OPERATOR), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    let (status, body) = cp
        .call(Method::DELETE, "/v1/config", Some(OPERATOR), None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/config/rollback/abc",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_path");

    // Request ids: echoed when given, made up otherwise.
    let response = cp
        .http
        .get(cp.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = cp.http.get(cp.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 36);

    // Still alive and counting.
    let metrics = cp
        .http
        .get(cp.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "edgebox_cp_requests_total{route=\"/v1/config\",method=\"GET\",status=\"403\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("edgebox_cp_config_version 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_matches_the_routes() {
    let dir = TestDir::new();
    let cp = Cp::start(&dir, &deployment(&[], None, ""));
    let (status, document) = cp.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    // The router's own list of what it registered.
    let (mut registered, _) = edgebox_control_plane::openapi_document();
    registered.sort();
    assert_eq!(documented, registered);

    // And over HTTP: every documented operation is routed (whatever it answers, it is
    // not the router's "no route" or "method not allowed")...
    for (method, path) in &documented {
        let concrete = path
            .replace("{version}", "1")
            .replace("{name}", "origin-1")
            .replace("{id}", "job-1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
        let mut request = cp
            .http
            .request(method.clone(), cp.url(&concrete))
            .bearer_auth(OPERATOR);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if concrete.ends_with("/watch") {
            request = cp
                .http
                .get(cp.url("/v1/config/watch?after=0"))
                .bearer_auth(OPERATOR);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}: {body}"
        );
        assert_ne!(body["error"]["code"], "no_route", "{method} {concrete}");
    }
    // ...and a path the document does not have is not routed.
    let (status, body) = cp
        .call(Method::GET, "/v1/config/everything", Some(OPERATOR), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no_route");
    // Operations carry their security requirement where they need a token.
    assert!(document["paths"]["/v1/config"]["put"]["security"].is_array());
    assert!(document["components"]["schemas"]["PutConfig"].is_object());
}

async fn status_of(cp: &Cp, node: &str) -> Value {
    let (_, status) = cp.call(Method::GET, "/v1/config/status", None, None).await;
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .cloned()
        .unwrap()
}

/// `text` with more edge nodes (name, admin address) in it.
fn with_edges(text: &str, edges: &[(&str, String)]) -> String {
    let mut nodes = String::new();
    for (name, admin) in edges {
        nodes.push_str(&format!(
            "[[nodes]]\nname = \"{name}\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\nadmin = \"{admin}\"\norigin_group = \"web\"\n\n"
        ));
    }
    text.replacen(
        "[origin_groups.web]",
        &format!("{nodes}[origin_groups.web]"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn config_put_is_applied_by_real_nodes_and_reported_per_node() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a"], true, "").await;
    let cp = &real.cp;
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 1);
    assert_eq!(current["toml"], v1.as_str());
    assert_eq!(real.edge_stats("edge-a").await["policy"], "round_robin");

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
        real.edge_stats("edge-a").await["policy"],
        "least_connections"
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
    let edge_before = real.edge_stats("edge-a").await["config_version"].clone();

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
    assert_eq!(
        real.edge_stats("edge-a").await["config_version"],
        edge_before
    );
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
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/purge",
            Some(OPERATOR),
            Some(json!({"everything": true})),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );

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

/// Opens the events WebSocket of job `id` through the control plane.
async fn open_events(
    cp: &Cp,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "ws://{}/v1/jobs/{id}/events?access_token={SUBMITTER}",
        cp.daemon.addr("api")
    );
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("WebSocket through the control plane")
        .0
}

async fn relays_open(cp: &Cp) -> Option<u64> {
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
        .lines()
        .find_map(|line| line.strip_prefix("edgebox_cp_event_relays "))?
        .trim()
        .parse()
        .ok()
}

/// A Python program that prints `chunk 0` .. `chunk 39`, spinning ~10 ms between lines.
const CHUNKS: &str = "import time\nfor i in range(40):\n    print('chunk', i, flush=True)\n    end = time.monotonic() + 0.01\n    while time.monotonic() < end: pass\n";

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_relayed_with_events_in_order_and_abandoned_sockets_cleaned_up() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &[], true, "").await;
    let cp = &real.cp;

    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": CHUNKS})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    // Absolute sandbox URLs become paths on the control plane.
    assert_eq!(job["status_url"], format!("/v1/jobs/{id}"));
    assert_eq!(job["events_url"], format!("/v1/jobs/{id}/events"));

    // Events: every message, in order, then the close.
    let ws_url = format!("ws://{}/v1/jobs/{id}/events", cp.daemon.addr("api"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {SUBMITTER}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket through the control plane");
    let mut events = Vec::new();
    let mut closed = false;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(60), socket.next())
        .await
        .expect("events keep coming")
    {
        match message.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                events.push(serde_json::from_str::<Value>(text.as_str()).unwrap());
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the relay passes the close on");
    let output: String = events
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    let expected: String = (0..40).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(output, expected, "output chunks in order");
    let runtimes: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "status" && e["state"] == "running")
        .map(|e| e["runtime_ms"].as_u64().unwrap())
        .collect();
    assert!(!runtimes.is_empty(), "status while running: {events:?}");
    assert!(runtimes.windows(2).all(|w| w[0] <= w[1]), "{runtimes:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "result", "the result comes last");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["stdout"], expected.as_str());

    // The job through the other relayed routes.
    let (status, body) = cp
        .call(
            Method::GET,
            &format!("/v1/jobs/{id}"),
            Some(SUBMITTER),
            None,
        )
        .await;
    assert_eq!(
        (status, body["state"].clone()),
        (StatusCode::OK, json!("succeeded")),
        "{body}"
    );
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "cobol", "source": ""})),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_language",
    );
    let (status, body) = cp
        .call(Method::GET, "/v1/jobs/nope", Some(SUBMITTER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = cp
        .call(Method::GET, "/v1/jobs/..%2Fetc", Some(SUBMITTER), None)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_job_id");
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/run",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "print('hi')"})),
        )
        .await;
    assert_eq!(
        (status, body["stdout"].clone()),
        (StatusCode::OK, json!("hi\n")),
        "{body}"
    );

    // Without a token (header or query): refused before any upgrade. An unknown job:
    // the sandbox's 404.
    let unauthenticated = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(
        matches!(unauthenticated, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401)
    );
    let missing = format!(
        "ws://{}/v1/jobs/gone/events?access_token={SUBMITTER}",
        cp.daemon.addr("api")
    );
    let missing = tokio_tungstenite::connect_async(missing.as_str()).await;
    assert!(
        matches!(missing, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 404)
    );

    // Abandoned sockets: clients that go away (cleanly or not) from a job that runs on
    // close the relay too; nothing stays open. Then the job is cancelled.
    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "import time\nwhile True:\n    print('x', flush=True)\n    end = time.monotonic() + 0.05\n    while time.monotonic() < end: pass\n"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let endless = job["id"].as_str().unwrap().to_owned();
    for clean in [true, false] {
        let mut socket = open_events(cp, &endless).await;
        socket.next().await.unwrap().unwrap();
        assert_eq!(relays_open(cp).await, Some(1));
        if clean {
            socket.close(None).await.unwrap();
        }
        drop(socket);
        eventually(
            "the relay closed behind the client",
            Duration::from_secs(10),
            || async { (relays_open(cp).await == Some(0)).then_some(()) },
        )
        .await;
    }
    let (status, body) = cp
        .call(
            Method::DELETE,
            &format!("/v1/jobs/{endless}"),
            Some(SUBMITTER),
            None,
        )
        .await;
    assert_eq!(
        (status, body["state"].clone()),
        (StatusCode::OK, json!("cancelled")),
        "{body}"
    );
}

/// Runs the CLI off the async workers.
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::edgebox(&args)
    })
    .await
    .unwrap()
}

fn args(cp: &Cp, list: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--control-plane".into(),
        cp.daemon.url("api"),
        "--config".into(),
        cp.config.display().to_string(),
    ]);
    all
}

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_drives_the_control_plane() {
    let dir = TestDir::new();
    let real = real::Real::start(&dir, &["edge-a"], true, real::CACHEABLE_HTML).await;
    let cp = &real.cp;
    let v1 = std::fs::read_to_string(&cp.config).unwrap();

    // status --json: every node, the config version; exit 0: all up and in sync.
    let output = cli(args(cp, &["status", "--json"])).await;
    let status = stdout_json(&output);
    assert_eq!(output.status.code(), Some(0), "{status}");
    assert_eq!(status["config_version"], 1);
    assert_eq!(status["control_plane"], cp.daemon.url("api"));
    let names: Vec<&str> = status["nodes"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["control", "origin-1", "edge-a", "sandbox"]);
    assert_eq!(status["nodes"]["nodes"][2]["health"], "up");
    // The table for people.
    let output = cli(args(cp, &["status"])).await;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("NODE") && table.contains("edge-a") && table.contains("config version 1"),
        "{table}"
    );
    let output = cli(args(cp, &["nodes", "--json"])).await;
    assert!(output.status.success());
    assert_eq!(stdout_json(&output)["nodes"].as_array().unwrap().len(), 4);

    // The address from the environment, the token from the config's inline token.
    let output = tokio::task::spawn_blocking({
        let url = cp.daemon.url("api");
        let config = cp.config.clone();
        move || {
            std::process::Command::new(crate::support::edgebox_bin())
                .args(["config", "get", "--json", "--config"])
                .arg(config)
                .env("EDGEBOX_CONTROL_PLANE", url)
                .env_remove("EDGEBOX_TOKEN")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout_json(&output)["version"], 1);
    // A wrong token: the API's message, non-zero exit.
    let mut wrong = args(cp, &["config", "get"]);
    wrong.extend(["--token".into(), "wrong-token-wrong-token".into()]);
    let output = cli(wrong).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unauthorized"));

    // reload FILE: a new version; an invalid file: every error with its line, exit 78.
    let v2 = dir.write(
        "v2.toml",
        format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n"),
    );
    let output = cli(args(cp, &["reload", v2.to_str().unwrap()])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied as config version 2"));
    let bad = dir.write(
        "bad.toml",
        format!("{v1}\n[edge]\nshutdown_grace = \"later\"\nbogus = 1\n"),
    );
    let output = cli(args(cp, &["reload", bad.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:")
            && stderr.contains("shutdown_grace")
            && stderr.contains("bogus"),
        "{stderr}"
    );
    let output = cli(args(cp, &["config", "validate", bad.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(78));
    let output = cli(args(cp, &["config", "validate", v2.to_str().unwrap()])).await;
    assert!(output.status.success());

    // reload without FILE re-sends the file given with --config (v1): version 3.
    let output = cli(args(cp, &["reload", "--json"])).await;
    assert_eq!(stdout_json(&output), json!({"version": 3, "changed": true}));
    let output = cli(args(cp, &["config", "rollback", "2", "--json"])).await;
    assert_eq!(stdout_json(&output)["version"], 4);
    let output = cli(args(cp, &["config", "history", "--json"])).await;
    let history = stdout_json(&output);
    assert_eq!(history["current_version"], 4);
    assert_eq!(history["versions"].as_array().unwrap().len(), 4);
    let output = cli(args(cp, &["config", "get"])).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        std::fs::read_to_string(&v2).unwrap()
    );

    // purge: the real edge drops its cached page.
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "HIT");
    let output = cli(args(cp, &["purge", "--tag", "html", "--json"])).await;
    assert!(output.status.success());
    let purged = stdout_json(&output);
    assert_eq!(purged["results"][0]["node"], "edge-a", "{purged}");
    assert_eq!(purged["results"][0]["purged"], 1, "{purged}");
    assert_eq!(real.fetch("edge-a", "/index.html").await.1, "MISS");
    let output = cli(args(cp, &["purge", "--tag", "a", "--all"])).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap refuses two kinds at once"
    );

    // run, and run --follow (output as it streams, then the result's exit code).
    let program = dir.write("hello.py", "print('hi')\n");
    let output = cli(args(cp, &["run", program.to_str().unwrap()])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
    let chunks = dir.write("chunks.py", CHUNKS);
    let output = cli(args(cp, &["run", chunks.to_str().unwrap(), "--follow"])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: String = (0..40).map(|i| format!("chunk {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("succeeded"), "{stderr}");
    // A program that fails: its exit code is the command's.
    let failing = dir.write("fail.py", "import sys\nsys.exit(3)\n");
    let output = cli(args(cp, &["run", failing.to_str().unwrap()])).await;
    assert!(!output.status.success());

    // A drained edge is not healthy: status says so with exit 1.
    let (status, _) = cp
        .call(Method::POST, "/v1/nodes/edge-a/drain", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let output = cli(args(cp, &["status", "--json"])).await;
    assert_eq!(output.status.code(), Some(1));
    let status = stdout_json(&output);
    assert_eq!(
        status["nodes"]["nodes"][2]["health"], "draining",
        "{status}"
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
    let local_version = real.edge_stats("edge-a").await["config_version"].clone();

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
    let stats = real.edge_stats("edge-a").await;
    assert_eq!(stats["policy"], "least_connections");
    assert_eq!(
        stats["config_version"], local_version,
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
    assert_eq!(real.edge_stats("edge-a").await["policy"], "latency_aware");
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

#[tokio::test(flavor = "multi_thread")]
async fn tokens_follow_the_config() {
    let dir = TestDir::new();
    let cp = Cp::start(&dir, &deployment(&[], None, ""));
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let rotated = "rotated-operator-secret-0123";
    let v2 = v1.replace(OPERATOR, rotated);
    assert_eq!(cp.put_config(&v2).await.0, StatusCode::OK);
    let (status, _) = cp
        .call(Method::GET, "/v1/config", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old secret is gone");
    let (status, body) = cp
        .call(Method::POST, "/v1/config/rollback/1", Some(rotated), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = cp
        .call(Method::GET, "/v1/config", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK, "rolled back to the first secret");
    // A token that cannot be resolved is a config error, and nothing changes.
    let broken = v1.replace(
        &format!("token = \"{SUBMITTER}\""),
        "token_env = \"EDGEBOX_TEST_SURELY_UNSET\"",
    );
    let (status, body) = cp.put_config(&broken).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
    );
    assert_eq!(
        body["error"]["diagnostics"][0]["path"],
        "control_plane.tokens"
    );
    assert_eq!(cp.get("/v1/config").await.1["version"], 3);
}
