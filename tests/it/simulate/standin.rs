//! A stand-in edge for testing the load generator: a real HTTP/1.1 server (hyper) on
//! `127.0.0.1:0` with a real, if tiny, cache. It is an honest target for the generator,
//! not a mock of the edge: what the tests check is what the generator sends and how it
//! reads answers, and this server's own counters are the ground truth to compare with.
//!
//! The first request for a path is answered `X-Cache: MISS` / `X-Cache-Tier: origin`,
//! later ones `HIT` / `l1`; paths under `/nocache/` are always `BYPASS` / `origin`.
//! Paths under `/notier/` get no cache headers at all (an edge from before the cache
//! work). Every answer has `Server-Timing: sim;dur=SIM, total;dur=...` and a body of
//! `BODY_BYTES`.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub const BODY_BYTES: usize = 700;
pub const SIM_MS: f64 = 4.5;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub region: Option<String>,
    pub request_id: Option<String>,
    /// When it arrived, from the stand-in's start.
    pub at: Duration,
    /// The tier it answered with (`None` for `/notier/`).
    pub tier: Option<&'static str>,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    cached: HashSet<String>,
    in_flight: usize,
    max_in_flight: usize,
    connections: usize,
}

pub struct StandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Starts a stand-in that answers after `delay`.
    pub async fn start(delay: Duration) -> Self {
        Self::serve(delay, None).await
    }

    /// Starts a stand-in serving HTTPS with a fresh self-signed certificate for
    /// 127.0.0.1; returns it with that certificate in PEM.
    pub async fn start_tls(delay: Duration) -> (Self, String) {
        crate::support::install_crypto();
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let pem = generated.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![generated.cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::serve(delay, Some(acceptor)).await, pem)
    }

    async fn serve(delay: Duration, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let started = Instant::now();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.lock().unwrap().connections += 1;
                let state = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, state.clone(), started, delay)
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// TCP connections accepted since the start.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Requests answered per tier, by this server's own count.
    pub fn by_tier(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for seen in self.seen() {
            *counts.entry(seen.tier.unwrap_or("unknown")).or_default() += 1;
        }
        counts
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
    started: Instant,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let began = Instant::now();
    let path = request.uri().path().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (cache, tier) = {
        let mut state = state.lock().unwrap();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        let (cache, tier) = if path.starts_with("/notier/") {
            (None, None)
        } else if path.starts_with("/nocache/") {
            (Some("BYPASS"), Some("origin"))
        } else if state.cached.insert(path.clone()) {
            (Some("MISS"), Some("origin"))
        } else {
            (Some("HIT"), Some("l1"))
        };
        state.seen.push(Seen {
            path: path.clone(),
            region: header("x-edgebox-region"),
            request_id: header("x-request-id"),
            at: started.elapsed(),
            tier,
        });
        (cache, tier)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.lock().unwrap().in_flight -= 1;
    let mut response = Response::builder().header("content-type", "application/octet-stream");
    if let (Some(cache), Some(tier)) = (cache, tier) {
        response = response
            .header("x-cache", cache)
            .header("x-cache-tier", tier)
            .header(
                "server-timing",
                format!(
                    "sim;dur={SIM_MS}, total;dur={:.3}",
                    began.elapsed().as_secs_f64() * 1000.0 + SIM_MS
                ),
            );
    }
    Ok(response
        .body(Full::new(Bytes::from(vec![b'x'; BODY_BYTES])))
        .unwrap())
}
