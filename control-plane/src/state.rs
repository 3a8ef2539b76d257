//! What every handler shares: the current config (a watch channel nodes long-poll on),
//! the persisted history, accepted tokens, node reports, an HTTP client, metrics.
//!
//! The history lives in one of two stores (`[control_plane.store]`): files under this
//! node's data directory (`store.rs`, one control-plane node), or etcd
//! (`etcd_store.rs`), shared by every replica. With etcd, this replica's view (current
//! version, history, node reports) follows etcd through a watch (`state/replica.rs`),
//! so a version written through any replica reaches this one's long polls; while etcd
//! cannot be reached the view stays as it was, reads are answered from it and writes
//! are refused with 503.

mod replica;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use edgebox_config::{Deployment, Node, Role, StoreSettings, TokenSecret};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::error::ApiError;
use crate::etcd_store::{Append, EtcdStore};
use crate::metrics::Metrics;
use crate::store::{Store, VersionMeta, now_rfc3339, sha256_hex};
use edgebox_wire::control_plane::{Applied, ConfigDiagnostic, StoreHealth};

/// A new version is retried this often when other replicas keep winning the race.
const MAX_APPEND_ATTEMPTS: usize = 64;

/// The config version in force.
#[derive(Debug)]
pub struct Current {
    pub meta: VersionMeta,
    pub text: String,
    pub deployment: Arc<Deployment>,
    /// etcd: the revision the current pointer was written at (what the next write
    /// compares against); 0 for the file store, or before etcd was ever reached.
    pub revision: i64,
}

/// What a node last reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub version: u64,
    pub applied: bool,
    pub error: Option<String>,
    pub reported_at: String,
    pub addresses: BTreeMap<String, SocketAddr>,
}

/// Where the history is kept.
enum Backend {
    File(Mutex<Store>),
    Etcd(Replica),
}

/// This replica's side of the etcd store.
struct Replica {
    store: EtcdStore,
    /// The history as last seen in etcd, by version.
    history: Mutex<BTreeMap<u64, VersionMeta>>,
    /// One write at a time from this replica, so that its own requests do not race
    /// each other, only other replicas.
    writer: tokio::sync::Mutex<()>,
    /// `Some(reason)` while etcd cannot be reached.
    down: Mutex<Option<String>>,
}

