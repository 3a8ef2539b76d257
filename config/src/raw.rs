//! The deployment file exactly as written: serde structs that reject unknown keys.
//!
//! Nothing here is checked beyond its TOML type; `validate` turns these into the
//! checked types in `model` and reports every problem with its key path.

use std::path::PathBuf;

use serde::Deserialize;

use crate::units::{ByteSize, Duration};

/// `[deployment]`: what this deployment is called and where its nodes keep state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    /// Human name, shown by `edgebox up` and the control plane.
    #[serde(default = "default_deployment_name")]
    pub name: String,
    /// Directory for node state (certificates, disk cache, runtimes, config history).
    /// Relative paths are resolved against the directory holding the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for RawDeployment {
    fn default() -> Self {
        Self {
            name: default_deployment_name(),
            data_dir: default_data_dir(),
        }
    }
}

fn default_deployment_name() -> String {
    "edgebox".to_owned()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".edgebox")
}

/// `[regions.NAME]`: a place nodes and clients live in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// Free text shown in reports.
    #[serde(default)]
    pub description: String,
}

/// `[latency]`: the simulated network between regions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatency {
    /// When false the edge adds no delay and the latency code is not on the request path.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Round trip between two nodes of the same region.
    #[serde(default = "default_intra_region")]
    pub intra_region: RawLink,
    /// Round trips between pairs of regions; symmetric.
    #[serde(default)]
    pub links: Vec<RawRegionLink>,
}

impl Default for RawLatency {
    fn default() -> Self {
        Self {
            enabled: true,
            intra_region: default_intra_region(),
            links: Vec::new(),
        }
    }
}

fn default_intra_region() -> RawLink {
    RawLink {
        rtt: Duration::from_millis(1),
        jitter: Duration::ZERO,
        loss: 0.0,
    }
}

/// A link's round-trip time, jitter and packet loss.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Mean round-trip time, e.g. `"80ms"`.
    pub rtt: Duration,
    /// Uniform jitter added or removed around the mean, e.g. `"5ms"`.
    #[serde(default)]
    pub jitter: Duration,
    /// Probability (0..1) that a round trip is lost once and retransmitted.
    #[serde(default)]
    pub loss: f64,
}

/// `[[latency.links]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegionLink {
    /// The two regions this link joins.
    pub between: [String; 2],
    /// Mean round-trip time, e.g. `"80ms"`.
    pub rtt: Duration,
    /// Uniform jitter around the mean.
    #[serde(default)]
    pub jitter: Duration,
    /// Probability (0..1) that a round trip is lost once and retransmitted.
    #[serde(default)]
    pub loss: f64,
}

/// The role a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawRole {
    Edge,
    Origin,
    Sandbox,
    ControlPlane,
}

/// `[[nodes]]`: one process of the deployment. Which keys apply depends on `role`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Unique name, used in logs, `--node` and references.
    pub name: String,
    /// `edge`, `origin`, `sandbox` or `control-plane`.
    pub role: RawRole,
    /// Region the node lives in (one of `[regions]`).
    pub region: String,
    /// Main listener: plain HTTP for edges, the API for the other roles. `IP:PORT`, or
    /// `HOST:PORT` with a host name resolved when the file is loaded (on every node, so
    /// a deployment across machines names its nodes by host name); the same form for
    /// `https` and `admin`.
    pub listen: Option<String>,
    /// Edge only: TLS listener. Edges without it serve plain HTTP only.
    pub https: Option<String>,
    /// Edge only: admin listener (health, stats, purge, reload, metrics).
    pub admin: Option<String>,
    /// Edge only: allow `admin` on a non-loopback address. The admin port always needs
    /// the node credential, but by default it is not exposed beyond the machine.
    pub admin_public: Option<bool>,
    /// Edge only: the origin group this edge (or its parent chain) fetches from.
    pub origin_group: Option<String>,
    /// Edge only: the shield edge that misses go to before the origin.
    pub parent: Option<String>,
    /// Edge only: memory cache capacity, overriding `[cache] l1_capacity`.
    pub l1_capacity: Option<ByteSize>,
    /// Edge only: disk cache budget, overriding `[cache] l2_capacity`.
    pub l2_capacity: Option<ByteSize>,
    /// Origin only: directory to serve. Without it the origin serves the bundled sample site.
    pub root: Option<PathBuf>,
    /// Origin only: simulated processing delay added to every response.
    pub delay: Option<Duration>,
}

