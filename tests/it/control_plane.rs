//! The control plane as a real process on port 0: auth, config lifecycle with node
//! agents, persistence across restarts, nodes, purge fan-out, stats, the sandbox relay,
//! the OpenAPI document and the CLI.
//!
//! Edge admin endpoints and the sandbox are in-test stand-ins (`standins.rs`) until the
//! real daemons are merged from their branches.

mod dashboard;
mod standins;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgebox_control_plane::agent;
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

/// Starts an agent for `node` that records what it applies and fails configs for
/// which `reject` says so.
fn spawn_agent(
    cp: &Cp,
    dir: &TestDir,
    node: &str,
    admin: Option<SocketAddr>,
    reject: fn(&edgebox_config::Deployment) -> Option<String>,
) -> agent::AgentHandle {
    let mut addresses = BTreeMap::new();
    if let Some(admin) = admin {
        addresses.insert("admin".to_owned(), admin);
    }
    let config = agent::AgentConfig {
        control_plane: cp.daemon.url("api"),
        node: node.to_owned(),
        token: Some((
            "ops".into(),
            edgebox_config::TokenSecret::Inline(OPERATOR.into()),
        )),
        base_dir: dir.path().to_path_buf(),
        addresses,
        poll_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
    };
    agent::spawn(config, move |deployment, _version| {
        let verdict = reject(&deployment);
        async move { verdict.map_or(Ok(()), Err) }
    })
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

#[tokio::test(flavor = "multi_thread")]
async fn config_put_is_applied_by_agents_and_reported_per_node() {
    let dir = TestDir::new();
    let edge_a = standins::edge_admin("edge-a").await;
    let edge_b = standins::edge_admin("edge-b").await;
    let edges = [
        ("edge-a", "127.0.0.1:0".to_owned()),
        ("edge-b", edge_b.addr.to_string()),
    ];
    let cp = Cp::start(&dir, &deployment(&edges, None, ""));
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let (_, current) = cp.get("/v1/config").await;
    assert_eq!(current["version"], 1);
    assert_eq!(current["toml"], v1.as_str());

    // edge-a reports its port-0 admin address; edge-b refuses configs with cache off.
    let a = spawn_agent(&cp, &dir, "edge-a", Some(edge_a.addr), |_| None);
    let b = spawn_agent(&cp, &dir, "edge-b", None, |d| {
        (!d.cache.enabled).then(|| "cannot turn the cache off here".to_owned())
    });
    for node in ["edge-a", "edge-b"] {
        eventually(
            &format!("{node} in sync on v1"),
            Duration::from_secs(20),
            || async {
                status_of(&cp, node).await["in_sync"]
                    .as_bool()
                    .unwrap()
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(a.applied_version(), Some(1));

    // A new version reaches every node through the watch.
    let v2 = format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n");
    let (status, applied) = cp.put_config(&v2).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied, json!({"version": 2, "changed": true}));
    for node in ["edge-a", "edge-b"] {
        eventually(
            &format!("{node} reports v2"),
            Duration::from_secs(20),
            || async {
                let s = status_of(&cp, node).await;
                (s["version"] == 2 && s["in_sync"] == true).then_some(())
            },
        )
        .await;
    }
    assert_eq!(a.applied_version(), Some(2));
    assert_eq!(b.applied_version(), Some(2));

    // Valid, but edge-b cannot apply it: reported per node, edge-a carries on.
    let v3 = format!("{v2}\n[cache]\nenabled = false\n");
    let (status, applied) = cp.put_config(&v3).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["version"], 3);
    let b_status = eventually(
        "edge-b reports its failure",
        Duration::from_secs(20),
        || async {
            let s = status_of(&cp, "edge-b").await;
            (s["version"] == 3).then_some(s)
        },
    )
    .await;
    assert_eq!(b_status["applied"], false);
    assert_eq!(b_status["in_sync"], false);
    assert!(
        b_status["error"]
            .as_str()
            .unwrap()
            .contains("cannot turn the cache off")
    );
    assert_eq!(b.applied_version(), Some(2), "edge-b keeps running v2");
    eventually("edge-a on v3", Duration::from_secs(20), || async {
        (status_of(&cp, "edge-a").await["in_sync"] == true).then_some(())
    })
    .await;

    // The address edge-a reported makes it reachable: listed with it and probed up.
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
    assert_eq!(admin["addr"], edge_a.addr.to_string());
    assert_eq!(listed["health"], "up", "{listed}");
    assert_eq!(listed["config_version"], 3);
    assert_eq!(listed["uptime_ms"], 4242);

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
    let cp = Cp::start(
        &dir,
        &deployment(&[("edge-a", "127.0.0.1:0".to_owned())], None, ""),
    );
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let agent = spawn_agent(&cp, &dir, "edge-a", None, |_| None);
    eventually("agent on v1", Duration::from_secs(20), || async {
        (agent.applied_version() == Some(1)).then_some(())
    })
    .await;

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
    assert_eq!(agent.applied_version(), Some(1));
    assert_eq!(status_of(&cp, "edge-a").await["in_sync"], true);
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
    let edge_a = standins::edge_admin("edge-a").await;
    let shield = standins::edge_admin("shield").await;
    let down = standins::closed_port();
    let cp = Cp::start(
        &dir,
        &deployment(
            &[
                ("edge-a", edge_a.addr.to_string()),
                ("shield", shield.addr.to_string()),
            ],
            None,
            "",
        ),
    );

    for request in [
        json!({"url": "/a.html"}),
        json!({"prefix": "/assets/"}),
        json!({"tag": "html"}),
        json!({"all": true}),
    ] {
        let (status, body) = cp
            .call(
                Method::POST,
                "/v1/purge",
                Some(OPERATOR),
                Some(request.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["ok"], true);
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        for result in results {
            assert_eq!(result["ok"], true, "{result}");
            assert_eq!(result["purged"], 3);
        }
    }
    // Each edge got exactly the four requests, as sent.
    for edge in [&edge_a, &shield] {
        let purges = edge.state.purges.lock().unwrap().clone();
        assert_eq!(
            purges,
            [
                json!({"url": "/a.html"}),
                json!({"prefix": "/assets/"}),
                json!({"tag": "html"}),
                json!({"all": true})
            ]
        );
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
    assert_eq!(edge_a.state.purges.lock().unwrap().len(), 4);

    // One edge down, one failing: reported per edge, 207, the healthy one still purged.
    shield
        .state
        .fail_purge
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let with_down = v1.replace(
        "[origin_groups.web]",
        &format!("[[nodes]]\nname = \"edge-down\"\nrole = \"edge\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"\nadmin = \"{down}\"\norigin_group = \"web\"\n\n[origin_groups.web]"),
    );
    assert_eq!(cp.put_config(&with_down).await.0, StatusCode::OK);
    let started = Instant::now();
    let (status, body) = cp
        .call(
            Method::POST,
            "/v1/purge",
            Some(OPERATOR),
            Some(json!({"tag": "assets"})),
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
    assert_eq!(by_node.len(), 3);
    assert_eq!(by_node["edge-a"]["ok"], true);
    assert_eq!(by_node["shield"]["ok"], false);
    assert_eq!(by_node["shield"]["status"], 500);
    assert_eq!(by_node["shield"]["error"], "disk on fire");
    assert_eq!(by_node["edge-down"]["ok"], false);
    assert!(
        by_node["edge-down"]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_listed_with_health_and_down_nodes_reported_quickly() {
    let dir = TestDir::new();
    let up = standins::edge_admin("edge-up").await;
    let hung = standins::black_hole().await;
    let down = standins::closed_port();
    let sandbox = standins::sandbox().await;
    let cp = Cp::start(
        &dir,
        &deployment(
            &[
                ("edge-up", up.addr.to_string()),
                ("edge-hung", hung.to_string()),
                ("edge-down", down.to_string()),
            ],
            Some(sandbox.addr),
            "",
        ),
    );
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
    assert_eq!(nodes.len(), 6, "{list}");
    assert_eq!(nodes["control"]["health"], "up");
    assert_eq!(nodes["control"]["role"], "control-plane");
    assert_eq!(nodes["control"]["config_version"], 1);
    assert_eq!(nodes["edge-up"]["health"], "up");
    assert_eq!(nodes["edge-up"]["uptime_ms"], 4242);
    assert_eq!(nodes["edge-up"]["region"], "local");
    assert_eq!(nodes["sandbox"]["health"], "up");
    assert_eq!(nodes["edge-hung"]["health"], "down");
    assert_eq!(nodes["edge-hung"]["health_error"], "timed out");
    assert_eq!(nodes["edge-down"]["health"], "down");
    // Port-0 listeners nobody reported: unknown, with no made-up address.
    assert_eq!(nodes["origin-1"]["health"], "unknown");
    assert_eq!(nodes["origin-1"]["listeners"][0]["addr"], Value::Null);
    let admin = nodes["edge-up"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["service"] == "admin")
        .unwrap()
        .clone();
    assert_eq!(admin["url"], format!("http://{}", up.addr));

    // Drain: forwarded to the edge's admin, which then reports draining.
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
    assert_eq!(
        up.state.drained.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let (_, list) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let edge_up = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "edge-up")
        .unwrap();
    assert_eq!(edge_up["health"], "draining");
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
async fn stats_aggregate_edges_and_sandbox_and_list_the_unreachable() {
    let dir = TestDir::new();
    let a = standins::edge_admin("edge-a").await;
    let b = standins::edge_admin("edge-b").await;
    let down = standins::closed_port();
    let sandbox = standins::sandbox().await;
    let cp = Cp::start(
        &dir,
        &deployment(
            &[
                ("edge-a", a.addr.to_string()),
                ("edge-b", b.addr.to_string()),
                ("edge-down", down.to_string()),
            ],
            Some(sandbox.addr),
            "",
        ),
    );
    let (status, stats) = cp.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["edges"]["reporting"], 2);
    assert_eq!(stats["edges"]["requests"]["total"], 20);
    assert_eq!(stats["edges"]["requests"]["2xx"], 16);
    assert_eq!(stats["edges"]["bytes_sent"], 2000);
    assert_eq!(
        stats["edges"]["cache"]["l1"],
        json!({"hits": 12, "misses": 4})
    );
    assert_eq!(stats["edges"]["hit_ratio"]["l1"], 0.75);
    assert_eq!(stats["edges"]["hit_ratio"]["l2"], 0.5);
    assert_eq!(
        stats["jobs"],
        json!({"queued": 1, "running": 2, "succeeded": 5})
    );
    assert_eq!(stats["per_node"]["edge-a"]["node"], "edge-a");
    let unreachable = stats["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1);
    assert_eq!(unreachable[0]["node"], "edge-down");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_relayed_with_events_in_order_and_abandoned_sockets_cleaned_up() {
    let dir = TestDir::new();
    let sandbox = standins::sandbox().await;
    let cp = Cp::start(&dir, &deployment(&[], Some(sandbox.addr), ""));

    let (status, job) = cp
        .call(
            Method::POST,
            "/v1/jobs",
            Some(SUBMITTER),
            Some(json!({"language": "python", "source": "print('hi')"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["id"], "job-1");
    // Absolute sandbox URLs become paths on the control plane.
    assert_eq!(job["status_url"], "/v1/jobs/job-1");
    assert_eq!(job["events_url"], "/v1/jobs/job-1/events");
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
        .call(Method::GET, "/v1/jobs/job-1", Some(SUBMITTER), None)
        .await;
    assert_eq!(
        (status, body["current_line"].clone()),
        (StatusCode::OK, json!(3))
    );
    let (status, body) = cp
        .call(Method::GET, "/v1/jobs/nope", Some(SUBMITTER), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = cp
        .call(Method::GET, "/v1/jobs/..%2Fetc", Some(SUBMITTER), None)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_job_id");
    let (status, body) = cp
        .call(Method::DELETE, "/v1/jobs/job-1", Some(SUBMITTER), None)
        .await;
    assert_eq!(
        (status, body["state"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
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
        (StatusCode::OK, json!("hi\n"))
    );

    // Events: every message, in order, then the close.
    let ws_url = format!("ws://{}/v1/jobs/job-1/events", cp.daemon.addr("api"));
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
    let mut seqs = Vec::new();
    let mut last = Value::Null;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("events keep coming")
    {
        match message.unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                if let Some(seq) = event["seq"].as_u64() {
                    seqs.push(seq);
                }
                last = event;
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(seqs, (0..standins::EVENTS).collect::<Vec<_>>());
    assert_eq!(last["state"], "succeeded", "the result comes last");

    // Without a token (header or query): refused before any upgrade. With the query
    // token browsers use: accepted. An unknown job: the sandbox's 404.
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

    // Abandoned sockets: clients that go away (cleanly or not) close the upstream
    // stream too; nothing stays open.
    for clean in [true, false] {
        let url = format!(
            "ws://{}/v1/jobs/endless/events?access_token={SUBMITTER}",
            cp.daemon.addr("api")
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        socket.next().await.unwrap().unwrap();
        eventually(
            "the sandbox stream is open",
            Duration::from_secs(10),
            || async {
                (sandbox
                    .state
                    .streams
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == 1)
                    .then_some(())
            },
        )
        .await;
        if clean {
            socket.close(None).await.unwrap();
        }
        drop(socket);
        eventually(
            "the relay closed the sandbox stream",
            Duration::from_secs(10),
            || async {
                (sandbox
                    .state
                    .streams
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == 0)
                    .then_some(())
            },
        )
        .await;
    }
    eventually("no relay left open", Duration::from_secs(10), || async {
        let metrics = cp
            .http
            .get(cp.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics.contains("edgebox_cp_event_relays 0").then_some(())
    })
    .await;
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
    let edge = standins::edge_admin("edge-a").await;
    let sandbox = standins::sandbox().await;
    let cp = Cp::start(
        &dir,
        &deployment(&[("edge-a", edge.addr.to_string())], Some(sandbox.addr), ""),
    );
    let v1 = std::fs::read_to_string(&cp.config).unwrap();

    // status --json: every node, the config version; exit 1 because origin-1 has not
    // reported (it is not running in this test).
    let output = cli(args(&cp, &["status", "--json"])).await;
    let status = stdout_json(&output);
    assert_eq!(output.status.code(), Some(1));
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
    let output = cli(args(&cp, &["status"])).await;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("NODE") && table.contains("edge-a") && table.contains("config version 1"),
        "{table}"
    );
    let output = cli(args(&cp, &["nodes", "--json"])).await;
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
    let mut wrong = args(&cp, &["config", "get"]);
    wrong.extend(["--token".into(), "wrong-token-wrong-token".into()]);
    let output = cli(wrong).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unauthorized"));

    // reload FILE: a new version; an invalid file: every error with its line, exit 78.
    let v2 = dir.write(
        "v2.toml",
        format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n"),
    );
    let output = cli(args(&cp, &["reload", v2.to_str().unwrap()])).await;
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
    let output = cli(args(&cp, &["reload", bad.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:")
            && stderr.contains("shutdown_grace")
            && stderr.contains("bogus"),
        "{stderr}"
    );
    let output = cli(args(&cp, &["config", "validate", bad.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(78));
    let output = cli(args(&cp, &["config", "validate", v2.to_str().unwrap()])).await;
    assert!(output.status.success());

    // reload without FILE re-sends the file given with --config (v1): version 3.
    let output = cli(args(&cp, &["reload", "--json"])).await;
    assert_eq!(stdout_json(&output), json!({"version": 3, "changed": true}));
    let output = cli(args(&cp, &["config", "rollback", "2", "--json"])).await;
    assert_eq!(stdout_json(&output)["version"], 4);
    let output = cli(args(&cp, &["config", "history", "--json"])).await;
    let history = stdout_json(&output);
    assert_eq!(history["current_version"], 4);
    assert_eq!(history["versions"].as_array().unwrap().len(), 4);
    let output = cli(args(&cp, &["config", "get"])).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        std::fs::read_to_string(&v2).unwrap()
    );

    // purge
    let output = cli(args(&cp, &["purge", "--tag", "assets", "--json"])).await;
    assert!(output.status.success());
    assert_eq!(stdout_json(&output)["results"][0]["purged"], 3);
    assert_eq!(
        edge.state.purges.lock().unwrap().clone(),
        [json!({"tag": "assets"})]
    );
    let output = cli(args(&cp, &["purge", "--tag", "a", "--all"])).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap refuses two kinds at once"
    );

    // run, and run --follow (output as it streams, then the result's exit code).
    let program = dir.write("hello.py", "print('hi')\n");
    let output = cli(args(&cp, &["run", program.to_str().unwrap()])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
    let output = cli(args(&cp, &["run", program.to_str().unwrap(), "--follow"])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: String = (0..standins::EVENTS)
        .map(|seq| format!("chunk {seq}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    assert!(String::from_utf8_lossy(&output.stderr).contains("job job-1 succeeded"));
}

/// A TCP forwarder with a stable address whose target can change, so an agent can
/// follow a control plane that restarts on a new port-0 address.
async fn forwarder(target: std::sync::Arc<std::sync::Mutex<SocketAddr>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = *target.lock().unwrap();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_keep_their_config_while_the_control_plane_is_away_and_catch_up() {
    let dir = TestDir::new();
    let mut cp = Cp::start(
        &dir,
        &deployment(&[("edge-a", "127.0.0.1:0".to_owned())], None, ""),
    );
    let v1 = std::fs::read_to_string(&cp.config).unwrap();
    let target = std::sync::Arc::new(std::sync::Mutex::new(cp.daemon.addr("api")));
    let stable = forwarder(target.clone()).await;
    let mut config = agent::AgentConfig {
        control_plane: format!("http://{stable}"),
        node: "edge-a".into(),
        token: Some((
            "ops".into(),
            edgebox_config::TokenSecret::Inline(OPERATOR.into()),
        )),
        base_dir: dir.path().to_path_buf(),
        addresses: BTreeMap::new(),
        poll_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
    };
    config
        .addresses
        .insert("admin".into(), "127.0.0.1:4321".parse().unwrap());
    let applied = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let agent = agent::spawn(config, {
        let applied = applied.clone();
        move |deployment, version| {
            applied
                .lock()
                .unwrap()
                .push((version, deployment.edge.shutdown_grace));
            async { Ok(()) }
        }
    });
    eventually("v1 applied", Duration::from_secs(20), || async {
        (agent.applied_version() == Some(1)).then_some(())
    })
    .await;
    let v2 = format!("{v1}\n[edge]\nshutdown_grace = \"3s\"\n");
    assert_eq!(cp.put_config(&v2).await.1["version"], 2);
    eventually("v2 applied", Duration::from_secs(20), || async {
        (agent.applied_version() == Some(2)).then_some(())
    })
    .await;

    // The control plane crashes. The node keeps what it applied and keeps trying.
    cp.daemon.kill();
    let before = applied.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(800)).await; // several retry rounds, deliberately
    assert_eq!(agent.applied_version(), Some(2));
    assert_eq!(
        applied.lock().unwrap().len(),
        before,
        "nothing re-applied while away"
    );

    // It comes back (new port, persisted v2). The agent re-reports, so the new process
    // knows the node is in sync without a new version; then follows v3.
    cp = Cp::start_file(cp.config.clone());
    *target.lock().unwrap() = cp.daemon.addr("api");
    eventually(
        "edge-a re-reported v2 to the restarted control plane",
        Duration::from_secs(20),
        || async {
            let s = status_of(&cp, "edge-a").await;
            (s["version"] == 2 && s["in_sync"] == true).then_some(())
        },
    )
    .await;
    let v3 = format!("{v1}\n[edge]\nshutdown_grace = \"4s\"\n");
    assert_eq!(cp.put_config(&v3).await.1["version"], 3);
    eventually(
        "v3 applied after the restart",
        Duration::from_secs(20),
        || async { (agent.applied_version() == Some(3)).then_some(()) },
    )
    .await;
    let versions: Vec<u64> = applied.lock().unwrap().iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(applied.lock().unwrap()[2].1, Duration::from_secs(4));
    // The reported address survives too.
    let (_, nodes) = cp.call(Method::GET, "/v1/nodes", None, None).await;
    let edge = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "edge-a")
        .unwrap()
        .clone();
    assert!(
        edge["listeners"].to_string().contains("127.0.0.1:4321"),
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