pub struct AppState {
    /// This control plane's node name.
    pub node: String,
    pub started: Instant,
    /// Relative paths in submitted configs resolve against this directory (the
    /// directory of the file the control plane was started with).
    base_dir: PathBuf,
    /// The file this process was started with: adopted as the first version when
    /// the store has none.
    started_with: Arc<Deployment>,
    backend: Backend,
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
    /// The sandbox nodes' loads and where the jobs this replica placed are.
    pub fleet: crate::fleet::Fleet,
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
    /// Loads the persisted config (preferred) or adopts `started` as version 1. With
    /// etcd, a first attempt to reach it is made here (bounded by its timeout); an
    /// etcd that does not answer leaves the replica serving `started` as version 0
    /// until it does.
    pub async fn init(started: Deployment, node: &str) -> Result<Arc<Self>, InitError> {
        let base_dir = started.base_dir.clone();
        let (backend, current) = match &started.control_plane.store {
            StoreSettings::File => {
                let (store, current) =
                    tokio::task::block_in_place(|| open_file_store(&started, node))?;
                (Backend::File(Mutex::new(store)), current)
            }
            StoreSettings::Etcd(settings) => {
                let store = EtcdStore::new(settings)?;
                tracing::info!(endpoints = ?settings.endpoints, prefix = %settings.prefix, "config store in etcd");
                if let Err(error) = share_secrets(&store, &started).await {
                    tracing::warn!(%error, "could not share secrets through etcd; using this replica's files");
                }
                let current = Current {
                    meta: VersionMeta {
                        version: 0,
                        created_at: now_rfc3339(),
                        source: format!("start-up file {} (etcd not reached yet)", started.source),
                        sha256: sha256_hex(&started.text),
                        bytes: started.text.len() as u64,
                    },
                    text: started.text.clone(),
                    deployment: Arc::new(started.clone()),
                    revision: 0,
                };
                let replica = Replica {
                    store,
                    history: Mutex::new(BTreeMap::new()),
                    writer: tokio::sync::Mutex::new(()),
                    down: Mutex::new(Some("not connected yet".into())),
                };
                (Backend::Etcd(replica), current)
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
        let state = Arc::new(Self {
            node: node.to_owned(),
            started: Instant::now(),
            base_dir,
            started_with: Arc::new(started),
            backend,
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
            fleet: crate::fleet::Fleet::default(),
        });
        if matches!(state.backend, Backend::Etcd(_)) {
            // One synchronous round so that a replica that can reach etcd serves
            // the shared current version from its first request.
            let revision = match state.resync().await {
                Ok(revision) => Some(revision),
                Err(error) => {
                    tracing::error!(%error, "etcd unreachable at start-up; serving the start-up file as version 0, refusing writes, retrying");
                    state.store_down(error.to_string());
                    None
                }
            };
            tokio::spawn(Arc::clone(&state).follow_etcd(revision));
        }
        Ok(state)
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
        match &self.backend {
            Backend::File(store) => store.lock().expect("store lock").history().to_vec(),
            Backend::Etcd(replica) => replica
                .history
                .lock()
                .expect("history lock")
                .values()
                .cloned()
                .collect(),
        }
    }

    /// The store's state for `/healthz`.
    pub fn store_health(&self) -> StoreHealth {
        match &self.backend {
            Backend::File(_) => StoreHealth {
                backend: "file".into(),
                reachable: true,
                error: None,
            },
            Backend::Etcd(replica) => {
                let down = replica.down.lock().expect("down lock").clone();
                StoreHealth {
                    backend: "etcd".into(),
                    reachable: down.is_none(),
                    error: down,
                }
            }
        }
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
    pub async fn apply(
        &self,
        text: &str,
        source: String,
        expected_version: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let deployment = self
            .validate(text, "<submitted config>")
            .map_err(|errors| ApiError::invalid_config(&errors))?;
        if let Backend::Etcd(replica) = &self.backend {
            self.refuse_while_down(replica)?;
            // Secrets of tokens the current version already has are shared already.
            if file_tokens(&deployment) != file_tokens(&self.current().deployment)
                && let Err(error) = share_secrets(&replica.store, &deployment).await
            {
                self.store_down(error.to_string());
                return Err(store_unavailable(&error.to_string()));
            }
        }
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
        match &self.backend {
            Backend::File(store) => tokio::task::block_in_place(|| {
                self.apply_to_file(store, text, source, expected_version, deployment, tokens)
            }),
            Backend::Etcd(replica) => {
                self.apply_to_etcd(replica, text, source, expected_version, deployment, tokens)
                    .await
            }
        }
    }

    fn apply_to_file(
        &self,
        store: &Mutex<Store>,
        text: &str,
        source: String,
        expected_version: Option<u64>,
        deployment: Deployment,
        tokens: Tokens,
    ) -> Result<Applied, ApiError> {
        // The store lock serialises writers, so the version check and the append
        // see the same current version.
        let mut store = store.lock().expect("store lock");
        let current = self.current();
        check_expected(&current, expected_version)?;
        if current.text == text {
            return Ok(Applied {
                version: current.meta.version,
                changed: false,
            });
        }
        let meta = store
            .append(text, source)
            .map_err(|err| ApiError::internal(format!("could not persist the config: {err}")))?;
        let version = meta.version;
        self.publish(meta, text.to_owned(), Arc::new(deployment), 0, Some(tokens));
        Ok(Applied {
            version,
            changed: true,
        })
    }

    async fn apply_to_etcd(
        &self,
        replica: &Replica,
        text: &str,
        source: String,
        expected_version: Option<u64>,
        deployment: Deployment,
        tokens: Tokens,
    ) -> Result<Applied, ApiError> {
        let _writer = replica.writer.lock().await;
        let deployment = Arc::new(deployment);
        let mut tokens = Some(tokens);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let current = self.current();
            // Version 0 is the start-up file, not a stored version: it is never
            // "unchanged", and a write on it must find etcd empty.
            let stored = current.meta.version > 0;
            if stored {
                check_expected(&current, expected_version)?;
                if current.text == text {
                    return Ok(Applied {
                        version: current.meta.version,
                        changed: false,
                    });
                }
            }
            let meta = VersionMeta {
                version: current.meta.version + 1,
                created_at: now_rfc3339(),
                source: source.clone(),
                sha256: sha256_hex(text),
                bytes: text.len() as u64,
            };
            let base = stored.then_some(current.revision);
            match replica.store.try_append(base, &meta, text).await {
                Ok(Append::Written { revision }) => {
                    let version = meta.version;
                    replica
                        .history
                        .lock()
                        .expect("history lock")
                        .insert(version, meta.clone());
                    self.publish(
                        meta,
                        text.to_owned(),
                        Arc::clone(&deployment),
                        revision,
                        tokens.take(),
                    );
                    return Ok(Applied {
                        version,
                        changed: true,
                    });
                }
                Ok(Append::Conflict(Some(latest))) => {
                    // Another replica wrote first: take its version and go again.
                    replica
                        .history
                        .lock()
                        .expect("history lock")
                        .insert(latest.meta.version, latest.meta.clone());
                    if !self.adopt(latest.meta, latest.text, latest.revision) {
                        return Err(store_unavailable(
                            "the current version in etcd does not validate on this replica",
                        ));
                    }
                }
                Ok(Append::Conflict(None)) => {
                    return Err(store_unavailable(
                        "the current pointer vanished from etcd; refusing to write over it",
                    ));
                }
                Err(error) => {
                    self.store_down(error.to_string());
                    return Err(store_unavailable(&error.to_string()));
                }
            }
        }
        Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "store_busy",
            format!("other replicas won {MAX_APPEND_ATTEMPTS} races in a row; retry"),
        ))
    }

