//! edgebox edge: a pingora reverse proxy in front of an origin group (or a parent
//! edge), with TLS by SNI, load-balancing policies, health, compression, latency
//! simulation and an admin listener.
//!
//! The process runs pingora's services on its own tokio runtime instead of pingora's
//! `Server`, for two reasons: listeners are bound here first and handed to pingora
//! through its listen-fd table (pingora's own mechanism for inherited sockets), so a
//! port-0 address is announced with its real port without a bind race; and shutdown
//! waits exactly as long as in-flight requests need (up to `edge.shutdown_grace`)
//! instead of pingora's fixed grace sleep.
//!
//! Codemap: `proxy` (the `ProxyHttp` phases; the cache tiers plug into its cache
//! phases), `upstream` (+ `upstream/selection`: policies, per-origin stats and health
//! state), `health` (active checks), `discovery` (DNS), `tls` (SNI resolver, local CA,
//! file watcher), `compress`, `latency`, `admin` (behind `admin_auth`), `state` (the `ArcSwap` snapshot and
//! the reload path, shared with start-up), `client` (who the client is), `ratelimit`
//! (per-client token buckets) and `access_log` (its writer thread).

mod access_log;
mod admin;
mod admin_auth;
pub mod authority;
pub mod cache;
mod client;
mod client_timeout;
mod compress;
mod discovery;
mod header_text;
mod health;
mod hop;
mod latency;
mod proxy;
mod ratelimit;
mod request_id;
mod sharded;
mod state;
mod timing;
mod tls;
mod upstream;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgebox_config::{ConfigLocation, Deployment, Role};
use edgebox_node::IoContext;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{Fds, ListenFds};
use pingora::services::Service as _;

pub use tls::ensure_local_ca;

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_millis(500);

/// The write buffer of each client connection (pingora's default is 1460 bytes, one MSS).
///
/// A response's header is buffered and sent with its body when the body is written and
/// the buffer has room: with 1460 bytes, a 1 KiB object behind the edge's ~500-byte
/// header (`Via`, `Server-Timing`, `Cache-Status`, ...) went out in two `sendto` calls,
/// and every hit and pass-through response paid a second system call and TCP segment
/// (measured: 2 sends per 1 KiB hit, 3 per pass-through request; 1 and 2 with this
/// buffer; benches/results/edge_profile.md). 16 KiB holds the header and a 10 KiB body;
/// pingora flushes at the end of every response, after every chunk of a chunked or
/// close-delimited body, and writes a piece larger than the buffer straight through, so
/// only a `Content-Length` body that trickles in slower than 16 KiB at a time waits for
/// the buffer or the body's end. It is per connection, a quarter of pingora's 64 KiB read
/// buffer.
const CLIENT_WRITE_BUFFER: usize = 16 * 1024;

fn listener(addr: SocketAddr) -> ListenerConfig {
    ListenerConfig::tcp(addr.to_string())
        .l4_buffer(L4BufferSettings::default().write(CLIENT_WRITE_BUFFER))
}

