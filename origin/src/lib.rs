//! edgebox origin: serves a directory over HTTP with validators, ranges and per-path headers.
//!
//! [`run`] is the whole life of an origin node: pick the directory (the configured root
//! or the bundled sample site), bind, announce, serve until SIGTERM/SIGINT, drain.

mod body;
mod files;
mod range;
mod request_path;
pub mod sample;
mod server;
mod service;
mod stats;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use arc_swap::ArcSwap;
use edgebox_config::{Deployment, Role};

pub use server::SHUTDOWN_GRACE;

use crate::files::Root;
use crate::service::{App, Live};

/// Runs the origin node `node` of `deployment` until SIGTERM or SIGINT, then drains
/// in-flight requests for up to [`SHUTDOWN_GRACE`].
pub fn run(deployment: Deployment, node: &str) -> anyhow::Result<()> {
    let settings = match deployment.node(node).map(|n| &n.role) {
        Some(Role::Origin(settings)) => settings.clone(),
        Some(_) => anyhow::bail!("node {node:?} is not an origin node"),
        None => anyhow::bail!("the deployment has no node named {node:?}"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("origin")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let root_dir = match &settings.root {
            Some(root) => root.clone(),
            None => {
                let dir = deployment.node_data_dir(node).join("sample");
                tokio::task::spawn_blocking(move || sample::materialise(&dir))
                    .await
                    .context("writing the sample site")?
                    .context("writing the sample site")?
            }
        };
        let root = open_root(&root_dir)?;
        let app = Arc::new(App {
            node: node.to_owned(),
            root,
            live: ArcSwap::from_pointee(Live {
                rules: deployment.origin.clone(),
                delay: settings.delay,
            }),
            stats: Default::default(),
            draining: AtomicBool::new(false),
            started: Instant::now(),
        });
        let shutdown = server::shutdown_signal()
            .await
            .context("installing signal handlers")?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        tracing::info!(node, %addr, root = %root_dir.display(), "origin listening");
        edgebox_config::announce_listening(node, "http", addr);
        let _agent = watch_control_plane(&deployment, node, addr, &app);
        server::serve(listener, app, shutdown, SHUTDOWN_GRACE).await;
        tracing::info!(node, "origin stopped");
        Ok(())
    })
}

/// Follows config versions from the control plane, when the deployment has one at a
/// known address, applying what an origin can change without a restart.
fn watch_control_plane(
    deployment: &Deployment,
    node: &str,
    addr: std::net::SocketAddr,
    app: &Arc<App>,
) -> Option<edgebox_control_plane::agent::AgentHandle> {
    let config = edgebox_control_plane::agent::AgentConfig::from_deployment(deployment, node)?;
    if deployment
        .control_plane_addr()
        .is_some_and(|cp| cp.port() == 0)
    {
        return None; // a port-0 control plane cannot be found from its config
    }
    let config = config.address("http", addr);
    let app = Arc::clone(app);
    let node = node.to_owned();
    Some(edgebox_control_plane::agent::spawn(
        config,
        move |deployment, version| {
            let result = apply(&app, &deployment, &node);
            if result.is_ok() {
                tracing::info!(version, "applied config");
            }
            async move { result }
        },
    ))
}

/// Applies a new deployment: header rules and the simulated delay change at once; a
/// changed root or listen address is refused (it needs a restart).
fn apply(app: &App, deployment: &Deployment, node: &str) -> Result<(), String> {
    let Some(Role::Origin(settings)) = deployment.node(node).map(|n| &n.role) else {
        return Err(format!(
            "node {node:?} is no longer an origin in this config"
        ));
    };
    app.live.store(Arc::new(Live {
        rules: deployment.origin.clone(),
        delay: settings.delay,
    }));
    Ok(())
}

fn open_root(dir: &Path) -> anyhow::Result<Root> {
    Root::open_ambient(dir).with_context(|| format!("opening the origin root {}", dir.display()))
}