/// `[origin_groups.NAME]`: origins an edge balances across.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOriginGroup {
    /// `round_robin`, `weighted`, `consistent_hash`, `least_connections` or `latency_aware`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// `consistent_hash` only: `"path"` (default) or `"header:NAME"`.
    pub hash_key: Option<String>,
    /// The origins: `{ node = "origin-1" }` or `{ host = "origin.example", port = 80 }`.
    pub members: Vec<RawMember>,
    /// Active health checking.
    #[serde(default)]
    pub health: RawHealth,
    /// Connecting to an origin gives up after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Waiting for an origin's response headers gives up after this long.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Duration,
    /// How many other origins an idempotent request is retried on.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_policy() -> String {
    "round_robin".to_owned()
}
fn default_connect_timeout() -> Duration {
    Duration::from_millis(1000)
}
fn default_read_timeout() -> Duration {
    Duration::from_millis(10_000)
}
fn default_retries() -> u32 {
    2
}

/// One member of an origin group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    /// An origin node of this deployment.
    pub node: Option<String>,
    /// A host name or IP address, resolved through DNS (every A/AAAA record is a backend).
    pub host: Option<String>,
    /// Port for `host`.
    pub port: Option<u16>,
    /// Share of traffic under the `weighted` policy.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `[origin_groups.NAME.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path probed with GET; a 2xx or 3xx is healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    /// Consecutive successes before an unhealthy origin is used again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures before an origin is taken out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            healthy_threshold: default_healthy_threshold(),
            unhealthy_threshold: default_unhealthy_threshold(),
        }
    }
}

fn default_health_path() -> String {
    "/healthz".to_owned()
}
fn default_health_interval() -> Duration {
    Duration::from_millis(2000)
}
fn default_health_timeout() -> Duration {
    Duration::from_millis(1000)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// `[origin]`: what every origin node sets on its responses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrigin {
    /// Header rules by path pattern; the first match wins.
    #[serde(default)]
    pub rules: Vec<RawHeaderRule>,
}

/// `[[origin.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRule {
    /// Path glob: `*` within a segment, `**` across segments, e.g. `"/assets/**"`.
    pub pattern: String,
    /// `Cache-Control` value to send.
    pub cache_control: Option<String>,
    /// `Surrogate-Key` tags to send, for purging by tag.
    #[serde(default)]
    pub surrogate_keys: Vec<String>,
}

/// `[edge]`: request-path settings shared by every edge.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdge {
    #[serde(default)]
    pub limits: RawEdgeLimits,
    #[serde(default)]
    pub compression: RawCompression,
    /// How long a stopping edge waits for in-flight requests.
    pub shutdown_grace: Option<Duration>,
    /// Threads of the edge's request runtime; 0 (the default) = one per CPU core.
    #[serde(default)]
    pub worker_threads: usize,
    /// Which hosts the edges serve, and what a request for any other host gets.
    #[serde(default)]
    pub hosts: RawHosts,
    /// The key that signs `x-edgebox-hop` between a child edge and its parent (so a
    /// client cannot claim to be an edge). At most one of `hop_key`, `hop_key_env` and
    /// `hop_key_file`; with none, the file `secrets/hop-key` in the data dir, generated
    /// (0600) by the first edge that needs it. Edges on other machines need the same key.
    pub hop_key: Option<String>,
    /// Environment variable holding the hop key.
    pub hop_key_env: Option<String>,
    /// File holding the hop key (relative to the data dir); generated when missing.
    pub hop_key_file: Option<PathBuf>,
    /// Peers (CIDRs, e.g. `"10.0.0.0/8"`, `"127.0.0.1/32"`) whose `X-Forwarded-For` names
    /// the client for rate limiting and the access log; from any other peer the header is
    /// ignored and the peer's own address is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Per-client request rate limits by path; without rules nothing is limited.
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// One line per request; absent = no access log.
    pub access_log: Option<RawAccessLog>,
}

/// `[edge.rate_limit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// `[[edge.rate_limit.rules]]`: the first rule whose pattern matches a request's path
    /// limits it; a request no rule matches is not limited.
    #[serde(default)]
    pub rules: Vec<RawRateRule>,
}