/// Why an edge could not start (or stopped on its own).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no node named {0} in the deployment")]
    NoSuchNode(String),
    #[error("node {node} is a {role}, not an edge")]
    NotAnEdge { node: String, role: &'static str },
    #[error(transparent)]
    Io(#[from] edgebox_node::IoError),
    #[error("loading TLS certificates")]
    Tls(#[from] tls::TlsError),
    #[error("TLS listener settings: {0}")]
    TlsSettings(String),
    #[error("building the edge state")]
    State(#[from] state::ReloadError),
    #[error("reading the node credential")]
    Credential(#[from] edgebox_node::credentials::CredentialError),
}

/// Runs edge `node` of `deployment` until SIGTERM or SIGINT, then drains.
/// `location` is where `POST /reload` with an empty body re-reads the config from.
pub fn run(deployment: Deployment, node: &str, location: ConfigLocation) -> Result<(), RunError> {
    let me = deployment
        .node(node)
        .ok_or_else(|| RunError::NoSuchNode(node.to_owned()))?;
    let Role::Edge(edge) = &me.role else {
        return Err(RunError::NotAnEdge {
            node: node.to_owned(),
            role: me.role_name(),
        });
    };
    let edge = edge.clone();
    // One worker per core by default: measured on 2 cores, 1-4 workers served cache hits
    // within the run-to-run noise of each other (benches/results/edge_hot_path.md).
    let threads = match deployment.edge.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("edge")
        .build()
        .io_context("starting the async runtime")?;
    let result = runtime.block_on(serve(deployment, node.to_owned(), edge, location));
    // In-flight work has finished or its grace has run out; do not wait on stragglers.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Connections waiting to be accepted per listener (the kernel caps it at
/// `net.core.somaxconn`). std's `TcpListener::bind` asks for 128: a burst of new client
/// connections beyond that while the workers are busy drops SYNs, and each dropped one
/// costs its client a second before the retry. pingora's own listeners ask for 65,535.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` (port 0 allowed) and registers the socket in pingora's fd table under
/// the key its listener will look up.
fn bind(fds: &ListenFds, addr: SocketAddr) -> Result<SocketAddr, RunError> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .io_context(format!("creating a socket for {addr}"))?;
    // As std's bind does: a restarted edge can bind while old connections linger.
    socket
        .set_reuseaddr(true)
        .io_context(format!("configuring {addr}"))?;
    socket.bind(addr).io_context(format!("binding {addr}"))?;
    let listener: TcpListener = socket
        .listen(LISTEN_BACKLOG)
        .and_then(|listener| listener.into_std())
        .io_context(format!("listening on {addr}"))?;
    listener
        .set_nonblocking(true)
        .io_context(format!("configuring {addr}"))?;
    let bound = listener
        .local_addr()
        .io_context(format!("reading the address bound for {addr}"))?;
    fds.lock().add(bound.to_string(), listener.into_raw_fd());
    Ok(bound)
}

async fn serve(
    deployment: Deployment,
    node: String,
    edge: edgebox_config::EdgeNode,
    location: ConfigLocation,
) -> Result<(), RunError> {
    // Installed before anything is announced, so a signal right after is not lost.
    let signals = edgebox_node::shutdown::on_signals().io_context("installing signal handlers")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let grace = deployment.edge.shutdown_grace;
    let certs = match edge.https {
        Some(_) => {
            let store = tls::CertStore::load(&deployment.tls, &deployment.node_data_dir(&node))?;
            if let Some(ca) = &store.generated_ca {
                println!("edgebox-tls-ca node={node} path={}", ca.display());
                tracing::info!(ca = %ca.display(), "no certificate configured: serving a certificate from the local CA; trust this CA file");
            }
            Some(Arc::new(store))
        }
        None => None,
    };
    let gate = Arc::new(edgebox_node::credentials::Gate::open(&deployment, &node)?);
    let state = Arc::new(state::EdgeState::new(
        deployment,
        &node,
        location,
        certs.clone(),
    )?);
    // Host members must have addresses before traffic arrives.
    discovery::refresh(&state).await;

    let fds: ListenFds = Arc::new(parking_lot::Mutex::new(Fds::new()));
    let conf = Arc::new(ServerConf {
        // Our error_while_proxy/fail_to_connect bound retries by the group's `retries`.
        max_retries: 16,
        ..ServerConf::default()
    });
    let mut announce = Vec::new();

    let mut proxy = pingora::services::listening::Service::new(
        "edge proxy".to_owned(),
        client_timeout::ClientTimeout {
            inner: Arc::new(pingora::proxy::http_proxy(
                &conf,
                proxy::EdgeProxy {
                    state: state.clone(),
                },
            )),
            state: state.clone(),
        },
    );
    if let Some(addr) = edge.http {
        let bound = bind(&fds, addr)?;
        proxy.add_listener(listener(bound));
        announce.push(("http", bound));
    }
    if let (Some(addr), Some(certs)) = (edge.https, &certs) {
        let bound = bind(&fds, addr)?;
        let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
            .map_err(|e| RunError::TlsSettings(e.to_string()))?;
        settings.set_cert_resolver(certs.resolver.clone());
        settings.enable_h2();
        proxy.add_listener(listener(bound).tls(settings));
        announce.push(("https", bound));
    }
    let mut admin = pingora::services::listening::Service::new(
        "edge admin".to_owned(),
        pingora::apps::http_app::HttpServer::new_app(admin_auth::Authenticated {
            inner: admin::AdminApp {
                state: state.clone(),
            },
            gate,
        }),
    );
    let admin_addr = bind(&fds, edge.admin)?;
    admin.add_tcp(&admin_addr.to_string());
    announce.push(("admin", admin_addr));

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut services = Vec::new();
    {
        let (fds, rx) = (fds.clone(), shutdown_rx.clone());
        services.push(tokio::spawn(async move {
            proxy.start_service(Some(fds), rx, 1).await;
        }));
    }
    {
        let (fds, rx) = (fds.clone(), shutdown_rx.clone());
        services.push(tokio::spawn(async move {
            admin.start_service(Some(fds), rx, 1).await;
        }));
    }
    for (service, addr) in &announce {
        tracing::info!(service, %addr, "listening");
        edgebox_node::announce_listening(&node, service, *addr);
    }

    // Installed before the loop starts: without a handler SIGHUP would end the process.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .io_context("installing the SIGHUP handler")?;
    let background = [
        tokio::spawn(health::run(state.clone())),
        tokio::spawn(discovery::run(state.clone())),
        tokio::spawn({
            let state = state.clone();
            async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reopening the access log");
                    state.access_log.reopen().await;
                }
            }
        }),
    ];
    let watcher = certs.map(|c| tokio::spawn(c.watch(CERT_POLL)));
    let _agent = watch_control_plane(&state, &node, &announce);

    signals.cancelled().await;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections, finishing in-flight requests"
    );
    state.draining.store(true, Ordering::SeqCst);
    let _ = shutdown_tx.send(true);
    let drained =
        edgebox_node::shutdown::drain(grace, || state.in_flight.load(Ordering::SeqCst) <= 0).await;
    if !drained {
        tracing::warn!(
            in_flight = state.in_flight.load(Ordering::SeqCst),
            "shutdown grace over; abandoning in-flight requests"
        );
    }
    for task in background.iter().chain(watcher.iter()) {
        task.abort();
    }
    // The last requests' lines, before the process exits under the writer thread.
    state.access_log.flush(Duration::from_secs(1)).await;
    tracing::info!("edge stopped");
    Ok(())
}

/// Follows config versions from the control plane, when the deployment has one at a
/// known address, applying each through the same reload path as admin `POST /reload`.
fn watch_control_plane(
    state: &Arc<state::EdgeState>,
    node: &str,
    bound: &[(&str, SocketAddr)],
) -> Option<edgebox_node::agent::AgentHandle> {
    let deployment = &state.snapshot().deployment;
    let mut config = edgebox_node::agent::AgentConfig::from_deployment(deployment, node)?;
    for (service, addr) in bound {
        config = config.address(service, *addr);
    }
    let handle_state = Arc::clone(state);
    let state = Arc::clone(state);
    let handle = edgebox_node::agent::spawn(config, move |deployment, version| {
        let state = Arc::clone(&state);
        async move {
            let local = state.reload(deployment).await?;
            tracing::info!(version, local_version = local, "applied config");
            Ok(())
        }
    });
    let _ = handle_state.agent_link.set(handle.link());
    Some(handle)
}
