//! A running deployment driven through its control plane (issue 6's API): the current
//! config (`GET /v1/config`), where nodes listen (`GET /v1/nodes`), applying a variant
//! (`PUT /v1/config`, then waiting on `GET /v1/config/status` until every node runs the
//! new version), starting each variant cold (`POST /v1/purge {"all": true}`), and putting
//! the original config back at the end.
//!
//! The JSON is read leniently (unknown fields ignored) so that additions to the API do
//! not break the simulator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::SimError;
use super::scenario::TokenSource;

pub struct ControlPlane {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

#[derive(Debug, Deserialize)]
pub struct CurrentConfig {
    pub version: u64,
    pub toml: String,
}

#[derive(Debug, Deserialize)]
struct NodeList {
    nodes: Vec<NodeInfo>,
}

#[derive(Debug, Deserialize)]
struct NodeInfo {
    name: String,
    #[serde(default)]
    listeners: Vec<Listener>,
}

#[derive(Debug, Deserialize)]
struct Listener {
    service: String,
    addr: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Applied {
    version: u64,
}

#[derive(Debug, Deserialize)]
struct ConfigStatus {
    nodes: Vec<NodeConfigStatus>,
}

#[derive(Debug, Deserialize)]
struct NodeConfigStatus {
    node: String,
    #[serde(default)]
    role: Option<String>,
    version: Option<u64>,
    applied: Option<bool>,
    error: Option<String>,
}

impl ControlPlane {
    pub fn new(base: &str, token: &TokenSource) -> Result<Self, SimError> {
        let token = match token {
            TokenSource::Inline(token) => Some(token.clone()),
            TokenSource::File(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| SimError::Io {
                        what: format!("reading the token file {}", path.display()),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            TokenSource::Env(var) => Some(std::env::var(var).map_err(|_| {
                SimError::Deployment(format!("the token variable {var} is not set"))
            })?),
            TokenSource::Default => std::env::var("EDGEBOX_TOKEN").ok().or_else(|| {
                std::fs::read_to_string(".edgebox/tokens/operator")
                    .ok()
                    .map(|token| token.trim().to_owned())
            }),
        };
        edgebox_node::install_crypto();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| SimError::Deployment(format!("building an HTTP client: {err}")))?;
        Ok(Self {
            base: base.to_owned(),
            token,
            client,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, SimError> {
        let response = request.send().await.map_err(|err| {
            SimError::Unreachable(format!("control plane {}: {what}: {err}", self.base))
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => {
                    " (this needs an operator token: set deployment.token_file, token_env or token, or EDGEBOX_TOKEN)"
                }
                _ => "",
            };
            return Err(SimError::Deployment(format!(
                "control plane {}: {what}: {status}: {}{hint}",
                self.base,
                body.chars().take(500).collect::<String>()
            )));
        }
        serde_json::from_str(&body).map_err(|err| {
            SimError::Deployment(format!(
                "control plane {}: {what}: unexpected answer ({err})",
                self.base
            ))
        })
    }

    /// Checks that the control plane answers at all (health is open to everyone).
    pub async fn check_reachable(&self) -> Result<(), SimError> {
        let url = format!("{}/healthz", self.base);
        self.client
            .get(&url)
            .send()
            .await
            .map_err(|err| SimError::Unreachable(format!("control plane at {url}: {err}")))?;
        Ok(())
    }

    pub async fn config(&self) -> Result<CurrentConfig, SimError> {
        self.json(
            "reading the config",
            self.request(reqwest::Method::GET, "/v1/config"),
        )
        .await
    }

    /// The deployment as the file the control plane was started with describes it,
    /// when that file is readable here: its data directory holds the nodes'
    /// credentials (for reading edges' admin `/stats`).
    pub async fn started_with(&self) -> Option<edgebox_config::Deployment> {
        let history: edgebox_wire::control_plane::History = self
            .json(
                "reading the history",
                self.request(reqwest::Method::GET, "/v1/config/history"),
            )
            .await
            .ok()?;
        history
            .versions
            .iter()
            .rev()
            .filter_map(|version| version.source.strip_prefix("startup "))
            .find_map(|path| edgebox_config::load_file(std::path::Path::new(path)).ok())
    }

    /// Bound addresses of every node's services, as the nodes reported them.
    pub async fn addresses(&self) -> Result<BTreeMap<(String, String), SocketAddr>, SimError> {
        let list: NodeList = self
            .json(
                "listing nodes",
                self.request(reqwest::Method::GET, "/v1/nodes"),
            )
            .await?;
        let mut addrs = BTreeMap::new();
        for node in list.nodes {
            for listener in node.listeners {
                if let Some(addr) = listener.addr.and_then(|addr| addr.parse().ok()) {
                    addrs.insert((node.name.clone(), listener.service), addr);
                }
            }
        }
        Ok(addrs)
    }

    /// Applies `toml` and waits until every node reports it applied (or `timeout`).
    pub async fn apply(&self, toml: &str, timeout: Duration) -> Result<(), SimError> {
        let applied: Applied = self
            .json(
                "putting the config",
                self.request(reqwest::Method::PUT, "/v1/config")
                    .json(&serde_json::json!({ "toml": toml })),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status: ConfigStatus = self
                .json(
                    "reading config status",
                    self.request(reqwest::Method::GET, "/v1/config/status"),
                )
                .await?;
            if let Some(failed) = status
                .nodes
                .iter()
                .find(|node| node.version == Some(applied.version) && node.applied == Some(false))
            {
                return Err(SimError::Deployment(format!(
                    "node {} could not apply config version {}: {}",
                    failed.node,
                    applied.version,
                    failed.error.as_deref().unwrap_or("no reason given")
                )));
            }
            // Edges and origins carry what a variant changes; the sandbox and the
            // control plane itself need not apply it.
            let behind: Vec<&str> = status
                .nodes
                .iter()
                .filter(|node| matches!(node.role.as_deref(), None | Some("edge" | "origin")))
                .filter(|node| node.version != Some(applied.version))
                .map(|node| node.node.as_str())
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SimError::Deployment(format!(
                    "config version {} was stored but not applied within {timeout:?} by: {} (do these nodes watch the control plane?)",
                    applied.version,
                    behind.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Empties every edge's cache so that the variant starts cold.
    pub async fn purge_all(&self) -> Result<(), SimError> {
        let _: serde_json::Value = self
            .json(
                "purging caches",
                self.request(reqwest::Method::POST, "/v1/purge")
                    .json(&serde_json::json!({ "all": true })),
            )
            .await?;
        Ok(())
    }
}