/// `[[edge.rate_limit.rules]]`: a token bucket per client (or per header value).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateRule {
    /// Path glob, as in `[[cache.rules]]`; `"/**"` (the default) matches every path.
    #[serde(default = "default_any_path")]
    pub pattern: String,
    /// Requests allowed per `per`, sustained.
    pub rate: u32,
    /// The period `rate` is counted over.
    #[serde(default = "default_rate_period")]
    pub per: Duration,
    /// Requests a client may send at once after being idle; defaults to `rate`.
    pub burst: Option<u32>,
    /// Whose bucket a request takes from: `"ip"` (the client address, the default) or
    /// `"header"` (the value of `header`, e.g. an API key; requests without it fall back
    /// to the client address).
    #[serde(default = "default_rate_key")]
    pub key: String,
    /// The request header that keys the bucket when `key = "header"`.
    pub header: Option<String>,
}

fn default_any_path() -> String {
    "/**".to_owned()
}
fn default_rate_period() -> Duration {
    Duration::from_millis(1000)
}
fn default_rate_key() -> String {
    "ip".to_owned()
}

/// `[edge.access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `false` keeps the section but writes nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `"json"` (one JSON object per line, the default), `"common"` or `"combined"`
    /// (the NCSA formats nginx and Apache write).
    #[serde(default = "default_access_log_format")]
    pub format: String,
    /// Where lines go: `"stderr"` (the default) or a file, relative to the node's data
    /// dir (`<data_dir>/nodes/<node>/`). The file is reopened on SIGHUP (log rotation).
    #[serde(default = "default_access_log_path")]
    pub path: String,
}

fn default_access_log_format() -> String {
    "json".to_owned()
}
fn default_access_log_path() -> String {
    "stderr".to_owned()
}

/// `[edge.hosts]`: the virtual hosts. A request's host is checked and normalised first
/// (lower case, no port, one spelling per IPv6 address); a malformed one gets 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHosts {
    /// Host names served as themselves: exact names, IP addresses (`[::1]` for IPv6),
    /// or `*.example.com` for every name below example.com. No ports.
    #[serde(default = "default_host_names")]
    pub names: Vec<String>,
    /// A request for any other host: `"default"` serves it as the `default` host (it is
    /// cached under that host's name and sent upstream with `Host: <default>`), `"reject"`
    /// answers 421 Misdirected Request.
    #[serde(default = "default_unknown_host")]
    pub unknown: String,
    /// The host unknown hosts are served as; defaults to the first of `names`.
    pub default: Option<String>,
}

impl Default for RawHosts {
    fn default() -> Self {
        Self {
            names: default_host_names(),
            unknown: default_unknown_host(),
            default: None,
        }
    }
}

fn default_host_names() -> Vec<String> {
    ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .map(String::from)
        .collect()
}
fn default_unknown_host() -> String {
    "default".into()
}

/// `[edge.limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeLimits {
    /// Request line plus headers beyond this get 431.
    #[serde(default = "default_max_header")]
    pub max_header_size: ByteSize,
    /// Request bodies beyond this get 413.
    #[serde(default = "default_max_body")]
    pub max_body_size: ByteSize,
    /// A client that does not send its request within this gets 408.
    #[serde(default = "default_client_timeout")]
    pub client_timeout: Duration,
}

impl Default for RawEdgeLimits {
    fn default() -> Self {
        Self {
            max_header_size: default_max_header(),
            max_body_size: default_max_body(),
            client_timeout: default_client_timeout(),
        }
    }
}

fn default_max_header() -> ByteSize {
    ByteSize::from_bytes(32 * 1024)
}
fn default_max_body() -> ByteSize {
    ByteSize::from_bytes(16 * 1024 * 1024)
}
fn default_client_timeout() -> Duration {
    Duration::from_millis(30_000)
}

/// `[edge.compression]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Responses smaller than this are sent as they are.
    #[serde(default = "default_min_compress")]
    pub min_size: ByteSize,
    /// Algorithms offered, in order of preference when the client's q-values tie.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Content types worth compressing; `text/*` style prefixes allowed.
    #[serde(default = "default_compressible")]
    pub content_types: Vec<String>,
}

impl Default for RawCompression {
    fn default() -> Self {
        Self {
            enabled: true,
            min_size: default_min_compress(),
            algorithms: default_algorithms(),
            content_types: default_compressible(),
        }
    }
}