    /// Makes `meta` current on this replica. Versions only move forward: one older
    /// than what the replica already shows (a watch event that arrives after this
    /// replica's own newer write) is ignored.
    fn publish(
        &self,
        meta: VersionMeta,
        text: String,
        deployment: Arc<Deployment>,
        revision: i64,
        tokens: Option<Tokens>,
    ) -> bool {
        let version = meta.version;
        let source = meta.source.clone();
        let listen_changed =
            self.current().deployment.control_plane_addr() != deployment.control_plane_addr();
        let replaced = self.current.send_if_modified(|current| {
            let newer = meta.version > current.meta.version
                || (meta.version == current.meta.version && revision != current.revision);
            if newer {
                *current = Arc::new(Current {
                    meta,
                    text,
                    deployment,
                    revision,
                });
            }
            newer
        });
        if !replaced {
            return false;
        }
        if listen_changed {
            tracing::warn!(
                "the control plane's listen address changed; it takes effect on restart"
            );
        }
        let tokens = match tokens {
            Some(tokens) => Some(tokens),
            None => match Tokens::load(&self.current().deployment) {
                Ok(tokens) => Some(tokens),
                Err(error) => {
                    tracing::error!(%error, version, "tokens of the new version cannot be used; keeping the previous ones");
                    None
                }
            },
        };
        if let Some(tokens) = tokens {
            *self.tokens.write().expect("tokens lock") = Arc::new(tokens);
        }
        self.metrics.set_config_version(version);
        self.invalidate_listing();
        tracing::info!(version, %source, "config version published");
        true
    }

    /// Validates and publishes a version another replica wrote. False when it does
    /// not validate here.
    fn adopt(&self, meta: VersionMeta, text: String, revision: i64) -> bool {
        let current = self.current();
        if meta.version < current.meta.version
            || (meta.version == current.meta.version && revision == current.revision)
        {
            return true;
        }
        let source = format!("etcd version {}", meta.version);
        match check(&text, &source, &self.base_dir, &self.node) {
            Ok(deployment) => {
                self.publish(meta, text, Arc::new(deployment), revision, None);
                true
            }
            Err(errors) => {
                tracing::error!(version = meta.version, %errors, "a version in etcd does not validate on this replica; not serving it");
                false
            }
        }
    }

    fn refuse_while_down(&self, replica: &Replica) -> Result<(), ApiError> {
        match replica.down.lock().expect("down lock").as_deref() {
            Some(reason) => Err(store_unavailable(reason)),
            None => Ok(()),
        }
    }

    fn store_down(&self, reason: String) {
        if let Backend::Etcd(replica) = &self.backend {
            let mut down = replica.down.lock().expect("down lock");
            if down.is_none() {
                tracing::error!(%reason, "etcd unreachable; serving reads from the last view, refusing writes");
            }
            *down = Some(reason);
        }
    }

    fn store_up(&self) {
        if let Backend::Etcd(replica) = &self.backend {
            let mut down = replica.down.lock().expect("down lock");
            if down.take().is_some() {
                tracing::info!("etcd reachable again");
            }
        }
    }

