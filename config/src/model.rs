//! The checked deployment: every reference resolved, every value in range.
//!
//! Daemons only ever see these types, so anything they rely on (a parent exists, a
//! listener address is unique, a policy name is known) holds by construction.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cidr::Cidr;
use crate::pattern::PathPattern;

/// A whole deployment, as every daemon sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// Where the config came from, for messages.
    pub source: String,
    /// The TOML text it was read from, kept so it can be handed on unchanged.
    #[serde(skip)]
    pub text: String,
    /// Absolute directory every relative path of the deployment resolved against (the
    /// file's own directory; for the embedded default, the directory it was started
    /// in). A new version of the config received later resolves against the same one,
    /// so no node ever depends on its process's current directory.
    pub base_dir: PathBuf,
    pub name: String,
    /// Absolute directory under which every node keeps its state.
    pub data_dir: PathBuf,
    pub regions: Vec<Region>,
    pub latency: LatencyModel,
    pub nodes: Vec<Node>,
    pub origin_groups: BTreeMap<String, OriginGroup>,
    pub origin: OriginSettings,
    pub edge: EdgeSettings,
    pub cache: CacheSettings,
    pub tls: TlsSettings,
    pub sandbox: SandboxSettings,
    pub control_plane: ControlPlaneSettings,
}

impl Deployment {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The directory a node keeps its own state in.
    pub fn node_data_dir(&self, node: &str) -> PathBuf {
        self.data_dir.join("nodes").join(node)
    }

    /// The control plane's API address, if the deployment has one.
    pub fn control_plane_addr(&self) -> Option<SocketAddr> {
        self.nodes.iter().find_map(|node| match node.role {
            Role::ControlPlane(ref cp) => Some(cp.listen),
            _ => None,
        })
    }

    /// Where node agents reach the control plane, in the order they try them:
    /// `[control_plane] urls`, or else every control-plane node's `listen` address (a
    /// wildcard IP as loopback; port-0 listeners, which no node can find, left out).
    pub fn control_plane_urls(&self) -> Vec<String> {
        if !self.control_plane.urls.is_empty() {
            return self.control_plane.urls.clone();
        }
        self.nodes
            .iter()
            .filter_map(|node| match node.role {
                Role::ControlPlane(ref cp) if cp.listen.port() != 0 => {
                    let addr = if cp.listen.ip().is_unspecified() {
                        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), cp.listen.port())
                    } else {
                        cp.listen
                    };
                    Some(format!("http://{addr}"))
                }
                _ => None,
            })
            .collect()
    }

    pub fn edges(&self) -> impl Iterator<Item = (&Node, &EdgeNode)> {
        self.nodes.iter().filter_map(|node| match &node.role {
            Role::Edge(edge) => Some((node, edge)),
            _ => None,
        })
    }
}

/// A place nodes and clients live in.
#[derive(Debug, Clone, Serialize)]
pub struct Region {
    pub name: String,
    pub description: String,
}

/// One process of the deployment.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub region: String,
    pub role: Role,
}

impl Node {
    /// Every address this node listens on, labelled by what it serves.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        match &self.role {
            Role::Edge(edge) => {
                let mut listeners = Vec::new();
                if let Some(http) = edge.http {
                    listeners.push(("http", http));
                }
                if let Some(https) = edge.https {
                    listeners.push(("https", https));
                }
                listeners.push(("admin", edge.admin));
                listeners
            }
            Role::Origin(origin) => vec![("http", origin.listen)],
            Role::Sandbox(sandbox) => vec![("api", sandbox.listen)],
            Role::ControlPlane(cp) => vec![("api", cp.listen)],
        }
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Edge(_) => "edge",
            Role::Origin(_) => "origin",
            Role::Sandbox(_) => "sandbox",
            Role::ControlPlane(_) => "control-plane",
        }
    }
}