fn default_min_compress() -> ByteSize {
    ByteSize::from_bytes(1024)
}
fn default_algorithms() -> Vec<String> {
    vec!["zstd".into(), "br".into(), "gzip".into()]
}
fn default_compressible() -> Vec<String> {
    [
        "text/*",
        "application/javascript",
        "application/json",
        "application/xml",
        "image/svg+xml",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// `[cache]`: the tiers and their policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Memory tier capacity per edge.
    #[serde(default = "default_l1")]
    pub l1_capacity: ByteSize,
    /// The memory tier's eviction policy: `"moka"` (the default: moka's W-TinyLFU),
    /// or one of the policies the simulator models, run from the same code
    /// (`edgebox-cache-model`): `"lru"`, `"s3fifo"`, `"sieve"`, `"tinyufo"` (pingora's
    /// TinyLFU + S3-FIFO). Fixed for the life of an edge process, like the capacities.
    pub l1_policy: Option<String>,
    /// Disk tier budget per edge; `"0B"` turns the disk tier off.
    #[serde(default = "default_l2")]
    pub l2_capacity: ByteSize,
    /// Objects larger than this are not cached.
    #[serde(default = "default_max_object")]
    pub max_object_size: ByteSize,
    /// Serve stale while revalidating for this long, unless the origin says otherwise.
    #[serde(default = "default_swr")]
    pub stale_while_revalidate: Duration,
    /// Serve stale when the origin fails for this long, unless the origin says otherwise.
    #[serde(default = "default_sie")]
    pub stale_if_error: Duration,
    /// TTLs for responses whose origin gives no freshness information.
    #[serde(default)]
    pub rules: Vec<RawTtlRule>,
    /// Answer fresh memory-tier hits directly from the prepared header and body instead of
    /// through pingora-cache's full hit path (same answers, less work per hit).
    #[serde(default = "default_true")]
    pub fast_path: bool,
    /// Responses that set a cookie are never stored, unless this is true and the
    /// response also says `Cache-Control: public`; then the copy is stored without its
    /// `Set-Cookie` headers (the client that caused the fetch still gets its cookie).
    #[serde(default)]
    pub strip_set_cookie: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            enabled: true,
            l1_capacity: default_l1(),
            l1_policy: None,
            l2_capacity: default_l2(),
            max_object_size: default_max_object(),
            stale_while_revalidate: default_swr(),
            stale_if_error: default_sie(),
            rules: Vec::new(),
            fast_path: true,
            strip_set_cookie: false,
        }
    }
}

fn default_l1() -> ByteSize {
    ByteSize::from_bytes(64 * 1024 * 1024)
}
fn default_l2() -> ByteSize {
    ByteSize::from_bytes(1024 * 1024 * 1024)
}
fn default_max_object() -> ByteSize {
    ByteSize::from_bytes(256 * 1024 * 1024)
}
fn default_swr() -> Duration {
    Duration::from_millis(10_000)
}
fn default_sie() -> Duration {
    Duration::from_millis(300_000)
}

/// `[[cache.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTtlRule {
    /// Path glob, as in `[[origin.rules]]`.
    pub pattern: String,
    /// Freshness lifetime when the origin sends none; `"0s"` means do not cache.
    pub ttl: Duration,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Certificates served by every edge's HTTPS listener, chosen by SNI. Without any, a
    /// local CA and a certificate for `localhost` are generated in each edge's data dir.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

/// `[[tls.certificates]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// Server names this certificate answers for (`*.example.com` allowed).
    pub names: Vec<String>,
    /// PEM certificate chain; relative to the config file.
    pub cert: PathBuf,
    /// PEM private key; relative to the config file.
    pub key: PathBuf,
}

