//! The edge's shared state: the hot-reloadable [`Snapshot`] (behind an `ArcSwap`),
//! counters that live for the process, and the reload path (the same build path as
//! start-up).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use edgebox_config::{ConfigLocation, Deployment, EdgeNode, Role};
use edgebox_wire::edge::{
    CacheStatus, LATENCY_BOUNDS_MS, LatencyHistogram, RequestCounts, Served, Tier as ServedTier,
};

use crate::cache::{CacheOptions, TieredStorage};
use crate::compress;
use crate::discovery::Resolver;
use crate::latency::Simulator;
use crate::tls::{CertStore, TlsError};
use crate::upstream::{OriginRegistry, Upstream};

/// Everything a request needs from config, swapped whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u64,
    pub deployment: Arc<Deployment>,
    pub region: String,
    pub edge: EdgeNode,
    pub upstream: Arc<Upstream>,
    pub latency: Option<Simulator>,
    pub compression: Option<compress::Policy>,
    pub max_header_size: u64,
    pub max_body_size: u64,
    pub client_timeout: std::time::Duration,
    /// Signs and checks `x-edgebox-hop` (`crate::hop`); re-read on reload.
    pub hop_key: Arc<crate::hop::HopKey>,
    /// `[[edge.rate_limit.rules]]` with their counters since this snapshot was built.
    pub rate_limit: crate::ratelimit::Rules,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("node {0} is not an edge in the new configuration")]
    NotAnEdge(String),
    #[error("node name {0:?} cannot appear in a Via header")]
    NodeName(String),
    #[error("certificates: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    HopKey(#[from] crate::hop::HopKeyError),
}

/// Counters for `/stats` and `/metrics`, one set per worker thread (`crate::sharded`):
/// every response bumps several, and shared ones cost a cache-line transfer between cores
/// each time. Read them through the summing accessors.
#[derive(Default)]
pub struct Stats {
    shards: crate::sharded::Sharded<StatsShard>,
}

