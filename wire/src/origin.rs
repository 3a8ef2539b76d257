//! What an origin serves about itself: `/healthz` and `/_origin/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /_origin/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OriginStats {
    pub node: String,
    /// Content requests (not health, metrics or stats).
    pub requests: u64,
    /// Content requests by path; past a bound, new paths count under `(other)`.
    pub by_path: BTreeMap<String, u64>,
    /// Responses by status class (`1xx` .. `5xx`).
    pub responses: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    pub in_flight: u64,
}
