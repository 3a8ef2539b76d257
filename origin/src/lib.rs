//! edgebox origin: serves a directory over HTTP with validators, ranges and per-path headers.

/// Runs the origin node `node` of `deployment` until SIGTERM or SIGINT.
pub fn run(_deployment: edgebox_config::Deployment, node: &str) -> anyhow::Result<()> {
    anyhow::bail!("origin node {node}: not implemented yet")
}
