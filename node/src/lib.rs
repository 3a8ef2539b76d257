//! The runtime every edgebox node shares, written once: the config-watch [`agent`],
//! one [`shutdown`] signal and drain with a deadline, the [`announce`] protocol by which
//! a daemon tells its starter which ports it bound, [`backoff`], [`fs::atomic_write`],
//! bearer-token [`secrets`], per-node [`credentials`], one Prometheus text writer ([`metrics`]) and the
//! child-process [`supervisor`] behind `edgebox up` and the simulator, and signed [`webhook`]s.
//!
//! This crate knows no daemon: daemons depend on it, never the other way round.

pub mod agent;
pub mod announce;
pub mod backoff;
pub mod credentials;
pub mod fs;
pub mod metrics;
pub mod secrets;
pub mod shutdown;
pub mod supervisor;
pub mod webhook;

pub use announce::{announce_listening, parse_announcement};

/// Installs rustls' ring provider as the process default, for HTTPS clients (the
/// workspace builds reqwest and rustls without a default provider). Idempotent.
#[cfg(feature = "tls")]
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An I/O failure with what was being done, for daemons' start-up errors.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct IoError {
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

/// Adds what was being done to an I/O error: `bind(addr).io_context("binding")?`.
pub trait IoContext<T> {
    fn io_context(self, what: impl Into<String>) -> Result<T, IoError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, what: impl Into<String>) -> Result<T, IoError> {
        self.map_err(|source| IoError {
            what: what.into(),
            source,
        })
    }
}
