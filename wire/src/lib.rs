//! The JSON every edgebox party exchanges, defined once and used by both ends: the
//! control plane's `/v1` API ([`control_plane`]), what nodes serve to the control
//! plane, the CLI, the simulator and tests ([`edge`], [`origin`], [`health`],
//! [`sandbox`]),
//! and the one error envelope ([`error`]).
//!
//! This crate holds types only (serde derives, OpenAPI schemas behind the `openapi`
//! feature): no I/O, no daemon.

pub mod control_plane;
pub mod edge;
pub mod error;
pub mod health;
pub mod origin;
pub mod sandbox;

pub use error::{ConfigDiagnostic, ErrorBody, ErrorDetail};
