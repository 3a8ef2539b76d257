//! `GET /healthz` of every node: `ok` (200) or `draining` (503), and who answers.

use serde::{Deserialize, Serialize};

/// What a node says on `/healthz`. Fields a role does not have are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeHealth {
    /// `ok` or `draining`.
    pub status: HealthStatus,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// The config version the node runs (its own count of applied reloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<u64>,
    /// Sandbox: jobs running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
    /// Sandbox: jobs waiting for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// How the node's config agent sees the control plane (nodes that follow one).
    /// A node that lost every control-plane replica still answers `ok`: it keeps
    /// serving the config it applied last, and says so here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneLink>,
    /// Edge: the access log, when configured. A log that cannot be written is reported
    /// here (`ok: false`) while the edge keeps serving requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogState>,
}

/// An edge's access log: where it goes and whether lines reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessLogState {
    /// Whether the last open or write of the log worked.
    pub ok: bool,
    /// `json`, `common` or `combined`.
    pub format: String,
    /// `stderr` or the file's path.
    pub destination: String,
    /// Lines written.
    pub written: u64,
    /// Lines dropped because the writer fell behind (its queue was full).
    pub dropped: u64,
    /// Lines lost to failed opens or writes.
    pub write_errors: u64,
    /// The last open or write error, while `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A node agent's view of the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlPlaneLink {
    /// Whether the agent's last exchange with a control-plane replica worked.
    pub connected: bool,
    /// The replica the agent uses now (or tries next), `http://HOST:PORT`.
    pub url: String,
    /// Every replica the agent knows, in the order it tries them.
    pub urls: Vec<String>,
    /// The config version the node applied last, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<u64>,
    /// Milliseconds since a replica last answered; absent before the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<u64>,
    /// Why the last exchange failed, while disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Draining,
}
