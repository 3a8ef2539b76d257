//! DNS discovery: origin members named by host are resolved with hickory-resolver
//! (system configuration, `/etc/hosts` first), every A/AAAA record becoming a backend,
//! and resolved again when the shortest TTL of the answer expires.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Environment variable naming a DNS server to use instead of the system's.
pub const DNS_SERVER_ENV: &str = "EDGEBOX_DNS_SERVER";

use crate::state::EdgeState;

/// Re-resolution never waits less or more than this, whatever the TTL says.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);
/// Retry interval after a failed lookup.
const RETRY: Duration = Duration::from_secs(2);

pub struct Resolver {
    inner: Option<TokioResolver>,
}

impl Resolver {
    pub fn new() -> Self {
        let builder = match std::env::var(DNS_SERVER_ENV)
            .ok()
            .and_then(|v| v.parse::<std::net::SocketAddr>().ok())
        {
            Some(server) => {
                let mut name_server = NameServerConfig::udp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                tracing::info!(%server, "resolving origin host names with the configured DNS server");
                Ok(TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                ))
            }
            None => TokioResolver::builder_tokio(),
        };
        let inner = builder
            .map(|mut builder| {
                builder.options_mut().use_hosts_file = ResolveHosts::Always;
                builder
            })
            .and_then(|builder| builder.build());
        match inner {
            Ok(resolver) => Self {
                inner: Some(resolver),
            },
            Err(error) => {
                tracing::warn!(%error, "no DNS resolver: host members cannot be resolved");
                Self { inner: None }
            }
        }
    }

    /// Resolves `host`: its addresses and when the answer expires.
    pub async fn resolve(&self, host: &str) -> Result<(Vec<IpAddr>, Instant), String> {
        let resolver = self.inner.as_ref().ok_or("no DNS resolver configured")?;
        let lookup = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no A/AAAA records"));
        }
        Ok((addrs, lookup.valid_until()))
    }
}

/// Resolves every host member of the current upstream once; returns when the earliest
/// answer expires.
pub async fn refresh(state: &EdgeState) -> Instant {
    let snapshot = state.snapshot();
    let upstream = &snapshot.upstream;
    let hosts = upstream.hosts();
    let now = Instant::now();
    if hosts.is_empty() {
        return now + MAX_TTL;
    }
    let mut resolved = HashMap::new();
    let mut next = now + MAX_TTL;
    for (host, _) in hosts {
        match state.resolver.resolve(&host).await {
            Ok((addrs, valid_until)) => {
                let valid_until = valid_until.clamp(now + MIN_TTL, now + MAX_TTL);
                next = next.min(valid_until);
                tracing::debug!(%host, ?addrs, "resolved");
                resolved.insert(host, addrs);
            }
            Err(error) => {
                tracing::warn!(%host, %error, "resolving origin failed; keeping previous addresses");
                next = next.min(now + RETRY);
                // Keep what we had for this host.
                let previous: Vec<IpAddr> = upstream
                    .pool()
                    .origins
                    .iter()
                    .map(|o| o.addr.ip())
                    .collect();
                resolved.insert(host, previous);
            }
        }
    }
    if upstream.set_addresses(&state.origins, &resolved) {
        tracing::info!(upstream = %upstream.label, origins = ?upstream.pool().origins.iter().map(|o| o.addr).collect::<Vec<_>>(), "origin addresses changed");
    }
    next
}

/// Keeps host members resolved for as long as the edge runs.
pub async fn run(state: Arc<EdgeState>) {
    let mut version = state.snapshot().version;
    loop {
        let next = refresh(&state).await;
        // Wake early when a reload replaces the upstream.
        loop {
            let now = Instant::now();
            if now >= next {
                break;
            }
            tokio::time::sleep((next - now).min(Duration::from_millis(250))).await;
            let current = state.snapshot().version;
            if current != version {
                version = current;
                break;
            }
        }
    }
}