#[derive(Debug, Default)]
pub struct StatsShard {
    pub total: AtomicU64,
    /// Index 0 = 1xx ... 4 = 5xx.
    pub by_class: [AtomicU64; 5],
    pub bytes_sent: AtomicU64,
    /// Responses by `X-Cache-Tier`, indexed by [`ServedTier::index`].
    pub tier_responses: [AtomicU64; ServedTier::ALL.len()],
    /// Body bytes sent by `X-Cache-Tier`.
    pub tier_bytes: [AtomicU64; ServedTier::ALL.len()],
    /// Responses by `X-Cache`, indexed by [`CacheStatus::index`].
    pub cache_status: [AtomicU64; CacheStatus::ALL.len()],
    /// Requests by duration, in the buckets of [`LATENCY_BOUNDS_MS`] (plus overflow).
    pub latency: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl Stats {
    pub fn record(&self, status: u16, bytes: u64) {
        let local = self.shards.local();
        local.total.fetch_add(1, Ordering::Relaxed);
        if (100..600).contains(&status) {
            local.by_class[(status / 100 - 1) as usize].fetch_add(1, Ordering::Relaxed);
        }
        local.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Requests answered, by status class.
    pub fn requests(&self) -> RequestCounts {
        let class = |i: usize| self.shards.sum(|s| &s.by_class[i]);
        RequestCounts {
            total: self.shards.sum(|s| &s.total),
            informational: class(0),
            success: class(1),
            redirection: class(2),
            client_error: class(3),
            server_error: class(4),
        }
    }

    /// Counts a request that took `elapsed` from its first hook to its log line.
    pub fn record_latency(&self, elapsed: std::time::Duration) {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.shards.local().latency[LatencyHistogram::bucket(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests by duration since start.
    pub fn latency(&self) -> LatencyHistogram {
        let mut histogram = LatencyHistogram::default();
        for (i, count) in histogram.counts.iter_mut().enumerate() {
            *count = self.shards.sum(|s| &s.latency[i]);
        }
        histogram
    }

    pub fn bytes_sent(&self) -> u64 {
        self.shards.sum(|s| &s.bytes_sent)
    }

    /// Responses and body bytes served by `tier`.
    pub fn served_by(&self, tier: ServedTier) -> Served {
        let i = tier.index();
        Served {
            responses: self.shards.sum(|s| &s.tier_responses[i]),
            bytes: self.shards.sum(|s| &s.tier_bytes[i]),
        }
    }

    /// Responses sent with `X-Cache: status`.
    pub fn with_status(&self, status: CacheStatus) -> u64 {
        self.shards.sum(|s| &s.cache_status[status.index()])
    }

    /// Counts a response by how it was served (its `X-Cache-Tier` and `X-Cache`).
    pub fn record_served(&self, tier: ServedTier, status: CacheStatus, bytes: u64) {
        let local = self.shards.local();
        local.tier_responses[tier.index()].fetch_add(1, Ordering::Relaxed);
        local.tier_bytes[tier.index()].fetch_add(bytes, Ordering::Relaxed);
        local.cache_status[status.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Fills the `by_tier` and `by_status` parts of the cache stats.
    pub fn add_served(&self, cache: &mut edgebox_wire::edge::CacheStats) {
        cache.by_tier = ServedTier::ALL
            .into_iter()
            .map(|tier| (tier, self.served_by(tier)))
            .collect();
        cache.by_status = CacheStatus::ALL
            .into_iter()
            .map(|status| (status, self.with_status(status)))
            .collect();
    }
}

pub struct EdgeState {
    pub node: String,
    pub location: ConfigLocation,
    pub started: Instant,
    snapshot: ArcSwap<Snapshot>,
    pub stats: Stats,
    pub origins: OriginRegistry,
    pub draining: AtomicBool,
    pub in_flight: AtomicI64,
    pub certs: Option<Arc<CertStore>>,
    pub resolver: Resolver,
    /// The cache tiers, opened once per process: capacities and the directory are fixed for
    /// its life (the TTL rules, serve-stale defaults and `enabled` reload with the snapshot).
    pub cache: &'static TieredStorage,
    /// Collapses concurrent misses for one key into one upstream fetch.
    pub cache_lock: &'static pingora::cache::lock::CacheKeyLockImpl,
    /// Request ids for requests that did not bring a usable one.
    pub ids: crate::request_id::RequestIds,
    /// This edge's `Via` entry over HTTP/1.1 and HTTP/2 (`1.1 edgebox-NODE`), made once.
    pub via_h1: http::HeaderValue,
    pub via_h2: http::HeaderValue,
    /// This edge's name in `Cache-Status` (`proxy/cache_status.rs`), made once.
    pub cache_status_name: String,
    /// The `Cache-Status` values without a per-request part, made once.
    pub cache_status_fixed: crate::proxy::CacheStatusFixed,
    reload_lock: tokio::sync::Mutex<()>,
    /// The config agent's view of the control plane (set once the agent runs), for
    /// `/healthz`.
    pub agent_link: std::sync::OnceLock<edgebox_node::agent::LinkWatch>,
    /// Every client's rate-limit buckets, kept across reloads.
    pub buckets: crate::ratelimit::Buckets,
    /// The access-log writer, reconfigured on reload.
    pub access_log: crate::access_log::AccessLog,
}

impl EdgeState {
    pub fn new(
        deployment: Deployment,
        node: &str,
        location: ConfigLocation,
        certs: Option<Arc<CertStore>>,
    ) -> Result<Self, ReloadError> {
        let origins = OriginRegistry::default();
        let options = match deployment.node(node).map(|n| &n.role) {
            Some(Role::Edge(edge)) => CacheOptions::for_node(&deployment, node, edge),
            _ => return Err(ReloadError::NotAnEdge(node.to_owned())),
        };
        let cache = TieredStorage::open_static(&options);
        // A waiter gives up after this long and fetches on its own (the holder is stuck).
        let cache_lock: &'static pingora::cache::lock::CacheKeyLockImpl = Box::leak(
            pingora::cache::lock::CacheLock::new_boxed(std::time::Duration::from_secs(10)),
        );
        let snapshot = build_snapshot(deployment, node, 1, &origins)?;
        let access_log =
            crate::access_log::AccessLog::start(access_log_destination(&snapshot.deployment, node));
        Ok(Self {
            buckets: crate::ratelimit::Buckets::default(),
            access_log,
            node: node.to_owned(),
            location,
            started: Instant::now(),
            snapshot: ArcSwap::from_pointee(snapshot),
            stats: Stats::default(),
            origins,
            draining: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            certs,
            resolver: Resolver::new(),
            cache,
            cache_lock,
            ids: crate::request_id::RequestIds::new(node),
            via_h1: via_value("1.1", node)?,
            via_h2: via_value("2", node)?,
            cache_status_name: crate::proxy::cache_name(node),
            cache_status_fixed: crate::proxy::CacheStatusFixed::new(&crate::proxy::cache_name(
                node,
            )),
            reload_lock: tokio::sync::Mutex::new(()),
            agent_link: std::sync::OnceLock::new(),
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// `edge.limits.client_timeout` of the current snapshot, read without taking a
    /// reference to it (`snapshot()` bumps a count that every worker thread shares).
    pub fn client_timeout(&self) -> std::time::Duration {
        self.snapshot.load().client_timeout
    }

    /// Applies a new deployment: everything is built and checked first, then swapped in
    /// at once; on any error nothing changes.
    pub async fn reload(&self, deployment: Deployment) -> Result<u64, ReloadError> {
        let _serialised = self.reload_lock.lock().await;
        let current = self.snapshot();
        let version = current.version + 1;
        let next = build_snapshot(deployment, &self.node, version, &self.origins)?;
        if let Some(certs) = &self.certs {
            certs.check(&next.deployment.tls)?;
        }
        if next.edge.http != current.edge.http
            || next.edge.https != current.edge.https
            || next.edge.admin != current.edge.admin
        {
            tracing::warn!("listener addresses changed; they take effect at the next restart");
        }
        // Resolve host members before the new upstream takes traffic.
        let hosts = next.upstream.hosts();
        if !hosts.is_empty() {
            let mut resolved = std::collections::HashMap::new();
            for (host, _) in hosts {
                if let Ok((addrs, _)) = self.resolver.resolve(&host).await {
                    resolved.insert(host, addrs);
                }
            }
            next.upstream.set_addresses(&self.origins, &resolved);
        }
        if let Some(certs) = &self.certs {
            certs.apply(&next.deployment.tls)?;
        }
        tracing::info!(version, policy = ?next.upstream.policy, upstream = %next.upstream.label, "configuration applied");
        let access_log = access_log_destination(&next.deployment, &self.node);
        self.snapshot.store(Arc::new(next));
        self.access_log.configure(access_log).await;
        Ok(version)
    }
}

/// Where `[edge.access_log]` sends node `node`'s lines, if anywhere.
fn access_log_destination(
    deployment: &Deployment,
    node: &str,
) -> Option<crate::access_log::Destination> {
    let log = deployment.edge.access_log.as_ref()?;
    Some(crate::access_log::Destination {
        format: log.format,
        file: log.target.resolve(deployment, node),
    })
}

/// Made once per process (an edge's state) and never freed: every request clones it twice,
/// and a static `Bytes` is cloned and dropped without touching a reference count that all
/// worker threads would share.
fn via_value(version: &str, node: &str) -> Result<http::HeaderValue, ReloadError> {
    crate::header_text::static_value(format!("{version} edgebox-{node}").into_bytes())
        .map_err(|_| ReloadError::NodeName(node.to_owned()))
}

fn build_snapshot(
    deployment: Deployment,
    node: &str,
    version: u64,
    origins: &OriginRegistry,
) -> Result<Snapshot, ReloadError> {
    let me = deployment
        .node(node)
        .ok_or_else(|| ReloadError::NotAnEdge(node.to_owned()))?;
    let Role::Edge(edge) = &me.role else {
        return Err(ReloadError::NotAnEdge(node.to_owned()));
    };
    let edge = edge.clone();
    let region = me.region.clone();
    let upstream = Arc::new(Upstream::build(&deployment, node, origins));
    let hop_key = Arc::new(crate::hop::HopKey::resolve(&deployment.edge.hop_key)?);
    Ok(Snapshot {
        rate_limit: crate::ratelimit::Rules::new(&deployment.edge.rate_limit),
        hop_key,
        version,
        region,
        edge,
        upstream,
        latency: Simulator::new(&deployment.latency),
        compression: compress::Policy::new(&deployment.edge.compression),
        max_header_size: deployment.edge.max_header_size,
        max_body_size: deployment.edge.max_body_size,
        client_timeout: deployment.edge.client_timeout,
        deployment: Arc::new(deployment),
    })
}
