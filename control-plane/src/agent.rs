//! The node side of the config lifecycle, for any daemon to spawn.
//!
//! The agent long-polls `GET /v1/config/watch?after=V`; for each new version it parses
//! and validates the TOML with [`edgebox_config::parse`] (the same checks as start-up),
//! hands the checked [`Deployment`] to the daemon's apply callback, and reports the
//! outcome with `POST /v1/config/status` (with the addresses the daemon bound, so
//! port-0 listeners become reachable). While the control plane is away it retries
//! with backoff; the daemon keeps serving whatever it applied last.
//!
//! Wiring it into a daemon (after its listeners are bound):
//! ```text
//! let agent = edgebox_control_plane::agent::AgentConfig::from_deployment(&deployment, node)
//!     .map(|config| config.address("admin", admin_addr));
//! if let Some(config) = agent {
//!     let handle = edgebox_control_plane::agent::spawn(config, move |deployment, version| {
//!         let app = app.clone();
//!         async move { app.reload(deployment).map_err(|err| format!("{err:#}")) }
//!     });
//!     // keep `handle` alive for the life of the daemon; dropping it stops the agent
//! }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgebox_config::{Deployment, TokenRole, TokenSecret};
use tokio::sync::watch;

use crate::wire::{StatusReport, WatchResponse};

/// Where the agent finds the control plane and what it tells it.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://HOST:PORT` of the control plane.
    pub control_plane: String,
    /// This node's name.
    pub node: String,
    /// Operator token; re-read on every attempt so a file generated after the node
    /// started is picked up.
    pub token: Option<(String, TokenSecret)>,
    /// Relative paths in received configs resolve against this directory.
    pub base_dir: PathBuf,
    /// Bound addresses by service, reported with each status.
    pub addresses: BTreeMap<String, SocketAddr>,
    /// Longest long-poll wait asked of the control plane.
    pub poll_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl AgentConfig {
    /// The agent settings a node of `deployment` uses: the control plane's address and
    /// the first operator token. `None` when the deployment has no control plane.
    pub fn from_deployment(deployment: &Deployment, node: &str) -> Option<Self> {
        let addr = deployment.control_plane_addr()?;
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let token = deployment
            .control_plane
            .tokens
            .iter()
            .find(|token| token.role == TokenRole::Operator)
            .map(|token| (token.name.clone(), token.secret.clone()));
        Some(Self {
            control_plane: format!("http://{addr}"),
            node: node.to_owned(),
            token,
            base_dir: crate::state::base_dir_of(deployment),
            addresses: BTreeMap::new(),
            poll_timeout: Duration::from_secs(25),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        })
    }

    /// Adds a bound address to report.
    pub fn address(mut self, service: &str, addr: SocketAddr) -> Self {
        self.addresses.insert(service.to_owned(), addr);
        self
    }
}

/// A running agent. Dropping it stops the agent.
pub struct AgentHandle {
    applied: watch::Receiver<Option<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    /// The last version applied successfully.
    pub fn applied_version(&self) -> Option<u64> {
        *self.applied.borrow()
    }

