//! A real deployment for the control-plane tests: the control plane on a fixed free
//! port (agents cannot find a port-0 control plane from the config), one origin on a
//! fixed free port (edges need its address in the config), and real edges and a real
//! sandbox on port 0 whose agents report their bound addresses to the control plane.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Cp, deployment, status_of};
use crate::support::{Daemon, TestDir, client, eventually};

/// Origin rules so that the sample site's pages are cacheable and tagged `html`.
pub const CACHEABLE_HTML: &str = r#"
[[origin.rules]]
pattern = "/**/*.html"
cache_control = "public, max-age=600"
surrogate_keys = ["html"]
"#;

/// Where the sandbox keeps fetched and compiled runtimes: the same directory the
/// sandbox tests use, so they are fetched and compiled once per machine.
pub fn runtime_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/target/edgebox-runtimes").to_owned()
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub struct Real {
    pub cp: Cp,
    pub _origin: Daemon,
    pub edges: Vec<(String, Daemon)>,
    pub sandbox: Option<Daemon>,
}

impl Real {
    /// Starts the control plane, origin `origin-1`, the named edges (group `web`) and,
    /// if asked, the sandbox, then waits until every node has applied version 1.
    pub async fn start(dir: &TestDir, edges: &[&str], sandbox: bool, extra: &str) -> Self {
        let listed: Vec<(&str, String)> = edges
            .iter()
            .map(|name| (*name, "127.0.0.1:0".to_owned()))
            .collect();
        let sandbox_addr: Option<SocketAddr> = sandbox.then(|| "127.0.0.1:0".parse().unwrap());
        let text = deployment(&listed, sandbox_addr, extra)
            .replacen(
                "role = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:0\"",
                &format!(
                    "role = \"control-plane\"\nregion = \"local\"\nlisten = \"127.0.0.1:{}\"",
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
            );
        let cp = Cp::start(dir, &text);
        let config = cp.config.clone();
        let origin = Daemon::start("origin", &config, "origin-1", &["http"]);
        let edges: Vec<(String, Daemon)> = edges
            .iter()
            .map(|name| {
                let daemon = Daemon::start("edge", &config, name, &["http", "admin"]);
                (name.to_string(), daemon)
            })
            .collect();
        let sandbox = sandbox.then(|| {
            crate::sandbox::runtimes_ready();
            Daemon::start_with(
                "sandbox",
                &config,
                "sandbox",
                &["api"],
                &[("EDGEBOX_RUNTIME_DIR", &runtime_dir())],
            )
        });
        let real = Self {
            cp,
            _origin: origin,
            edges,
            sandbox,
        };
        real.wait_in_sync(1).await;
        real
    }

    /// Every node but the control plane.
    pub fn node_names(&self) -> Vec<String> {
        let mut names = vec!["origin-1".to_owned()];
        names.extend(self.edges.iter().map(|(name, _)| name.clone()));
        if self.sandbox.is_some() {
            names.push("sandbox".to_owned());
        }
        names
    }

    /// Waits until every node reports `version` applied.
    pub async fn wait_in_sync(&self, version: u64) {
        for node in self.node_names() {
            eventually(
                &format!("{node} applied config v{version}"),
                Duration::from_secs(30),
                || async {
                    let s = status_of(&self.cp, &node).await;
                    (s["version"] == version && s["in_sync"] == true).then_some(())
                },
            )
            .await;
        }
    }

    pub fn edge(&self, name: &str) -> &Daemon {
        &self.edges.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// `GET path` through edge `name`, returning the status and `X-Cache`.
    pub async fn fetch(&self, name: &str, path: &str) -> (u16, String) {
        let response = client()
            .get(format!("{}{path}", self.edge(name).url("http")))
            .send()
            .await
            .expect("request through the edge");
        let cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        (status, cache)
    }

    /// Edge `name`'s admin `/stats`.
    pub async fn edge_stats(&self, name: &str) -> edgebox_wire::edge::EdgeStats {
        self.edge(name)
            .authed_client()
            .get(format!("{}/stats", self.edge(name).url("admin")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
