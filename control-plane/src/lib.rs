//! edgebox control plane: config lifecycle, node registry, purge fan-out, stats and
//! the sandbox relay, as a JSON API under `/v1` (axum on hyper) with an OpenAPI
//! document and a dashboard; plus [`agent`], the node side of the config watch.

pub mod agent;
mod api;
mod auth;
mod dashboard;
mod error;
mod metrics;
pub mod simulate;
mod state;
mod store;
pub mod wire;

use std::time::Duration;

use anyhow::Context;
use edgebox_config::{Deployment, Role};

pub use auth::resolve as resolve_token;
pub use state::base_dir_of;

/// How long in-flight requests get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Runs the control-plane node `node` of `deployment` until SIGTERM or SIGINT.
pub fn run(deployment: Deployment, node: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("control-plane")
        .build()
        .context("building the async runtime")?;
    runtime.block_on(serve(deployment, node))
}

/// Installs rustls' ring provider for the HTTP clients (the workspace builds reqwest
/// without a default provider).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn serve(deployment: Deployment, node: &str) -> anyhow::Result<()> {
    let listen = match deployment.node(node).map(|n| &n.role) {
        Some(Role::ControlPlane(cp)) => cp.listen,
        Some(_) => anyhow::bail!(
            "node {node} is not a control plane in {}; start it with `edgebox <its role>`",
            deployment.source
        ),
        None => anyhow::bail!("no node {node} in {}", deployment.source),
    };
    install_crypto();
    let state = state::AppState::init(deployment, node).context("starting the control plane")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API listener {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let _ = state.self_addr.set(addr);
    edgebox_config::announce_listening(node, "api", addr);
    tracing::info!(node, %addr, version = state.current().meta.version, "control plane listening");

    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        shutdown.cancel();
    });
    let app = api::app(state.clone());
    let server =
        axum::serve(listener, app).with_graceful_shutdown(state.shutdown.clone().cancelled_owned());
    tokio::select! {
        result = server => result.context("serving the API")?,
        () = async { state.shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; exiting");
        }
    }
    tracing::info!("control plane stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
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
