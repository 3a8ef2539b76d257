//! edgebox sandbox: runs submitted Python, JavaScript and WebAssembly in wasmtime, with
//! limits, isolation and live status (start time, running time, current line, output).
//!
//! Bird's-eye view: [`api`] takes submissions over HTTP (behind `auth`) and streams status over
//! WebSockets; [`service`] admits jobs (bounded concurrency and queue) and runs each on
//! the jobs runtime through [`exec`]; [`engine`] owns the single wasmtime `Engine` and the
//! precompiled runtimes that [`runtimes`] fetches and verifies; [`pyline`] reads CPython's
//! current line from guest memory on every epoch tick.

pub mod api;
pub mod app;
mod auth;
pub mod engine;
pub mod exec;
pub mod jobs;
pub mod jsline;
pub mod judge;
pub mod pyline;
pub mod reimage;
pub mod runtimes;
pub mod scratch;
pub mod service;
pub mod stdin;

use std::sync::Arc;
use std::time::Duration;

use edgebox_config::{Deployment, Role};
use edgebox_node::IoContext;

pub use runtimes::{Progress, RUNTIME_DIR_ENV, RuntimeDir};

/// How long running jobs get to finish after SIGTERM before they are cancelled.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Why a sandbox node could not start (or stopped on its own).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the deployment has no node named {0}")]
    NoSuchNode(String),
    #[error("node {0} is not a sandbox node")]
    NotASandbox(String),
    #[error(transparent)]
    Io(#[from] edgebox_node::IoError),
    #[error("reading the node credential")]
    Credential(#[from] edgebox_node::credentials::CredentialError),
    #[error("starting the wasmtime engine")]
    Engine(#[from] engine::EngineError),
    #[error("preparing the {language} runtime")]
    Runtime {
        language: &'static str,
        #[source]
        source: engine::EngineError,
    },
}

/// Runs the sandbox node `node` of `deployment` until SIGTERM or SIGINT.
pub fn run(deployment: Deployment, node: &str) -> Result<(), RunError> {
    let listen = match deployment.node(node).map(|n| &n.role) {
        Some(Role::Sandbox(sandbox)) => sandbox.listen,
        Some(_) => return Err(RunError::NotASandbox(node.to_owned())),
        None => return Err(RunError::NoSuchNode(node.to_owned())),
    };
    let settings = deployment.sandbox.clone();
    let dir = RuntimeDir::resolve(&deployment.data_dir);
    let jobs_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.max_concurrent_jobs.max(1))
        .thread_name("sandbox-job")
        .enable_all()
        .build()
        .io_context("building the jobs runtime")?;
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sandbox-api")
        .enable_all()
        .build()
        .io_context("building the API runtime")?;
    let engine = engine::SandboxEngine::new(
        dir.clone(),
        &engine::PoolSizes {
            // Running jobs, each with its linear memory and, once it throws a wasm
            // exception (CPython's runtime does), a GC heap that takes a slot of the same
            // memory pool; and a few module validations.
            instances: 2 * settings.max_concurrent_jobs as u32 + 4,
            max_memory: settings.maximums.memory,
        },
    )?;
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
) -> Result<(), RunError> {
    // Installed before anything is announced, so a signal right after is not lost.
    let signals = edgebox_node::shutdown::on_signals().io_context("installing signal handlers")?;
    let gate = Arc::new(edgebox_node::credentials::Gate::open(
        &deployment,
        &service.node,
    )?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .io_context(format!("binding the api listener on {listen}"))?;
    let addr = listener
        .local_addr()
        .io_context("reading the bound address")?;
    edgebox_node::announce_listening(&service.node, "api", addr);
    tracing::info!(%addr, "sandbox api listening");
    let _agent = watch_control_plane(&deployment, addr, &service, &gate);
    // Fetch, compile and calibrate the runtimes now, so that the first job does not wait.
    service.warm_up();
    service.spawn_reaper();

    let app = auth::layer(api::router(service.clone()), gate);
    let shutdown_service = service.clone();
    let drain_signal = signals.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        drain_signal.cancelled().await;
        tracing::info!("signal received, draining");
        shutdown_service.drain(DRAIN_GRACE).await;
    });
    let mut server = tokio::spawn(async move { server.await });
    // Connections (WebSocket subscribers of cancelled jobs) get a short grace after drain.
    tokio::select! {
        result = &mut server => {
            match result {
                Ok(result) => result.io_context("serving the api")?,
                Err(join) => Err(std::io::Error::other(join.to_string())).io_context("the api server task")?,
            }
        }
        () = async {
            signals.cancelled().await;
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
    gate: &Arc<edgebox_node::credentials::Gate>,
) -> Option<edgebox_node::agent::AgentHandle> {
    let config = edgebox_node::agent::AgentConfig::from_deployment(deployment, &service.node)?
        .address("api", addr);
    let service = Arc::clone(service);
    let gate = Arc::clone(gate);
    Some(edgebox_node::agent::spawn(
        config,
        move |deployment, _version| {
            gate.set_tokens(&deployment);
            let result = service
                .apply(deployment.sandbox.clone())
                .map_err(Into::into);
            async move { result }
        },
    ))
}

/// `edgebox sandbox fetch-runtimes`: fetch, verify and compile every runtime, reporting
/// each step to `progress`.
pub fn fetch_runtimes(
    deployment: &Deployment,
    progress: &mut dyn FnMut(Progress),
) -> Result<RuntimeDir, RunError> {
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
            .map_err(|source| RunError::Runtime {
                language: spec.language,
                source,
            })?;
    }
    Ok(dir)
}
