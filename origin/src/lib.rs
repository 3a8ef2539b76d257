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

use arc_swap::ArcSwap;
use edgebox_config::{Deployment, Role};
use edgebox_node::IoContext;

pub use server::SHUTDOWN_GRACE;

use crate::files::Root;
use crate::service::{App, Live};

/// Why an origin could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the deployment has no node named {0:?}")]
    NoSuchNode(String),
    #[error("node {0:?} is not an origin node")]
    NotAnOrigin(String),
    #[error(transparent)]
    Io(#[from] edgebox_node::IoError),
}

/// Runs the origin node `node` of `deployment` until SIGTERM or SIGINT, then drains
/// in-flight requests for up to [`SHUTDOWN_GRACE`].
pub fn run(deployment: Deployment, node: &str) -> Result<(), RunError> {
    let settings = match deployment.node(node).map(|n| &n.role) {
        Some(Role::Origin(settings)) => settings.clone(),
        Some(_) => return Err(RunError::NotAnOrigin(node.to_owned())),
        None => return Err(RunError::NoSuchNode(node.to_owned())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("origin")
        .build()
        .io_context("starting the async runtime")?;
    runtime.block_on(async move {
        let root_dir = match &settings.root {
            Some(root) => root.clone(),
            None => {
                let dir = deployment.node_data_dir(node).join("sample");
                tokio::task::spawn_blocking(move || sample::materialise(&dir))
                    .await
                    .map_err(|join| std::io::Error::other(join.to_string()))
                    .and_then(|written| written)
                    .io_context("writing the sample site")?
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
        let shutdown =
            edgebox_node::shutdown::on_signals().io_context("installing signal handlers")?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .io_context(format!("binding {}", settings.listen))?;
        let addr = listener
            .local_addr()
            .io_context("reading the bound address")?;
        tracing::info!(node, %addr, root = %root_dir.display(), "origin listening");
        edgebox_node::announce_listening(node, "http", addr);
        let _agent = watch_control_plane(&deployment, node, addr, &app);
        server::serve(listener, app, shutdown.cancelled_owned(), SHUTDOWN_GRACE).await;
        tracing::info!(node, "origin stopped");
        Ok::<(), RunError>(())
    })
}

/// Follows config versions from the control plane, when the deployment has one at a
/// known address, applying what an origin can change without a restart.
fn watch_control_plane(
    deployment: &Deployment,
    node: &str,
    addr: std::net::SocketAddr,
    app: &Arc<App>,
) -> Option<edgebox_node::agent::AgentHandle> {
    let config =
        edgebox_node::agent::AgentConfig::from_deployment(deployment, node)?.address("http", addr);
    let app = Arc::clone(app);
    let node = node.to_owned();
    Some(edgebox_node::agent::spawn(
        config,
        move |deployment, _version| {
            let result = apply(&app, &deployment, &node).map_err(Into::into);
            async move { result }
        },
    ))
}

/// Why an origin refuses a new config version.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("node {0:?} is no longer an origin in this config")]
    NotAnOrigin(String),
}

/// Applies a new deployment: header rules and the simulated delay change at once; a
/// changed root or listen address is refused (it needs a restart).
fn apply(app: &App, deployment: &Deployment, node: &str) -> Result<(), ApplyError> {
    let Some(Role::Origin(settings)) = deployment.node(node).map(|n| &n.role) else {
        return Err(ApplyError::NotAnOrigin(node.to_owned()));
    };
    app.live.store(Arc::new(Live {
        rules: deployment.origin.clone(),
        delay: settings.delay,
    }));
    Ok(())
}

fn open_root(dir: &Path) -> Result<Root, RunError> {
    Ok(Root::open_ambient(dir).io_context(format!("opening the origin root {}", dir.display()))?)
}