    /// Makes the text of an old `version` current again, as a new version.
    pub async fn rollback(&self, version: u64) -> Result<Applied, ApiError> {
        let text = match &self.backend {
            Backend::File(store) => {
                let store = store.lock().expect("store lock");
                if store.meta(version).is_none() {
                    return Err(ApiError::not_found(format!("no config version {version}")));
                }
                store.text(version).map_err(|err| {
                    ApiError::internal(format!("cannot read version {version}: {err}"))
                })?
            }
            Backend::Etcd(replica) => {
                self.refuse_while_down(replica)?;
                match replica.store.text(version).await {
                    Ok(Some(text)) => text,
                    Ok(None) => {
                        return Err(ApiError::not_found(format!("no config version {version}")));
                    }
                    Err(error) => {
                        self.store_down(error.to_string());
                        return Err(store_unavailable(&error.to_string()));
                    }
                }
            }
        };
        self.apply(&text, format!("rollback to {version}"), None)
            .await
    }

    /// Forgets the cached node listing (something it shows changed).
    pub fn invalidate_listing(&self) {
        self.listing_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records what `node` reported; with etcd, for every replica. A report that
    /// cannot reach etcd is still kept here (the node is not made to retry: it
    /// would hold up its watch).
    pub async fn record_report(&self, node: String, report: NodeReport) {
        if let Backend::Etcd(replica) = &self.backend
            && let Err(error) = replica.store.put_report(&node, &report).await
        {
            tracing::warn!(%node, %error, "could not share the node's report through etcd; kept on this replica");
        }
        self.record_report_locally(node, report);
    }

    fn record_report_locally(&self, node: String, report: NodeReport) {
        self.invalidate_listing();
        let count = {
            let mut reports = self.reports.lock().expect("reports lock");
            reports.insert(node, report);
            reports.len()
        };
        self.metrics.set_nodes_reporting(count as u64);
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

/// Opens the file store and picks the current version: the persisted one when it
/// still validates, else `started` as a new version.
fn open_file_store(started: &Deployment, node: &str) -> Result<(Store, Current), InitError> {
    let base_dir = &started.base_dir;
    let store_dir = started.node_data_dir(node).join("config");
    let (mut store, persisted) = Store::open(&store_dir)?;
    if let (Some(text), Some(meta)) = (persisted, store.current().cloned()) {
        let source = format!("persisted version {}", meta.version);
        match check(&text, &source, base_dir, node) {
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
                let current = Current {
                    meta,
                    text,
                    deployment: Arc::new(deployment),
                    revision: 0,
                };
                return Ok((store, current));
            }
            Err(errors) => tracing::error!(
                version = meta.version,
                %errors,
                "persisted config no longer validates; adopting the file started with as a new version"
            ),
        }
    }
    let meta = store.append(&started.text, format!("startup {}", started.source))?;
    tracing::info!(version = meta.version, source = %started.source, "adopted start-up config");
    let current = Current {
        meta,
        text: started.text.clone(),
        deployment: Arc::new(started.clone()),
        revision: 0,
    };
    Ok((store, current))
}

fn check_expected(current: &Current, expected_version: Option<u64>) -> Result<(), ApiError> {
    match expected_version {
        Some(expected) if expected != current.meta.version => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "version_conflict",
            format!(
                "expected current version {expected}, but it is {}",
                current.meta.version
            ),
        )),
        _ => Ok(()),
    }
}

/// 503 for a write the store cannot take now, with the reason.
fn store_unavailable(reason: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!(
            "the config store (etcd) cannot be reached, so nothing can be changed now: {reason}"
        ),
    )
}

/// Shares the secrets this deployment generates (the node key, `token_file` tokens)
/// through etcd, so that every replica accepts the same ones.
async fn share_secrets(
    store: &EtcdStore,
    deployment: &Deployment,
) -> Result<(), crate::etcd_store::ShareError> {
    store
        .share_secret(
            "node-key",
            &edgebox_node::credentials::NodeKey::path(&deployment.data_dir),
        )
        .await?;
    for token in &deployment.control_plane.tokens {
        if let TokenSecret::File(path) = &token.secret {
            store
                .share_secret(&format!("tokens/{}", token.name), path)
                .await?;
        }
    }
    Ok(())
}

/// The `token_file` tokens of a deployment, by name.
fn file_tokens(deployment: &Deployment) -> Vec<(&str, &Path)> {
    deployment
        .control_plane
        .tokens
        .iter()
        .filter_map(|token| match &token.secret {
            TokenSecret::File(path) => Some((token.name.as_str(), path.as_path())),
            _ => None,
        })
        .collect()
}
