//! The control plane as a real process on port 0: auth, config lifecycle with node
//! agents, persistence across restarts, nodes, purge fan-out, stats, the sandbox relay,
//! the OpenAPI document and the CLI.
//!
//! Nodes are the real daemons (`real.rs`: origin, edges and sandbox following the
//! control plane through their config agents); `standins.rs` only supplies faults a
//! real daemon cannot be made to show (a purge answered 500, a hung node, a closed port).

mod auth;
mod cli;
mod dashboard;
mod fleet;
mod jobs;
mod lifecycle;
mod real;
mod replicas;
mod sandboxes;
mod standins;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Daemon, TestDir, client};

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
