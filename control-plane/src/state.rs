//! What every handler shares: the current config (a watch channel nodes long-poll on),
//! the persisted history, accepted tokens, node reports, an HTTP client, metrics.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use edgebox_config::{Deployment, Node, Role};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{Store, VersionMeta};
use edgebox_wire::control_plane::{Applied, ConfigDiagnostic};

/// The config version in force.
#[derive(Debug)]
pub struct Current {
    pub meta: VersionMeta,
    pub text: String,
    pub deployment: Arc<Deployment>,
}

/// What a node last reported.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub version: u64,
    pub applied: bool,
    pub error: Option<String>,
    pub reported_at: String,
    pub addresses: BTreeMap<String, SocketAddr>,
}

pub struct AppState {
    /// This control plane's node name.
    pub node: String,
    pub started: Instant,
    /// Relative paths in submitted configs resolve against this directory (the
    /// directory of the file the control plane was started with).
    base_dir: PathBuf,
    store: Mutex<Store>,
    current: watch::Sender<Arc<Current>>,
    tokens: RwLock<Arc<Tokens>>,
    /// The deployment's node key: checks nodes' credentials and mints the one each
    /// call to a node presents (`edgebox_node::credentials`).
    pub node_key: edgebox_node::credentials::NodeKey,
    reports: Mutex<BTreeMap<String, NodeReport>>,
    /// The address the API is bound to (known after bind).
    pub self_addr: OnceLock<SocketAddr>,
    pub http: reqwest::Client,
    pub metrics: Metrics,
    /// Cancelled on SIGTERM/SIGINT so that long polls and relays end promptly.
    pub shutdown: CancellationToken,
    /// The last node listing and when it was probed. `GET /v1/nodes` is open, so
    /// probes are shared: concurrent callers wait for one round, and a round is reused
    /// briefly, so callers cannot turn the control plane into a probe amplifier.
    pub node_listing:
        tokio::sync::Mutex<Option<(Instant, u64, edgebox_wire::control_plane::NodeList)>>,
    /// Bumped whenever what the listing shows changes (reports, drains, configs);
    /// a cached listing from an older generation is not reused.
    pub listing_generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("config store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("tokens: {0}")]
    Tokens(#[from] edgebox_node::secrets::TokenError),
    #[error("node key: {0}")]
    NodeKey(#[from] edgebox_node::credentials::CredentialError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl AppState {
    /// Loads the persisted config (preferred) or adopts `started` as version 1.
    pub fn init(started: Deployment, node: &str) -> Result<Arc<Self>, InitError> {
        let base_dir = started.base_dir.clone();
        let store_dir = started.node_data_dir(node).join("config");
        let (mut store, persisted) = Store::open(&store_dir)?;
        let mut adopted = None;
        if let (Some(text), Some(meta)) = (persisted, store.current().cloned()) {
            let source = format!("persisted version {}", meta.version);
            match check(&text, &source, &base_dir, node) {
                Ok(deployment) => {
                    tracing::info!(
                        version = meta.version,
                        dir = %store_dir.display(),
                        started_with = %started.source,
                        "using the persisted current config, not the file this process was started with"
                    );
                    if text != started.text {
                        tracing::warn!(
                            started_with = %started.source,
                            "the file this process was started with differs from the persisted config; \
                             use `edgebox reload` to apply the file"
                        );
                    }
                    adopted = Some(Current {
                        meta,
                        text,
                        deployment: Arc::new(deployment),
                    });
                }
                Err(errors) => tracing::error!(
                    version = meta.version,
                    %errors,
                    "persisted config no longer validates; adopting the file started with as a new version"
                ),
            }
        }
        let current = match adopted {
            Some(current) => current,
            None => {
                let meta = store.append(&started.text, format!("startup {}", started.source))?;
                tracing::info!(version = meta.version, source = %started.source, "adopted start-up config");
                Current {
                    meta,
                    text: started.text.clone(),
                    deployment: Arc::new(started),
                }
            }
        };
        let tokens = Tokens::load(&current.deployment)?;
        let node_key =
            edgebox_node::credentials::NodeKey::load_or_create(&current.deployment.data_dir)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let metrics = Metrics::default();
        metrics.set_config_version(current.meta.version);
        Ok(Arc::new(Self {
            node: node.to_owned(),
            started: Instant::now(),
            base_dir,
            store: Mutex::new(store),
            current: watch::Sender::new(Arc::new(current)),
            tokens: RwLock::new(Arc::new(tokens)),
            node_key,
            reports: Mutex::new(BTreeMap::new()),
            self_addr: OnceLock::new(),
            http,
            metrics,
            shutdown: CancellationToken::new(),
            node_listing: tokio::sync::Mutex::new(None),
            listing_generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Current>> {
        self.current.subscribe()
    }

    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens.read().expect("tokens lock").clone()
    }

    pub fn history(&self) -> Vec<VersionMeta> {
        self.store.lock().expect("store lock").history().to_vec()
    }

    /// Validates `text` as the deployment this control plane would run.
    pub fn validate(
        &self,
        text: &str,
        source: &str,
    ) -> Result<Deployment, edgebox_config::ConfigErrors> {
        check(text, source, &self.base_dir, &self.node)
    }

    /// Validates, persists and publishes `text` as the next version. Nothing changes
    /// unless every step up to the durable write succeeded.
    pub fn apply(
        &self,
        text: &str,
        source: String,
        expected_version: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let deployment = self
            .validate(text, "<submitted config>")
            .map_err(|errors| ApiError::invalid_config(&errors))?;
        let tokens = Tokens::load(&deployment).map_err(|err| {
            let mut error = ApiError::unprocessable(
                "invalid_config",
                "the config's tokens cannot be used; nothing was changed",
            );
            error.diagnostics = Some(vec![ConfigDiagnostic {
                path: "control_plane.tokens".into(),
                line: None,
                column: None,
                message: err.to_string(),
            }]);
            error
        })?;
        // The store lock serialises writers, so the version check and the append
        // see the same current version.
        let mut store = self.store.lock().expect("store lock");
        let current = self.current();
        if let Some(expected) = expected_version
            && expected != current.meta.version
        {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "version_conflict",
                format!(
                    "expected current version {expected}, but it is {}",
                    current.meta.version
                ),
            ));
        }
        if current.text == text {
            return Ok(Applied {
                version: current.meta.version,
                changed: false,
            });
        }
        let meta = store
            .append(text, source)
            .map_err(|err| ApiError::internal(format!("could not persist the config: {err}")))?;
        let listen_changed =
            current.deployment.control_plane_addr() != deployment.control_plane_addr();
        if listen_changed {
            tracing::warn!(
                "the control plane's listen address changed; it takes effect on restart"
            );
        }
        *self.tokens.write().expect("tokens lock") = Arc::new(tokens);
        self.metrics.set_config_version(meta.version);
        let version = meta.version;
        tracing::info!(version, source = %meta.source, "config version published");
        self.current.send_replace(Arc::new(Current {
            meta,
            text: text.to_owned(),
            deployment: Arc::new(deployment),
        }));
        Ok(Applied {
            version,
            changed: true,
        })
    }

    /// Makes the text of an old `version` current again, as a new version.
    pub fn rollback(&self, version: u64) -> Result<Applied, ApiError> {
        let text = {
            let store = self.store.lock().expect("store lock");
            if store.meta(version).is_none() {
                return Err(ApiError::not_found(format!("no config version {version}")));
            }
            store.text(version).map_err(|err| {
                ApiError::internal(format!("cannot read version {version}: {err}"))
            })?
        };
        self.apply(&text, format!("rollback to {version}"), None)
    }

    /// Forgets the cached node listing (something it shows changed).
    pub fn invalidate_listing(&self) {
        self.listing_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn record_report(&self, node: String, report: NodeReport) {
        self.invalidate_listing();
        self.reports
            .lock()
            .expect("reports lock")
            .insert(node, report);
        self.metrics
            .set_nodes_reporting(self.reports.lock().expect("reports lock").len() as u64);
    }

    pub fn reports(&self) -> BTreeMap<String, NodeReport> {
        self.reports.lock().expect("reports lock").clone()
    }

    /// Where `service` of `node` can be reached: the configured address, or for
    /// port-0 listeners the one the node reported; wildcard IPs become loopback.
    pub fn service_addr(&self, node: &Node, service: &str) -> Option<SocketAddr> {
        if node.name == self.node
            && service == "api"
            && let Some(addr) = self.self_addr.get()
        {
            return Some(reachable(*addr));
        }
        let configured = node
            .listeners()
            .into_iter()
            .find(|(name, _)| *name == service)
            .map(|(_, addr)| addr)?;
        if configured.port() != 0 {
            return Some(reachable(configured));
        }
        let reports = self.reports.lock().expect("reports lock");
        reports
            .get(&node.name)
            .and_then(|report| report.addresses.get(service))
            .copied()
            .map(reachable)
    }

    /// The credential a call to `node` presents: the node's own, which only the node
    /// and this control plane know.
    pub fn credential_for(&self, node: &Node) -> String {
        self.node_key.mint(node.role_name(), &node.name)
    }

    /// The service a node's health is probed on.
    pub fn health_service(node: &Node) -> &'static str {
        match node.role {
            Role::Edge(_) => "admin",
            Role::Origin(_) => "http",
            Role::Sandbox(_) | Role::ControlPlane(_) => "api",
        }
    }
}

fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// The validation a new config goes through: the shared checks, plus that it still
/// has this control plane in it.
fn check(
    text: &str,
    source: &str,
    base_dir: &Path,
    node: &str,
) -> Result<Deployment, edgebox_config::ConfigErrors> {
    let deployment = edgebox_config::parse(text, source, base_dir)?;
    match deployment.node(node).map(|n| &n.role) {
        Some(Role::ControlPlane(_)) => Ok(deployment),
        _ => Err(edgebox_config::ConfigErrors {
            file: source.to_owned(),
            diagnostics: vec![edgebox_config::Diagnostic {
                path: "nodes".into(),
                line: None,
                column: None,
                message: format!(
                    "the config must keep control-plane node {node:?}, which is serving this API"
                ),
            }],
        }),
    }
}
