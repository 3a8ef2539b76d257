//! edgebox control plane: config lifecycle, node registry, purge fan-out, stats and
//! the sandbox relay, as a JSON API under `/v1` (axum on hyper) with an OpenAPI
//! document and a dashboard. The JSON it speaks is `edgebox_wire::control_plane`; the
//! node side of the config watch is `edgebox_node::agent`.

mod api;
mod auth;
mod dashboard;
mod error;
mod etcd;
mod etcd_store;
mod fleet;
mod metrics;
mod state;
mod store;

use std::time::Duration;

use edgebox_config::{Deployment, Role};
use edgebox_node::IoContext;

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Why a control-plane node could not start (or stopped on its own).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no node {node} in {source_name}")]
    NoSuchNode { node: String, source_name: String },
    #[error(
        "node {node} is not a control plane in {source_name}; start it with `edgebox <its role>`"
    )]
    NotAControlPlane { node: String, source_name: String },
    #[error("starting the control plane")]
    Init(#[from] state::InitError),
    #[error(transparent)]
    Io(#[from] edgebox_node::IoError),
}

/// Runs the control-plane node `node` of `deployment` until SIGTERM or SIGINT.
pub fn run(deployment: Deployment, node: &str) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("control-plane")
        .build()
        .io_context("building the async runtime")?;
    runtime.block_on(serve(deployment, node))
}

async fn serve(deployment: Deployment, node: &str) -> Result<(), RunError> {
    let listen = match deployment.node(node).map(|n| &n.role) {
        Some(Role::ControlPlane(cp)) => cp.listen,
        Some(_) => {
            return Err(RunError::NotAControlPlane {
                node: node.to_owned(),
                source_name: deployment.source.clone(),
            });
        }
        None => {
            return Err(RunError::NoSuchNode {
                node: node.to_owned(),
                source_name: deployment.source.clone(),
            });
        }
    };
    edgebox_node::install_crypto();
    let state = state::AppState::init(deployment, node).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .io_context(format!("binding the API listener {listen}"))?;
    let addr = listener
        .local_addr()
        .io_context("reading the bound address")?;
    let _ = state.self_addr.set(addr);
    edgebox_node::announce_listening(node, "api", addr);
    tracing::info!(node, %addr, version = state.current().meta.version, "control plane listening");

    let signals = edgebox_node::shutdown::on_signals().io_context("installing signal handlers")?;
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        signals.cancelled().await;
        tracing::info!("signal received; shutting down");
        shutdown.cancel();
    });
    // Sandbox loads and job moves: the relay's view of the sandbox nodes.
    tokio::spawn(fleet::run(state.clone()));
    let app = api::app(state.clone());
    let server =
        axum::serve(listener, app).with_graceful_shutdown(state.shutdown.clone().cancelled_owned());
    tokio::select! {
        result = server => result.io_context("serving the API")?,
        () = async { state.shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; exiting");
        }
    }
    tracing::info!("control plane stopped");
    Ok(())
}

/// The documented `(METHOD, path)` operations and the OpenAPI document, for tests
/// and tools.
pub fn openapi_document() -> (Vec<(String, String)>, serde_json::Value) {
    let routes = api::routes();
    let document = serde_json::to_value(api::openapi(&routes)).expect("OpenAPI serialises");
    (routes.operations, document)
}

#[cfg(test)]
mod tests;
