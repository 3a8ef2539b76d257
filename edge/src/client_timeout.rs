//! Bounds how long a client may take to send its request headers.
//!
//! pingora reads an HTTP/1 request's headers before any `ProxyHttp` hook runs, under the
//! connection's keep-alive timeout (60 s by default, set just before `process_new_http`).
//! This wrapper sets that timeout to `edge.limits.client_timeout` (read from the current
//! snapshot, so it reloads) for every request on a connection, so a client that stalls in
//! its request line or headers is disconnected after `client_timeout` of silence instead
//! of 60 s. The timeout is per read and in whole seconds: that is pingora's granularity.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::server::ShutdownWatch;

use crate::state::EdgeState;

/// An `HttpServerApp` that applies the client timeout, then hands over to `inner`.
pub struct ClientTimeout<A> {
    pub inner: Arc<A>,
    pub state: Arc<EdgeState>,
}

#[async_trait]
impl<A> HttpServerApp for ClientTimeout<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let timeout = self.state.client_timeout();
        // At least a second: pingora counts keep-alive in whole seconds and 0 means "off".
        session.set_keepalive(Some(timeout.as_secs().max(1)));
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}
