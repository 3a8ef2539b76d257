//! The node side of the config lifecycle, for any daemon to spawn.
//!
//! The agent long-polls `GET /v1/config/watch?after=V` on the control plane; for each
//! new version it parses and validates the TOML with [`edgebox_config::parse`] (the same
//! checks as start-up), hands the checked [`Deployment`] to the daemon's apply callback,
//! and reports the outcome with `POST /v1/config/status` (with the addresses the daemon
//! bound, so port-0 listeners become reachable). It knows every control-plane replica
//! ([`Deployment::control_plane_urls`]) and fails over to the next one when the one it
//! uses stops answering; while none answers it retries with backoff and the daemon
//! keeps serving whatever it applied last. What it sees is published as a
//! [`ControlPlaneLink`] for the node's `/healthz`.
//!
//! It speaks plain HTTP/1.1 through hyper, which every daemon already has, so that a
//! node does not carry a second HTTP client stack for one long-poll.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use edgebox_config::Deployment;
use edgebox_wire::control_plane::{StatusReport, WatchResponse};
use edgebox_wire::health::ControlPlaneLink;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use crate::backoff::Backoff;

/// Why the daemon could not apply a version; reported to the control plane.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// Where the agent finds the control plane and what it tells it.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://HOST:PORT` of every control-plane replica, in the order tried.
    pub control_planes: Vec<String>,
    /// This node's name.
    pub node: String,
    /// This node's credential ([`crate::credentials`]): the control plane lets it
    /// watch this node's config and report this node's status, nothing else.
    pub credential: Option<String>,
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
    /// the node's credential ([`crate::credentials::ensure`]; a node whose credential
    /// cannot be read runs without one and is refused, which its log says). `None` when
    /// the deployment has no control plane, or one on port 0 (which a node cannot find
    /// from the config).
    pub fn from_deployment(deployment: &Deployment, node: &str) -> Option<Self> {
        let control_planes = deployment.control_plane_urls();
        if control_planes.is_empty() {
            return None;
        }
        let credential = match crate::credentials::ensure(deployment, node) {
            Ok(credential) => Some(credential),
            Err(error) => {
                tracing::error!(%error, "no node credential; the control plane will refuse this node");
                None
            }
        };
        Some(Self {
            control_planes,
            node: node.to_owned(),
            credential,
            base_dir: deployment.base_dir.clone(),
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
    link: LinkWatch,
    task: tokio::task::JoinHandle<()>,
}

/// What the agent last saw of the control plane, for the node's `/healthz`.
#[derive(Debug, Clone)]
pub struct LinkWatch {
    state: watch::Receiver<LinkState>,
}

#[derive(Debug, Clone)]
struct LinkState {
    connected: bool,
    url: String,
    urls: Vec<String>,
    applied: Option<u64>,
    last_contact: Option<std::time::Instant>,
    error: Option<String>,
}

impl LinkWatch {
    /// The link as `/healthz` shows it.
    pub fn snapshot(&self) -> ControlPlaneLink {
        let state = self.state.borrow();
        ControlPlaneLink {
            connected: state.connected,
            url: state.url.clone(),
            urls: state.urls.clone(),
            applied_version: state.applied,
            last_contact_ms: state.last_contact.map(|at| at.elapsed().as_millis() as u64),
            error: state.error.clone(),
        }
    }
}

impl AgentHandle {
    /// The agent's view of the control plane, to show in `/healthz`.
    pub fn link(&self) -> LinkWatch {
        self.link.clone()
    }

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
    Http(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("control plane answered {status}: {body}")]
    Status {
        status: http::StatusCode,
        body: String,
    },
    #[error("decoding the answer: {0}")]
    Json(#[from] serde_json::Error),
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Starts the agent on the current tokio runtime. `apply` gets each new checked
/// deployment and its version and says whether the daemon applied it (an error with a
/// reason otherwise; the daemon must then keep running its previous config).
pub fn spawn<F, Fut>(config: AgentConfig, apply: F) -> AgentHandle
where
    F: FnMut(Deployment, u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ApplyError>> + Send + 'static,
{
    let (applied_tx, applied) = watch::channel(None);
    let (link_tx, link) = watch::channel(LinkState {
        connected: false,
        url: config.control_planes[0].clone(),
        urls: config.control_planes.clone(),
        applied: None,
        last_contact: None,
        error: None,
    });
    let task = tokio::spawn(run(config, apply, applied_tx, link_tx));
    AgentHandle {
        applied,
        link: LinkWatch { state: link },
        task,
    }
}

async fn run<F, Fut>(
    config: AgentConfig,
    mut apply: F,
    applied: watch::Sender<Option<u64>>,
    link: watch::Sender<LinkState>,
) where
    F: FnMut(Deployment, u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ApplyError>> + Send + 'static,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    let http: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let span = tracing::info_span!("config_agent", node = %config.node, control_planes = ?config.control_planes);
    // The replica in use; a failure moves on to the next, and only a whole round of
    // failures waits (so losing one replica costs no backoff).
    let mut which = 0usize;
    let mut failures_in_a_row = 0usize;
    let mut seen = 0u64;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut failing = false;
    // The last status and whether the control plane has it. A report that did not
    // arrive (the control plane was away, or restarted and lost its in-memory
    // reports) is sent again before the next poll; that also probes reconnection.
    let mut last_report: Option<StatusReport> = None;
    let mut delivered = true;
    loop {
        let base = &config.control_planes[which % config.control_planes.len()];
        let step = async {
            if !delivered {
                if let Some(report) = &last_report {
                    send_report(&http, &config, base, report).await?;
                }
                delivered = true;
            }
            poll(&http, &config, base, seen).await
        };
        match step.await {
            Ok(update) => {
                if failing {
                    tracing::info!(parent: &span, control_plane = %base, "control plane reachable again");
                    failing = false;
                }
                failures_in_a_row = 0;
                backoff.reset();
                link.send_modify(|state| {
                    state.connected = true;
                    state.url = base.clone();
                    state.last_contact = Some(std::time::Instant::now());
                    state.error = None;
                });
                let Some(update) = update else { continue };
                let source = format!("control plane version {}", update.version);
                let outcome = match edgebox_config::parse(&update.toml, &source, &config.base_dir) {
                    Ok(deployment) => apply(deployment, update.version)
                        .await
                        .map_err(|e| error_chain(&*e)),
                    Err(errors) => Err(errors.to_string()),
                };
                match &outcome {
                    Ok(()) => {
                        tracing::info!(parent: &span, version = update.version, "applied config");
                        applied.send_replace(Some(update.version));
                        link.send_modify(|state| state.applied = Some(update.version));
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
                failures_in_a_row += 1;
                which = (which + 1) % config.control_planes.len();
                let next = config.control_planes[which].clone();
                let whole_round = failures_in_a_row >= config.control_planes.len();
                if whole_round && !failing {
                    tracing::warn!(parent: &span, %error, "control plane unreachable (every replica); serving the last config and retrying");
                    failing = true;
                } else if !whole_round {
                    tracing::info!(parent: &span, failed = %base, %error, next = %next, "control plane replica failed; trying the next");
                }
                link.send_modify(|state| {
                    state.connected = !whole_round && state.connected;
                    state.url = next;
                    state.error = Some(error.to_string());
                });
                delivered = false;
                if whole_round {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

/// An error and its sources, `outer: inner: innermost`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sends one request and reads the whole answer within `timeout`.
async fn exchange(
    http: &HttpClient,
    config: &AgentConfig,
    base: &str,
    method: http::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), AgentError> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path_and_query}"));
    if let Some(credential) = &config.credential {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {credential}"));
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("a request built from a valid URI");
    let exchange = async {
        let response = http.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, AgentError>((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AgentError::Timeout(timeout))?
}

async fn poll(
    http: &HttpClient,
    config: &AgentConfig,
    base: &str,
    after: u64,
) -> Result<Option<WatchResponse>, AgentError> {
    let path = format!(
        "/v1/config/watch?after={after}&timeout_ms={}&node={}",
        config.poll_timeout.as_millis(),
        config.node
    );
    let timeout = config.poll_timeout + Duration::from_secs(10);
    let (status, body) =
        exchange(http, config, base, http::Method::GET, &path, None, timeout).await?;
    match status {
        http::StatusCode::NO_CONTENT => Ok(None),
        status if status.is_success() => Ok(Some(serde_json::from_slice(&body)?)),
        status => Err(AgentError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
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
    http: &HttpClient,
    config: &AgentConfig,
    base: &str,
    report: &StatusReport,
) -> Result<(), AgentError> {
    let body = serde_json::to_vec(report)?;
    let (status, body) = exchange(
        http,
        config,
        base,
        http::Method::POST,
        "/v1/config/status",
        Some(body),
        Duration::from_secs(5),
    )
    .await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(AgentError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_of_the_embedded_default_finds_the_control_plane_and_its_credential() {
        let dir = tempfile::tempdir().unwrap();
        let deployment = edgebox_config::parse(
            edgebox_config::EMBEDDED_DEFAULT,
            edgebox_config::EMBEDDED_NAME,
            dir.path(),
        )
        .unwrap();
        let config = AgentConfig::from_deployment(&deployment, "edge-eu")
            .unwrap()
            .address("admin", "127.0.0.1:9180".parse().unwrap());
        assert_eq!(config.control_planes, ["http://127.0.0.1:9090"]);
        assert_eq!(config.base_dir, dir.path());
        let credential = config.credential.unwrap();
        assert!(credential.starts_with("ebn1.edge-eu."), "{credential}");
        assert!(
            !dir.path().join(".edgebox/tokens/operator").exists(),
            "no operator token is read, or made, by a node"
        );
        assert_eq!(config.addresses["admin"].port(), 9180);
    }
}
