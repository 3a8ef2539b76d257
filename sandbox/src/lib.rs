//! edgebox sandbox: runs submitted Python, JavaScript and WebAssembly in wasmtime, with
//! limits, isolation and live status (start time, running time, current line, output).
//!
//! Bird's-eye view: [`api`] takes submissions over HTTP and streams status over
//! WebSockets; [`service`] admits jobs (bounded concurrency and queue) and runs each on
//! the jobs runtime through [`exec`]; [`engine`] owns the single wasmtime `Engine` and the
//! precompiled runtimes that [`runtimes`] fetches and verifies; [`pyline`] reads CPython's
//! current line from guest memory on every epoch tick.

pub mod api;
pub mod engine;
pub mod exec;
pub mod jobs;
pub mod pyline;
pub mod runtimes;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgebox_config::{Deployment, Role};

pub use runtimes::{Progress, RUNTIME_DIR_ENV, RuntimeDir};

/// How long running jobs get to finish after SIGTERM before they are cancelled.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs the sandbox node `node` of `deployment` until SIGTERM or SIGINT.
pub fn run(deployment: Deployment, node: &str) -> anyhow::Result<()> {
    let listen = match deployment.node(node).map(|n| &n.role) {
        Some(Role::Sandbox(sandbox)) => sandbox.listen,
        Some(_) => anyhow::bail!("node {node} is not a sandbox node"),
        None => anyhow::bail!("the deployment has no node named {node}"),
    };
    let settings = deployment.sandbox.clone();
    let dir = RuntimeDir::resolve(&deployment.data_dir);
    let jobs_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.max_concurrent_jobs.max(1))
        .thread_name("sandbox-job")
        .enable_all()
        .build()
        .context("building the jobs runtime")?;
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sandbox-api")
        .enable_all()
        .build()
        .context("building the API runtime")?;
    let engine = engine::SandboxEngine::new(
        dir.clone(),
        &engine::PoolSizes {
            // Running jobs, as many pre-started ones, and a few module validations.
            instances: 2 * settings.max_concurrent_jobs as u32 + 4,
            max_memory: settings.maximums.memory,
        },
    )
    .context("starting the wasmtime engine")?;
    let service = Arc::new(service::Service::new(
        node.to_owned(),
        settings,
        engine,
        jobs_runtime.handle().clone(),
    ));
    tracing::info!(node, runtime_dir = %dir.path.display(), "sandbox starting");
    let result = api_runtime.block_on(serve(service, listen, deployment));
    jobs_runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(
    service: Arc<service::Service>,
    listen: std::net::SocketAddr,
    deployment: Deployment,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the api listener on {listen}"))?;
    let addr = listener.local_addr()?;
    edgebox_config::announce_listening(&service.node, "api", addr);
    tracing::info!(%addr, "sandbox api listening");
    let _agent = watch_control_plane(&deployment, addr, &service);
    // Fetch, compile and calibrate the runtimes now, so that the first job does not wait.
    service.warm_up();
    service.spawn_reaper();

    let app = api::router(service.clone());
    let shutdown_service = service.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("signal received, draining");
        shutdown_service.drain(DRAIN_GRACE).await;
    });
    let mut server = tokio::spawn(async move { server.await });
    // Connections (WebSocket subscribers of cancelled jobs) get a short grace after drain.
    tokio::select! {
        result = &mut server => { result.context("api server task")?.context("api server")?; }
        _ = async {
            shutdown_signal_seen(&service).await;
            tokio::time::sleep(DRAIN_GRACE + Duration::from_secs(3)).await;
        } => { tracing::warn!("connections still open after drain; exiting"); }
    }
    tracing::info!("sandbox stopped");
    Ok(())
}

/// Follows config versions from the control plane, when the deployment has one at a
/// known address, applying the sandbox limits it may change without a restart.
fn watch_control_plane(
    deployment: &Deployment,
    addr: std::net::SocketAddr,
    service: &Arc<service::Service>,
) -> Option<edgebox_control_plane::agent::AgentHandle> {
    if deployment
        .control_plane_addr()
        .is_some_and(|cp| cp.port() == 0)
    {
        return None; // a port-0 control plane cannot be found from its config
    }
    let config =
        edgebox_control_plane::agent::AgentConfig::from_deployment(deployment, &service.node)?
            .address("api", addr);
    let service = Arc::clone(service);
    Some(edgebox_control_plane::agent::spawn(
        config,
        move |deployment, version| {
            let result = service.apply(deployment.sandbox.clone());
            if result.is_ok() {
                tracing::info!(version, "applied config");
            }
            async move { result }
        },
    ))
}

async fn shutdown_signal_seen(service: &service::Service) {
    while !service.is_draining() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `edgebox sandbox fetch-runtimes`: fetch, verify and compile every runtime, reporting
/// each step to `progress`.
pub fn fetch_runtimes(
    deployment: &Deployment,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<RuntimeDir> {
    let dir = RuntimeDir::resolve(&deployment.data_dir);
    let engine = engine::SandboxEngine::new(
        dir.clone(),
        &engine::PoolSizes {
            instances: deployment.sandbox.max_concurrent_jobs as u32 + 4,
            max_memory: deployment.sandbox.maximums.memory,
        },
    )?;
    for spec in runtimes::ALL {
        engine
            .load(&spec, progress)
            .with_context(|| format!("preparing the {} runtime", spec.language))?;
    }
    Ok(dir)
}