/// What a node does, with the settings only that role has.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Role {
    Edge(EdgeNode),
    Origin(OriginNode),
    Sandbox(SandboxNode),
    ControlPlane(ControlPlaneNode),
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeNode {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// Whether `admin` may be a non-loopback address (validation refuses one otherwise).
    pub admin_public: bool,
    /// The group this edge fetches from when it has no parent, and the group its
    /// parent chain ends in.
    pub origin_group: String,
    /// The shield edge misses go to first.
    pub parent: Option<String>,
    pub l1_capacity: u64,
    pub l2_capacity: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OriginNode {
    pub listen: SocketAddr,
    /// Directory served; `None` serves the bundled sample site.
    pub root: Option<PathBuf>,
    pub delay: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxNode {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneNode {
    pub listen: SocketAddr,
}

/// The simulated network.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyModel {
    pub enabled: bool,
    pub intra_region: Link,
    /// Keyed by the two region names in sorted order.
    pub links: BTreeMap<(String, String), Link>,
}

impl LatencyModel {
    /// The link between two regions; unlisted pairs of distinct regions have none
    /// (validation requires every pair to be listed when simulation is on).
    pub fn link(&self, a: &str, b: &str) -> Option<&Link> {
        if a == b {
            return Some(&self.intra_region);
        }
        let key = if a <= b {
            (a.to_owned(), b.to_owned())
        } else {
            (b.to_owned(), a.to_owned())
        };
        self.links.get(&key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Link {
    pub rtt: Duration,
    pub jitter: Duration,
    /// Probability in `0.0..1.0`.
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OriginGroup {
    pub policy: LbPolicy,
    pub members: Vec<OriginMember>,
    pub health: HealthCheck,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    Weighted,
    ConsistentHash { key: HashKey },
    LeastConnections,
    LatencyAware,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Path,
    Header(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct OriginMember {
    pub target: OriginTarget,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginTarget {
    /// An origin node of this deployment, at its listen address.
    Node { name: String, addr: SocketAddr },
    /// A host name (or literal IP) resolved through DNS.
    Host { host: String, port: u16 },
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct OriginSettings {
    pub rules: Vec<HeaderRule>,
}

impl OriginSettings {
    /// The first rule whose pattern matches `path`.
    pub fn rule_for(&self, path: &str) -> Option<&HeaderRule> {
        self.rules.iter().find(|rule| rule.pattern.matches(path))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderRule {
    pub pattern: PathPattern,
    pub cache_control: Option<String>,
    pub surrogate_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeSettings {
    pub max_header_size: u64,
    pub max_body_size: u64,
    pub client_timeout: Duration,
    pub shutdown_grace: Duration,
    pub compression: Compression,
    /// Threads of the edge's request runtime (0 = one per core); read at start only.
    pub worker_threads: usize,
    pub hosts: Hosts,
    /// Signs `x-edgebox-hop` between child and parent edges.
    #[serde(skip)]
    pub hop_key: TokenSecret,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Rate-limit rules, first match wins; empty = nothing is limited.
    pub rate_limit: Vec<RateRule>,
    /// `None` = no access log.
    pub access_log: Option<AccessLog>,
}

/// `[[edge.rate_limit.rules]]`, checked: a token bucket of `burst` requests refilled at
/// `rate` per `per`, one per key.
#[derive(Debug, Clone, Serialize)]
pub struct RateRule {
    pub pattern: PathPattern,
    pub rate: u32,
    pub per: Duration,
    pub burst: u32,
    pub key: RateKey,
}

impl RateRule {
    /// The time one request's token takes to refill (GCRA's emission interval).
    pub fn interval(&self) -> Duration {
        self.per / self.rate.max(1)
    }
}

/// What a rate-limit bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The client address (`X-Forwarded-For` from a trusted proxy, else the peer).
    Ip,
    /// The value of this request header (lower case); the client address without it.
    Header(String),
}

/// `[edge.access_log]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    pub format: AccessLogFormat,
    pub target: AccessLogTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// NCSA common: `host - - [time] "request" status bytes`.
    Common,
    /// NCSA combined: common plus `"referer" "user-agent"`.
    Combined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogTarget {
    Stderr,
    /// A file; a relative path is under the node's data dir.
    File(PathBuf),
}

impl AccessLogTarget {
    /// Where the lines of node `node` go: a relative file is under its data dir.
    pub fn resolve(&self, deployment: &Deployment, node: &str) -> Option<PathBuf> {
        match self {
            Self::Stderr => None,
            Self::File(path) => Some(deployment.node_data_dir(node).join(path)),
        }
    }
}

/// `[edge.hosts]`, checked: every name lower case, without port.
#[derive(Debug, Clone, Serialize)]
pub struct Hosts {
    /// Exact names (`example.com`, `127.0.0.1`, `[::1]`) or `*.suffix` patterns.
    pub names: Vec<String>,
    pub unknown: UnknownHost,
    /// The host unknown hosts are served as.
    pub default: String,
}

impl Hosts {
    /// Whether `host` (already normalised) is one of the configured names.
    pub fn serves(&self, host: &str) -> bool {
        self.names.iter().any(|name| match name.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|below| below.len() > 1 && below.ends_with('.')),
            None => name == host,
        })
    }
}

/// What a request for a host outside `[edge.hosts] names` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownHost {
    /// Served as the default host.
    Default,
    /// 421 Misdirected Request.
    Reject,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compression {
    pub enabled: bool,
    pub min_size: u64,
    pub algorithms: Vec<Encoding>,
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Gzip,
    Br,
    Zstd,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Br => "br",
            Self::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Default memory-tier capacity; each edge's own is on `EdgeNode`.
    pub l1_capacity: u64,
    /// The memory tier's eviction policy.
    pub l1_policy: L1Policy,
    /// Default disk-tier budget; each edge's own is on `EdgeNode`.
    pub l2_capacity: u64,
    pub max_object_size: u64,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub rules: Vec<TtlRule>,
    /// Fresh L1 hits answered without pingora-cache's state machine.
    pub fast_path: bool,
    /// Store `Cache-Control: public` responses that set cookies, without the cookies.
    pub strip_set_cookie: bool,
}

impl CacheSettings {
    /// The default TTL for `path` when the origin gives none.
    pub fn default_ttl(&self, path: &str) -> Option<Duration> {
        self.rules
            .iter()
            .find(|rule| rule.pattern.matches(path))
            .map(|rule| rule.ttl)
    }
}

/// `[cache] l1_policy`: which eviction policy the edge's memory tier runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L1Policy {
    /// moka's W-TinyLFU.
    #[default]
    Moka,
    /// The simulator's policies (`edgebox-cache-model`), by the same names.
    Lru,
    S3fifo,
    Sieve,
    Tinyufo,
}

impl L1Policy {
    pub const ALL: [L1Policy; 5] = [
        Self::Moka,
        Self::Lru,
        Self::S3fifo,
        Self::Sieve,
        Self::Tinyufo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moka => "moka",
            Self::Lru => "lru",
            Self::S3fifo => "s3fifo",
            Self::Sieve => "sieve",
            Self::Tinyufo => "tinyufo",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TtlRule {
    pub pattern: PathPattern,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsSettings {
    pub certificates: Vec<Certificate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxSettings {
    /// Resolved: never 0.
    pub max_concurrent_jobs: usize,
    pub queue_length: usize,
    pub keep_finished: Duration,
    pub max_source_size: u64,
    pub max_stdin_size: u64,
    pub scratch_size: u64,
    /// Files and directories per scratch directory.
    pub scratch_files: u64,
    /// Never 0.
    pub max_finished_jobs: usize,
    /// At least `2 * maximums.output`, so the newest finished job always fits.
    pub max_finished_bytes: u64,
    /// Never 0, and at most `max_subscribers`.
    pub max_subscribers_per_job: usize,
    pub max_subscribers: usize,
    /// Never zero.
    pub subscriber_send_timeout: Duration,
    /// Never 0.
    pub compile_concurrency: usize,
    /// Files of a multi-file program at most; never 0.
    pub max_files: usize,
    /// Job-end webhooks.
    pub callbacks: CallbackSettings,
    /// Test cases per judged job at most; never 0.
    pub max_test_cases: usize,
    /// Bytes of a job's test cases together (stdin, arguments, expected output).
    pub max_tests_size: u64,
    /// Job slots a judged job may use at once: its own plus slots free at the time
    /// (never taken from a queued job); never 0.
    pub max_parallel_cases: usize,
    pub defaults: JobLimits,
    pub maximums: JobLimits,
}

/// Where job-end webhooks may go and how they are delivered.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackSettings {
    pub allow: Vec<CallbackDestination>,
    /// Never 0.
    pub attempts: u32,
    /// Never zero.
    pub timeout: Duration,
    pub backoff: Duration,
    #[serde(skip)]
    pub secret: TokenSecret,
    /// CA certificates (PEM) trusted for `https://` callbacks besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// One allowed callback destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackDestination {
    /// A host name, lower case; `*.example.com` is kept as `.example.com` (any name
    /// below it).
    Host(String),
    /// An IP network.
    Network { addr: std::net::IpAddr, prefix: u8 },
}

impl CallbackDestination {
    /// Whether `host` (a name, lower case) or `ip` is within this destination.
    pub fn allows(&self, host: &str, ip: Option<std::net::IpAddr>) -> bool {
        match self {
            CallbackDestination::Host(name) if name.starts_with('.') => {
                host.ends_with(name.as_str())
            }
            CallbackDestination::Host(name) => host == name,
            CallbackDestination::Network { addr, prefix } => {
                ip.is_some_and(|ip| in_network(ip, *addr, *prefix))
            }
        }
    }
}

fn in_network(ip: std::net::IpAddr, network: std::net::IpAddr, prefix: u8) -> bool {
    use std::net::IpAddr;
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let ip = match (ip, network) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    let ((ip, width), (network, network_width)) = (bits(ip), bits(network));
    if width != network_width {
        return false;
    }
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (ip >> shift) == (network >> shift)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobLimits {
    pub wall: Duration,
    pub cpu: Duration,
    pub memory: u64,
    pub output: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneSettings {
    pub tokens: Vec<Token>,
    /// `[control_plane] urls` as written (empty: derived from the nodes, see
    /// [`Deployment::control_plane_urls`]).
    pub urls: Vec<String>,
    pub store: StoreSettings,
}

/// Where the control plane keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StoreSettings {
    /// Files under the control-plane node's data directory.
    File,
    Etcd(EtcdSettings),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdSettings {
    /// Client URLs without a trailing slash, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Ends with `/`.
    pub prefix: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Operator,
    Submitter,
}

#[derive(Debug, Clone, Serialize)]
pub struct Token {
    pub name: String,
    pub role: TokenRole,
    #[serde(skip)]
    pub secret: TokenSecret,
}

/// Where a token's secret comes from; read when the control plane starts.
#[derive(Debug, Clone)]
pub enum TokenSecret {
    Inline(String),
    Env(String),
    /// Absolute path; the control plane generates the file when it is missing.
    File(PathBuf),
}
