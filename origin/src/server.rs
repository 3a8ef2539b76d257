//! The accept loop: HTTP/1.1 with keep-alive (and h2c, detected from the preface) on one
//! listener, graceful shutdown on SIGTERM/SIGINT with a deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::service::{self, App};

/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// A client must send a complete request head within this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves connections from `listener` until `shutdown` resolves, then stops accepting
/// and waits up to `grace` for open connections to finish their in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically EMFILE: back off instead of spinning; the listener is fine.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let span = tracing::debug_span!("connection", %peer);
        tokio::spawn(
            async move {
                let service = service_fn(move |request| service::handle(app.clone(), request));
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(err) = watcher.watch(connection).await {
                    // Malformed requests end here, after hyper has answered them with 400
                    // (or 431 for oversized heads), as do header read timeouts.
                    tracing::info!(error = %err, "connection closed on a protocol error");
                }
            }
            .instrument(span),
        );
    }

    app.draining.store(true, Ordering::Relaxed);
    drop(listener);
    tracing::info!("shutting down: no longer accepting, finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "connections still open at the shutdown deadline; closing them");
        }
    }
}
