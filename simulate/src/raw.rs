//! A scenario file exactly as written: serde structs that reject unknown keys.
//!
//! Nothing here is checked beyond its TOML type; `scenario` turns these into the checked
//! types and reports every problem with its line and key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use edgebox_config::units::{ByteSize, Duration};
use serde::Deserialize;

/// `[deployment]`: what the load is sent to. At most one of `file`, `running`, `edges`;
/// with none of them the simulator starts the embedded default deployment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    /// A deployment file the simulator starts itself (relative to the scenario file).
    pub file: Option<PathBuf>,
    /// The control plane of a running deployment, e.g. `"http://127.0.0.1:9090"`.
    pub running: Option<String>,
    /// The edges of a running deployment by client region, addressed directly
    /// (`{ eu-west = "http://127.0.0.1:8080" }`); variants cannot be applied to these.
    pub edges: Option<BTreeMap<String, OneOrMany>>,
    /// `running` only: operator token for the control plane.
    pub token: Option<String>,
    /// `running` only: file holding the operator token.
    pub token_file: Option<PathBuf>,
    /// `running` only: environment variable holding the operator token.
    pub token_env: Option<String>,
    /// How long a started deployment (or a running one applying a variant) may take to
    /// become ready.
    pub ready_timeout: Option<Duration>,
    /// Changes applied to the deployment for every variant (same keys as a variant).
    pub settings: Option<RawSettings>,
}

/// One URL or several.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a URL or a list of URLs")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// `[workload]`: how much load, how fast, over which protocol.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    /// Run for this long (give this or `requests`).
    pub duration: Option<Duration>,
    /// Send this many requests in all (give this or `duration`).
    pub requests: Option<u64>,
    /// Requests in flight at most; requests due while the bound is reached are dropped.
    pub concurrency: Option<u64>,
    /// Plain HTTP: keep-alive connections to each edge at most; a request that finds them
    /// all busy waits for one.
    pub connections_per_edge: Option<u64>,
    /// A request that has not completed after this long is an error.
    pub timeout: Option<Duration>,
    /// `"poisson"` (exponential gaps, the default) or `"constant"` (evenly spaced).
    pub arrivals: Option<String>,
    /// Share of requests (0..1) for objects the origins mark `no-store`.
    pub uncacheable: Option<f64>,
    /// `"http"` (default) or `"https"`.
    pub protocol: Option<String>,
    /// `https` only: CA certificate (PEM) to trust; without it certificates are not verified.
    pub ca_file: Option<PathBuf>,
}

/// `[clients.REGION]`: clients in one region.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClients {
    /// Requests per second sent by this region's clients.
    pub rate: f64,
}

/// `[catalogue]`: what is requested.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalogue {
    /// Number of objects written for the origins (started deployments).
    pub objects: Option<u64>,
    /// Median object size; sizes follow a log-normal distribution around it.
    pub size: Option<ByteSize>,
    /// Spread of the log-normal size distribution (0 = every object the same size).
    pub size_sigma: Option<f64>,
    /// Smallest object.
    pub min_size: Option<ByteSize>,
    /// Largest object.
    pub max_size: Option<ByteSize>,
    /// `"zipf"` (default) or `"uniform"`.
    pub popularity: Option<String>,
    /// Zipf exponent `s`: object `k` (1-based) is requested in proportion to `1/k^s`.
    pub zipf_s: Option<f64>,
    /// Running deployments: the paths to request, most popular first (default: the
    /// origins' bundled sample site).
    pub paths: Option<Vec<String>>,
    /// Running deployments: paths the origins mark `no-store`, for uncacheable requests.
    pub uncacheable_paths: Option<Vec<String>>,
}

/// `[[variants]]` and `[deployment.settings]`: changes to the deployment.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Variant name, shown in the report (variants only).
    pub name: Option<String>,
    /// Free text shown in the report (variants only).
    pub description: Option<String>,
    /// `false` removes every edge's parent (no shield tier).
    pub tiering: Option<bool>,
    /// `[cache] enabled`.
    pub cache: Option<bool>,
    /// Memory-tier capacity of every edge.
    pub l1_capacity: Option<ByteSize>,
    /// Disk-tier budget of every edge.
    pub l2_capacity: Option<ByteSize>,
    /// Load-balancing policy of every origin group.
    pub lb_policy: Option<String>,
    /// `[latency] enabled`.
    pub latency: Option<bool>,
    /// Multiplies every round-trip time and jitter of the latency model.
    pub latency_scale: Option<f64>,
    /// Simulated processing delay per origin node, e.g. `{ origin-3 = "200ms" }`.
    pub origin_delay: Option<BTreeMap<String, Duration>>,
    /// L1 eviction policy of every edge: `lru`, `s3fifo`, `sieve` or `tinyufo` (model mode).
    pub l1_policy: Option<String>,
}

/// `[trace]`: requests from a trace instead of the synthetic workload (model mode).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrace {
    /// A trace file (relative to the scenario file): CSV or libCacheSim `oracleGeneral`,
    /// plain or zstd-compressed.
    pub file: Option<PathBuf>,
    /// `"csv"` or `"oracle"`; default: `.csv` names are CSV, others `oracleGeneral`.
    pub format: Option<String>,
    /// Generate the trace while replaying it instead (same knobs as `trace-gen`).
    pub generate: Option<RawGenerate>,
}

/// `[trace.generate]`: a synthetic trace, streamed from its generator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGenerate {
    pub requests: Option<u64>,
    pub objects: Option<u64>,
    /// Zipf exponent of object popularity.
    pub zipf: Option<f64>,
    /// Share of requests (0..1) for objects requested once.
    pub one_hit_wonders: Option<f64>,
    /// Median object size (log-normal around it).
    pub size: Option<ByteSize>,
    pub size_sigma: Option<f64>,
    pub min_size: Option<ByteSize>,
    pub max_size: Option<ByteSize>,
    /// Time the trace spans (its daily pattern repeats every 24 h); default one day.
    pub span: Option<Duration>,
}

/// `[sweep]`: every variant is run once per combination of these values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    pub l1_capacity: Option<Vec<ByteSize>>,
    pub l1_policy: Option<Vec<String>>,
}

/// `[cost]`: prices, turned into a cost table per variant (model mode).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    /// Shown with the amounts, e.g. `"USD"`.
    pub currency: Option<String>,
    /// Price per GiB delivered to clients, per client region.
    pub egress_per_gib: Option<BTreeMap<String, f64>>,
    /// Price per GiB delivered to clients of regions not in `egress_per_gib`.
    pub egress_default_per_gib: Option<f64>,
    /// Price per million requests that reach an origin.
    pub origin_requests_per_million: Option<f64>,
    /// Price per GiB fetched from origins.
    pub origin_egress_per_gib: Option<f64>,
    /// Price of one GiB of L1 (memory) for a month (30 days), per edge.
    pub memory_per_gib_month: Option<f64>,
    /// Price of one GiB of L2 (disk) for a month (30 days), per edge.
    pub disk_per_gib_month: Option<f64>,
}