    /// A receiver that changes whenever a version is applied.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.applied.clone()
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("control plane answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("token: {0}")]
    Token(#[from] crate::auth::TokenError),
}

/// Starts the agent on the current tokio runtime. `apply` gets each new checked
/// deployment and its version and says whether the daemon applied it (`Err` with a
/// reason otherwise; the daemon must then keep running its previous config).
pub fn spawn<F, Fut>(config: AgentConfig, apply: F) -> AgentHandle
where
    F: FnMut(Deployment, u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    crate::install_crypto();
    let (applied_tx, applied) = watch::channel(None);
    let task = tokio::spawn(run(config, apply, applied_tx));
    AgentHandle { applied, task }
}

async fn run<F, Fut>(config: AgentConfig, mut apply: F, applied: watch::Sender<Option<u64>>)
where
    F: FnMut(Deployment, u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("building the agent's HTTP client");
    let span = tracing::info_span!("config_agent", node = %config.node, control_plane = %config.control_plane);
    let _enter = span.enter();
    drop(_enter);
    let mut seen = 0u64;
    let mut backoff = config.backoff_min;
    let mut failing = false;
    // The last status and whether the control plane has it. A report that did not
    // arrive (the control plane was away, or restarted and lost its in-memory
    // reports) is sent again before the next poll; that also probes reconnection.
    let mut last_report: Option<StatusReport> = None;
    let mut delivered = true;
    loop {
        let step = async {
            if !delivered {
                if let Some(report) = &last_report {
                    send_report(&http, &config, report).await?;
                }
                delivered = true;
            }
            poll(&http, &config, seen).await
        };
        match step.await {
            Ok(update) => {
                if failing {
                    tracing::info!(parent: &span, "control plane reachable again");
                    failing = false;
                }
                backoff = config.backoff_min;
                let Some(update) = update else { continue };
                let source = format!("control plane version {}", update.version);
                let outcome = match edgebox_config::parse(&update.toml, &source, &config.base_dir) {
                    Ok(deployment) => apply(deployment, update.version).await,
                    Err(errors) => Err(errors.to_string()),
                };
                match &outcome {
                    Ok(()) => {
                        tracing::info!(parent: &span, version = update.version, "applied config");
                        applied.send_replace(Some(update.version));
                    }
                    Err(error) => tracing::warn!(
                        parent: &span, version = update.version, %error,
                        "could not apply config; keeping the previous one"
                    ),
                }
                // Not retried on failure: the same text would fail again. The next
                // version (or a rollback) comes through the watch.
                seen = update.version;
                last_report = Some(status_report(&config, update.version, outcome));
                delivered = false;
            }
            Err(AgentError::Status { status, body }) if status.is_client_error() && !delivered => {
                // The control plane refuses this report (e.g. it no longer knows
                // this node); sending it again would not help.
                tracing::warn!(parent: &span, %status, %body, "config status report refused");
                delivered = true;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(parent: &span, %error, "control plane unreachable; serving the last config and retrying");
                    failing = true;
                }
                delivered = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

fn token(config: &AgentConfig) -> Result<Option<String>, AgentError> {
    match &config.token {
        None => Ok(None),
        Some((name, secret)) => Ok(Some(crate::auth::resolve(name, secret, false)?)),
    }
}

async fn poll(
    http: &reqwest::Client,
    config: &AgentConfig,
    after: u64,
) -> Result<Option<WatchResponse>, AgentError> {
    let mut request = http
        .get(format!(
            "{}/v1/config/watch?after={after}&timeout_ms={}&node={}",
            config.control_plane,
            config.poll_timeout.as_millis(),
            config.node
        ))
        .timeout(config.poll_timeout + Duration::from_secs(10));
    if let Some(token) = token(config)? {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    match response.status() {
        reqwest::StatusCode::NO_CONTENT => Ok(None),
        status if status.is_success() => Ok(Some(response.json().await?)),
        status => Err(AgentError::Status {
            status,
            body: response.text().await.unwrap_or_default(),
        }),
    }
}

fn status_report(config: &AgentConfig, version: u64, outcome: Result<(), String>) -> StatusReport {
    StatusReport {
        node: config.node.clone(),
        version,
        applied: outcome.is_ok(),
        error: outcome.err(),
        addresses: config
            .addresses
            .iter()
            .map(|(service, addr)| (service.clone(), addr.to_string()))
            .collect(),
    }
}

async fn send_report(
    http: &reqwest::Client,
    config: &AgentConfig,
    report: &StatusReport,
) -> Result<(), AgentError> {
    let mut request = http
        .post(format!("{}/v1/config/status", config.control_plane))
        .json(report)
        .timeout(Duration::from_secs(5));
    if let Some(token) = token(config)? {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(AgentError::Status {
            status: response.status(),
            body: response.text().await.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_of_the_embedded_default_finds_the_control_plane_and_its_operator_token() {
        let deployment = edgebox_config::parse(
            edgebox_config::EMBEDDED_DEFAULT,
            edgebox_config::EMBEDDED_NAME,
            std::path::Path::new("/srv/edgebox"),
        )
        .unwrap();
        let config = AgentConfig::from_deployment(&deployment, "edge-eu")
            .unwrap()
            .address("admin", "127.0.0.1:9180".parse().unwrap());
        assert_eq!(config.control_plane, "http://127.0.0.1:9090");
        let (name, secret) = config.token.unwrap();
        assert_eq!(name, "operator");
        assert!(matches!(secret, TokenSecret::File(path) if path.ends_with("tokens/operator")));
        assert_eq!(config.addresses["admin"].port(), 9180);
    }
}