/// `[sandbox]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// Jobs running at once; 0 means one per CPU core.
    #[serde(default)]
    pub max_concurrent_jobs: usize,
    /// Jobs waiting beyond the running ones; more get 429.
    #[serde(default = "default_queue")]
    pub queue_length: usize,
    /// How long finished jobs stay readable.
    #[serde(default = "default_keep_finished")]
    pub keep_finished: Duration,
    /// Submitted sources beyond this get 413.
    #[serde(default = "default_max_source")]
    pub max_source_size: ByteSize,
    /// Submitted stdin beyond this gets 413.
    #[serde(default = "default_max_stdin")]
    pub max_stdin_size: ByteSize,
    /// Size budget of a job's scratch directory, enforced at each write.
    #[serde(default = "default_scratch")]
    pub scratch_size: ByteSize,
    /// Files and directories a job's scratch directory may hold, enforced at each create.
    #[serde(default = "default_scratch_files")]
    pub scratch_files: u64,
    /// Finished jobs kept readable at most; beyond it the oldest is forgotten first.
    #[serde(default = "default_max_finished_jobs")]
    pub max_finished_jobs: usize,
    /// Bytes (output plus bookkeeping) finished jobs may hold in total; beyond it the
    /// oldest is forgotten first. Must hold one job's maximum output on both streams.
    #[serde(default = "default_max_finished_bytes")]
    pub max_finished_bytes: ByteSize,
    /// Event (WebSocket) subscribers of one job at once; more get 429.
    #[serde(default = "default_max_subscribers_per_job")]
    pub max_subscribers_per_job: usize,
    /// Event subscribers of all jobs at once; more get 429.
    #[serde(default = "default_max_subscribers")]
    pub max_subscribers: usize,
    /// A subscriber that does not take a message within this is disconnected.
    #[serde(default = "default_subscriber_send_timeout")]
    pub subscriber_send_timeout: Duration,
    /// WebAssembly modules validated and compiled at once (each on a blocking thread).
    #[serde(default = "default_compile_concurrency")]
    pub compile_concurrency: usize,
    /// Files a multi-file program may have (their bytes together are bounded by
    /// `max_source_size`); more get 422.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Test cases one judged job may have; more get 422.
    #[serde(default = "default_max_test_cases")]
    pub max_test_cases: usize,
    /// Bytes of all test cases of a job together (stdin, arguments, expected output);
    /// more get 413.
    #[serde(default = "default_max_tests_size")]
    pub max_tests_size: ByteSize,
    /// Job slots one judged job may use at once: its own plus slots free when it runs
    /// (a free slot is never taken from a job waiting for one), used once a case has
    /// taken 10 ms (shorter cases run faster one after the other). 1 runs cases one
    /// after the other.
    #[serde(default = "default_max_parallel_cases")]
    pub max_parallel_cases: usize,
    /// Where jobs' `callback_url` may point, and how results are delivered there.
    #[serde(default)]
    pub callbacks: RawCallbacks,
    /// Limits a job gets when it asks for none.
    #[serde(default = "RawJobLimits::defaults")]
    pub defaults: RawJobLimits,
    /// The most a job may ask for.
    #[serde(default = "RawJobLimits::maximums")]
    pub maximums: RawJobLimits,
}

impl Default for RawSandbox {
    fn default() -> Self {
        Self {
            max_concurrent_jobs: 0,
            queue_length: default_queue(),
            keep_finished: default_keep_finished(),
            max_source_size: default_max_source(),
            max_stdin_size: default_max_stdin(),
            scratch_size: default_scratch(),
            scratch_files: default_scratch_files(),
            max_finished_jobs: default_max_finished_jobs(),
            max_finished_bytes: default_max_finished_bytes(),
            max_subscribers_per_job: default_max_subscribers_per_job(),
            max_subscribers: default_max_subscribers(),
            subscriber_send_timeout: default_subscriber_send_timeout(),
            compile_concurrency: default_compile_concurrency(),
            max_files: default_max_files(),
            callbacks: RawCallbacks::default(),
            max_test_cases: default_max_test_cases(),
            max_tests_size: default_max_tests_size(),
            max_parallel_cases: default_max_parallel_cases(),
            defaults: RawJobLimits::defaults(),
            maximums: RawJobLimits::maximums(),
        }
    }
}

fn default_queue() -> usize {
    64
}
fn default_keep_finished() -> Duration {
    Duration::from_millis(600_000)
}
fn default_max_source() -> ByteSize {
    ByteSize::from_bytes(1024 * 1024)
}
fn default_max_stdin() -> ByteSize {
    ByteSize::from_bytes(1024 * 1024)
}
fn default_scratch() -> ByteSize {
    ByteSize::from_bytes(16 * 1024 * 1024)
}
fn default_scratch_files() -> u64 {
    1024
}
fn default_max_finished_jobs() -> usize {
    1000
}
fn default_max_finished_bytes() -> ByteSize {
    ByteSize::from_bytes(256 * 1024 * 1024)
}
fn default_max_subscribers_per_job() -> usize {
    8
}
fn default_max_subscribers() -> usize {
    256
}
fn default_subscriber_send_timeout() -> Duration {
    Duration::from_millis(10_000)
}
fn default_compile_concurrency() -> usize {
    2
}
fn default_max_files() -> usize {
    64
}
fn default_max_test_cases() -> usize {
    64
}
fn default_max_parallel_cases() -> usize {
    2
}
fn default_max_tests_size() -> ByteSize {
    ByteSize::from_bytes(4 * 1024 * 1024)
}

