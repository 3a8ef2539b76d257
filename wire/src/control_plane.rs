//! Request and response bodies of the control-plane API (`/v1`), shared by the control
//! plane, the CLI, the simulator and the node agents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::error::{ConfigDiagnostic, ErrorBody, ErrorDetail};

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, or `degraded` while the store cannot be reached (reads are answered from
    /// the last view; writes are refused with 503 `store_unavailable`).
    pub status: String,
    pub node: String,
    pub uptime_ms: u64,
    pub config_version: u64,
    pub store: StoreHealth,
}

/// The control plane's store as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreHealth {
    /// `file` or `etcd`.
    pub backend: String,
    pub reachable: bool,
    /// Why the store cannot be reached, while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A deployment file's text, to validate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfigText {
    pub toml: String,
}

/// `PUT /v1/config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutConfig {
    pub toml: String,
    /// When set, the change is refused with 409 unless this is the current version
    /// (optimistic concurrency for tools that edit what they read).
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// The config the control plane holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CurrentConfig {
    pub version: u64,
    pub toml: String,
    /// RFC 3339.
    pub created_at: String,
    /// How this version came to be (`startup FILE`, `api`, `rollback to N`).
    pub source: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    pub valid: bool,
    pub diagnostics: Vec<ConfigDiagnostic>,
}

/// Result of `PUT /v1/config` and of a rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Applied {
    pub version: u64,
    /// False when the text equals the current version's (no new version is made).
    pub changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub version: u64,
    pub created_at: String,
    pub source: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    pub current_version: u64,
    /// Oldest first.
    pub versions: Vec<HistoryEntry>,
}

/// What a watching node receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchResponse {
    pub version: u64,
    pub toml: String,
}

/// A node's report of what it applied (`POST /v1/config/status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub node: String,
    pub version: u64,
    pub applied: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// Addresses the node actually bound, by service (`http`, `admin`, `api`...), so
    /// listeners configured with port 0 become reachable.
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
}

/// `GET /v1/config/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigStatus {
    pub current_version: u64,
    pub nodes: Vec<NodeConfigStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeConfigStatus {
    pub node: String,
    pub role: String,
    /// Last version the node reported; `null` when it never reported.
    pub version: Option<u64>,
    pub applied: Option<bool>,
    pub error: Option<String>,
    pub reported_at: Option<String>,
    /// The node reported the current version as applied.
    pub in_sync: bool,
}

/// One listener of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Listener {
    pub service: String,
    /// `null` while a port-0 listener has not been reported by its node.
    pub addr: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub name: String,
    pub role: String,
    pub region: String,
    pub listeners: Vec<Listener>,
    /// `up`, `down`, `draining` or `unknown` (no reachable address).
    pub health: String,
    pub health_error: Option<String>,
    pub config_version: Option<u64>,
    pub uptime_ms: Option<u64>,
    /// How long the health probe took.
    pub probe_ms: Option<u64>,
    /// An edge's parent (shield) edge, when its misses go to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The origin nodes an edge's misses go to when it has no parent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub config_version: u64,
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainResponse {
    pub node: String,
    pub draining: bool,
}

/// `POST /v1/purge` (and the edge admin `POST /purge` it fans out to): exactly one of
/// `url`, `prefix`, `tag`, `all`; `soft` marks the selected objects stale instead of
/// removing them, so their next request revalidates with the upstream while the
/// stale-while-revalidate / stale-if-error windows keep protecting clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft: bool,
}

/// One edge's answer to a fanned-out request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeResult {
    pub node: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub purged: Option<u64>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurgeResponse {
    /// Every edge purged.
    pub ok: bool,
    pub results: Vec<EdgeResult>,
}

/// A node that did not answer a stats request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unreachable {
    pub node: String,
    pub error: String,
}

/// `GET /v1/stats`: totals across edges, jobs from the sandbox, and each node's own
/// document as it sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsResponse {
    pub edges: EdgeTotals,
    /// Jobs the sandboxes hold, by state, summed over sandbox nodes.
    pub jobs: BTreeMap<crate::sandbox::JobState, u64>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub per_node: BTreeMap<String, serde_json::Value>,
    pub unreachable: Vec<Unreachable>,
    /// Each sandbox node as the job relay sees it, by node name.
    #[serde(default)]
    pub sandboxes: BTreeMap<String, SandboxNodeStats>,
}

/// One sandbox node in `/v1/stats`: its jobs and how the relay places jobs on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxNodeStats {
    /// In rotation: its last load poll answered (new jobs go only to nodes that are up,
    /// unless none is).
    pub up: bool,
    /// Why it is out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Jobs running and queued there at its last poll.
    pub running: u64,
    pub queued: u64,
    /// What the relay counts against the node when it chooses one (least outstanding
    /// first): running and queued at the last poll plus jobs placed there since.
    pub outstanding: u64,
    /// The jobs the node holds now, by state (from its stats; absent when it did not
    /// answer).
    pub jobs: BTreeMap<crate::sandbox::JobState, u64>,
    /// Jobs this control plane placed on the node since it started (resubmissions
    /// included).
    pub placed: u64,
    /// Jobs that were queued there when it went down (or restarted) and were
    /// submitted again elsewhere.
    pub moved_away: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeTotals {
    pub reporting: usize,
    /// Requests by status class plus `total`.
    pub requests: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    /// Cache counters summed over edges.
    pub cache: crate::edge::CacheStats,
    /// Hit ratio per cache tier, where edges report `hits` and `misses` per tier.
    pub hit_ratio: BTreeMap<String, f64>,
    /// Request latencies summed over edges (cumulative: percentiles over an interval
    /// come from the difference of two readings).
    #[serde(default)]
    pub latency: crate::edge::LatencyHistogram,
}
