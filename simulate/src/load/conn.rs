//! The load generator's plain-HTTP client: HTTP/1.1 keep-alive connections per edge,
//! opened ahead of the run, reused most-recently-used first, and bounded per edge
//! (`workload.connections_per_edge`): a request that finds every connection busy waits
//! for one rather than opening more.
//!
//! Why not reqwest here (it stays for HTTPS): per request it parses a URL, looks the
//! host up in a pool behind a lock, and runs its layers; a request here is a path and
//! three prepared headers written on a connection taken from a `Vec`. And why open
//! connections before the clock starts: a client that only connects on demand opens one
//! connection per request in flight whenever latency rises, and a burst of connects can
//! overflow an edge's accept queue — each dropped SYN is retried a second later, which
//! is then a second of latency on a request that never reached the edge.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{HOST, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

/// Connections opened to each edge before the run (at most the concurrency bound):
/// enough for the requests in flight at a few thousand per second with tens of
/// milliseconds of latency, without a connect on the clock.
pub const PREOPEN_PER_EDGE: usize = 64;

/// Why one exchange failed, as the report counts it.
#[derive(Debug)]
pub enum Failure {
    Connect(std::io::Error),
    /// Sending or reading the response head.
    Request(hyper::Error),
    /// Reading the body.
    Body(hyper::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(err) => write!(f, "connect: {err}"),
            Self::Request(err) => write!(f, "request: {err}"),
            Self::Body(err) => write!(f, "body: {err}"),
        }
    }
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Request(_) => "request",
            Self::Body(_) => "body",
        }
    }
}

/// What one exchange returned: the head, and the body's length (the body is counted,
/// not kept).
pub struct Answer {
    pub head: http::response::Parts,
    pub bytes: u64,
}

/// Keep-alive connections to one edge. Each carries one request at a time, and a request
/// holds one of `slots` while it uses a connection, so at most `slots`' permits
/// connections are open at once (a new one is opened only when none is idle).
pub struct EdgePool {
    /// `host:port`, connected to as such (an IP address is not looked up).
    authority: String,
    host: HeaderValue,
    /// The path of the edge's URL, put before every request's (usually empty).
    base: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
    /// One permit per connection the pool may have open; waiters are served in order.
    slots: Semaphore,
}

impl EdgePool {
    /// A pool for the edge at `url` (`http://HOST:PORT[/base]`, as the scenario check
    /// allows), or `None` when `url` is not plain HTTP.
    pub fn new(url: &str, connect_timeout: Duration, max_connections: usize) -> Option<Self> {
        let rest = url.strip_prefix("http://")?;
        let (authority, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        Some(Self {
            authority: authority.to_owned(),
            host: HeaderValue::from_str(authority).ok()?,
            base: base.trim_end_matches('/').to_owned(),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max_connections.max(1)),
        })
    }

    /// The request target for `path` on this edge.
    pub fn target(&self, path: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        if self.base.is_empty() {
            path.parse()
        } else {
            format!("{}{path}", self.base).parse()
        }
    }

    /// Opens `count` connections at once and keeps those that opened idle (one that did
    /// not is the requests' to report, as connect errors).
    pub async fn preopen(&self, count: usize) {
        let opened = join_all((0..count).map(|_| self.connect())).await;
        let mut idle = self.lock();
        idle.extend(opened.into_iter().flatten());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Empty<Bytes>>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, Failure> {
        let connect = tokio::net::TcpStream::connect(self.authority.as_str());
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(Failure::Connect(err)),
            Err(_) => {
                return Err(Failure::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
        // Requests are single small writes: do not hold them back for an ACK.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Request)?;
        // Drives the connection until it closes (the edge hangs up, or the sender is dropped).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// A connection ready for a request: the most recently used idle one, else a new one.
    /// The flag says whether it was reused (a reused one may have been closed by the edge
    /// just before the request went out, which is worth one retry).
    async fn take(&self) -> Result<(SendRequest<Empty<Bytes>>, bool), Failure> {
        loop {
            let Some(mut sender) = self.lock().pop() else {
                return Ok((self.connect().await?, false));
            };
            // Ready at once unless the connection is still finishing the last response.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
    }

    /// GET `path` with `headers`; the connection goes back to the pool once the body is
    /// read. A request that fails on a reused connection before any answer is sent once
    /// more on a new one (GETs are idempotent; the edge closing an idle connection is not
    /// the edge failing).
    pub async fn get(
        &self,
        path: &http::Uri,
        headers: &[(http::HeaderName, HeaderValue)],
    ) -> Result<Answer, Failure> {
        // Never closed, so acquiring only waits; the wait is part of the request's latency.
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the pool never closes its slots");
        let (mut sender, mut reused) = self.take().await?;
        let response = loop {
            let mut request = http::Request::new(Empty::<Bytes>::new());
            *request.uri_mut() = path.clone();
            let map = request.headers_mut();
            map.insert(HOST, self.host.clone());
            for (name, value) in headers {
                map.insert(name.clone(), value.clone());
            }
            match sender.send_request(request).await {
                Ok(response) => break response,
                Err(err) if reused && (err.is_canceled() || err.is_incomplete_message()) => {
                    sender = self.connect().await?;
                    reused = false;
                }
                Err(err) => return Err(Failure::Request(err)),
            }
        };
        let (head, mut body) = response.into_parts();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        bytes += data.len() as u64;
                    }
                }
                Err(err) => return Err(Failure::Body(err)),
            }
        }
        if !sender.is_closed() {
            self.lock().push(sender);
        }
        Ok(Answer { head, bytes })
    }
}