/// `[sandbox.callbacks]`: job-end webhooks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallbacks {
    /// Destinations a `callback_url` may name: host names (exact, or `*.example.com`)
    /// and IP networks (`10.1.0.0/16`, `127.0.0.1/32`, `::1/128`). Empty (the default):
    /// no callbacks; any other destination is refused with 422 at submission.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Delivery attempts at most (the first one included).
    #[serde(default = "default_callback_attempts")]
    pub attempts: u32,
    /// How long one attempt may take.
    #[serde(default = "default_callback_timeout")]
    pub timeout: Duration,
    /// Wait before the first retry; doubled for each later one.
    #[serde(default = "default_callback_backoff")]
    pub backoff: Duration,
    /// The key that signs callbacks (`X-Edgebox-Signature`). At most one of `secret`,
    /// `secret_env` and `secret_file`; with none, the file `secrets/callback-key` in the
    /// data dir, generated (0600) when missing.
    pub secret: Option<String>,
    /// Environment variable holding the key.
    pub secret_env: Option<String>,
    /// File holding the key (relative to the data dir); generated when missing.
    pub secret_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted for `https://` callbacks besides the
    /// system's roots (relative to the config file), e.g. a private CA of the receivers.
    pub ca_file: Option<PathBuf>,
}

impl Default for RawCallbacks {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            attempts: default_callback_attempts(),
            timeout: default_callback_timeout(),
            backoff: default_callback_backoff(),
            secret: None,
            secret_env: None,
            secret_file: None,
            ca_file: None,
        }
    }
}

fn default_callback_attempts() -> u32 {
    5
}
fn default_callback_timeout() -> Duration {
    Duration::from_millis(5_000)
}
fn default_callback_backoff() -> Duration {
    Duration::from_millis(500)
}

/// Per-job limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobLimits {
    /// Wall-clock time from start to forced stop.
    pub wall: Duration,
    /// CPU time the guest may use.
    pub cpu: Duration,
    /// Linear memory the guest may grow to.
    pub memory: ByteSize,
    /// Bytes kept from each of stdout and stderr.
    pub output: ByteSize,
}

impl RawJobLimits {
    fn defaults() -> Self {
        Self {
            wall: Duration::from_millis(10_000),
            cpu: Duration::from_millis(10_000),
            memory: ByteSize::from_bytes(256 * 1024 * 1024),
            output: ByteSize::from_bytes(1024 * 1024),
        }
    }
    fn maximums() -> Self {
        Self {
            wall: Duration::from_millis(60_000),
            cpu: Duration::from_millis(60_000),
            memory: ByteSize::from_bytes(1024 * 1024 * 1024),
            output: ByteSize::from_bytes(16 * 1024 * 1024),
        }
    }
}

/// `[control_plane]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlPlane {
    /// Bearer tokens and the role each grants.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    /// Where node agents reach the control plane: `http://HOST:PORT` URLs, tried in
    /// order, an agent failing over to the next when one stops answering. Default:
    /// the `listen` address of every control-plane node.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Where config versions, history, the node registry and generated secrets are
    /// kept.
    #[serde(default)]
    pub store: RawStore,
}

/// `[control_plane.store]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `file` (the default: files under the control-plane node's data directory, one
    /// control-plane node) or `etcd` (shared by every control-plane replica).
    #[serde(default = "default_store_backend")]
    pub backend: String,
    /// etcd only: client URLs of the etcd cluster, e.g. `["http://127.0.0.1:2379"]`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// etcd only: the key prefix everything is kept under; default
    /// `/edgebox/<deployment name>/`.
    pub prefix: Option<String>,
    /// etcd only: one request to etcd gives up after this long.
    #[serde(default = "default_etcd_timeout")]
    pub timeout: Duration,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: default_store_backend(),
            endpoints: Vec::new(),
            prefix: None,
            timeout: default_etcd_timeout(),
        }
    }
}

fn default_store_backend() -> String {
    "file".to_owned()
}

fn default_etcd_timeout() -> Duration {
    Duration::from_millis(2000)
}

/// `[[control_plane.tokens]]`: exactly one of `token`, `token_env`, `token_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Name shown in logs; never the secret.
    pub name: String,
    /// `operator` (config, purge, nodes, stats) or `submitter` (sandbox jobs).
    pub role: String,
    /// The secret itself.
    pub token: Option<String>,
    /// Environment variable holding the secret.
    pub token_env: Option<String>,
    /// File holding the secret (relative to the data dir); generated when missing.
    pub token_file: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
