//! A small real HTTP origin for edge tests, run in-process on 127.0.0.1:0 on its own
//! runtime: counts content requests per path, can be slowed down, made to answer every
//! content request with one status (health checks still pass), and can be stopped
//! (every connection dropped at once, as a crash would).
//!
//! Paths: `/healthz`; `/echo` (the request headers as JSON); `/text/N` (N bytes of
//! compressible text/plain); `/encoded` (a body the origin already gzip-encoded);
//! `/status/CODE`; anything else answers `origin NAME PATH` as text/plain.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    delay_ms: AtomicU64,
    /// When non-zero, every content request is answered with this status.
    forced_status: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
    headers_seen: Mutex<Vec<http::HeaderMap>>,
}

pub struct TestOrigin {
    #[allow(dead_code)] // handy when debugging a test
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestOrigin {
    pub fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts on a given address (to bring an origin back on its old port).
    pub fn start_on(name: &str, addr: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        // Bound synchronously: tests call this from inside their own async runtime.
        let listener = std::net::TcpListener::bind(addr).expect("bind test origin");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let (task_shared, task_name) = (shared.clone(), name.to_owned());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, name) = (task_shared.clone(), task_name.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, shared.clone(), name.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Content requests served (not health checks).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn requests_for(&self, path: &str) -> u64 {
        self.shared
            .by_path
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answers every content request with `status` (`None`: back to normal).
    pub fn set_status(&self, status: Option<u16>) {
        self.shared
            .forced_status
            .store(status.map_or(0, u64::from), Ordering::SeqCst);
    }

    /// Headers of every content request received so far.
    pub fn headers_seen(&self) -> Vec<http::HeaderMap> {
        self.shared.headers_seen.lock().unwrap().clone()
    }

    /// Stops at once: the listener and every open connection go away.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    name: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    // Read the whole body first, like an origin that processes uploads would.
    let body_len = match http_body_util::BodyExt::collect(req.into_body()).await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => {
            return Ok(Response::builder()
                .status(400)
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
    };
    if path == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    *shared
        .by_path
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    shared.headers_seen.lock().unwrap().push(headers.clone());
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut builder = Response::builder().header("x-origin", name.as_str());
    // Plays a parent edge that reports whatever simulated time the test asks for.
    if let Some(timing) = headers.get("x-test-server-timing") {
        builder = builder.header("server-timing", timing);
    }
    let forced = shared.forced_status.load(Ordering::SeqCst) as u16;
    if forced != 0 {
        let body = Bytes::from(format!("forced {forced} from {name}"));
        return Ok(builder.status(forced).body(Full::new(body)).unwrap());
    }
    let body: Bytes = if path == "/echo" {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
            .collect();
        builder = builder.header("content-type", "application/json");
        serde_json::Value::Object(headers).to_string().into()
    } else if let Some(n) = path.strip_prefix("/text/") {
        let n: usize = n.parse().unwrap_or(0);
        builder = builder.header("content-type", "text/plain; charset=utf-8");
        text_body(n).into()
    } else if path == "/encoded" {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&text_body(4096)).unwrap();
        builder = builder
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip");
        encoder.finish().unwrap().into()
    } else if path == "/cookie" {
        builder = builder
            .header("cache-control", "public, max-age=60")
            .header("set-cookie", "session=for-one-client");
        Bytes::from_static(b"a page that sets a cookie")
    } else if let Some(code) = path.strip_prefix("/status/") {
        builder = builder.status(code.parse::<u16>().unwrap_or(500));
        Bytes::from(format!("status {code} from {name}"))
    } else {
        builder = builder.header("content-type", "text/plain");
        if body_len > 0 {
            Bytes::from(format!("origin {name} {path} received {body_len} bytes"))
        } else {
            Bytes::from(format!("origin {name} {path}"))
        }
    };
    Ok(builder.body(Full::new(body)).unwrap())
}

/// Deterministic, compressible text of `n` bytes.
pub fn text_body(n: usize) -> Vec<u8> {
    b"edgebox compresses this line of text. "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}
