//! The storage under pingora's real HTTP cache state machine: an in-process pingora proxy
//! wired exactly as the module docs of `cache` tell the edge to (enable + cache lock, key,
//! `policy::response_cacheable`, Vary, `tier_of`, `policy::x_cache`) in front of a real HTTP
//! origin on port 0. This proves the wiring contract, not the edge's own proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable, VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{Fds, ListenFds};
use pingora::services::Service as _;

use super::super::key::cache_key;
use super::super::{CacheOptions, PurgeKind, PurgeRequest, Tier, TieredStorage, policy, tier_of};
use super::{body, entry_path, flip_byte};

const BIG: usize = 8 * 1024 * 1024;

// ---------------------------------------------------------------- origin

#[derive(Default)]
struct Origin {
    requests: Mutex<HashMap<String, u64>>,
    not_modified: AtomicU64,
}

impl Origin {
    fn count(&self, path: &str) -> u64 {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

async fn origin_handler(
    State(origin): State<Arc<Origin>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    *origin
        .requests
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let fresh = [("cache-control", "max-age=60".to_owned())];
    if let Some(directives) = path.strip_prefix("/cc/") {
        // The response's Cache-Control is the path: /cc/max-age=0,stale-if-error=60
        return (
            [("cache-control", directives.to_owned())],
            format!("v{}", origin.count(&path)),
        )
            .into_response();
    }
    if path.starts_with("/slow/") {
        // Long enough that concurrent clients all arrive while the first fetch is running.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return (fresh, format!("slow:{path}")).into_response();
    }
    if path == "/big" {
        return (fresh, body(BIG, 42)).into_response();
    }
    if let Some(tag) = path.strip_prefix("/tag/") {
        return (
            [
                ("cache-control", "max-age=60".to_owned()),
                ("surrogate-key", format!("t-{tag} common")),
            ],
            path,
        )
            .into_response();
    }
    if path == "/reval" {
        if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
            origin.not_modified.fetch_add(1, Ordering::SeqCst);
            return (
                StatusCode::NOT_MODIFIED,
                [("etag", "\"v1\""), ("cache-control", "no-cache")],
            )
                .into_response();
        }
        return (
            [("etag", "\"v1\""), ("cache-control", "no-cache")],
            "revalidated body",
        )
            .into_response();
    }
    if path == "/vary" {
        let encoding = headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        return (
            [("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
            format!("enc={encoding}"),
        )
            .into_response();
    }
    (fresh, format!("body:{path}")).into_response()
}

async fn start_origin() -> (SocketAddr, Arc<Origin>) {
    let origin = Arc::new(Origin::default());
    let app = axum::Router::new()
        .fallback(origin_handler)
        .with_state(origin.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, origin)
}

// ---------------------------------------------------------------- proxy

struct CacheProxy {
    storage: &'static TieredStorage,
    lock: &'static CacheKeyLockImpl,
    /// Switchable, so a test can make the origin unreachable (connection refused).
    origin: Arc<Mutex<SocketAddr>>,
}

#[derive(Default)]
struct Ctx {
    tier: Option<Tier>,
}

#[async_trait]
impl ProxyHttp for CacheProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let origin = *self.origin.lock().unwrap();
        Ok(Box::new(HttpPeer::new(origin, false, String::new())))
    }

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> pingora::Result<()> {
        if pingora::cache::filters::request_cacheable(session.req_header()) {
            session
                .cache
                .enable(self.storage, None, None, Some(self.lock), None);
            session.cache.set_max_file_size_bytes(64 * 1024 * 1024);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut Ctx) -> pingora::Result<CacheKey> {
        let req = session.req_header();
        let host = req
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        Ok(cache_key(host, target))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> pingora::Result<RespCacheable> {
        let auth = session.req_header().headers.contains_key("authorization");
        Ok(policy::response_cacheable(
            resp,
            auth,
            Some(Duration::from_secs(60)),
            Duration::from_secs(10),
            Duration::from_secs(300),
            false,
        ))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        let mut builder = VarianceBuilder::new();
        for value in meta.headers().get_all("vary") {
            for name in value
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
            {
                let request_value = req
                    .headers
                    .get(name.as_str())
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default();
                builder.add_owned_name_value(name, request_value);
            }
        }
        builder.finalize()
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<ForcedFreshness>> {
        ctx.tier = tier_of(hit_handler);
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let phase = session.cache.phase();
        resp.insert_header("x-cache", policy::x_cache(phase).as_str())?;
        let tier = match (phase, ctx.tier) {
            (pingora::cache::CachePhase::Hit | pingora::cache::CachePhase::Stale, Some(tier)) => {
                tier.as_str()
            }
            _ => "origin",
        };
        resp.insert_header("x-cache-tier", tier)?;
        if session.cache.lock_duration().is_some() {
            self.storage.note_lock_wait();
        }
        Ok(())
    }
}

async fn start_proxy(storage: &'static TieredStorage, origin: SocketAddr) -> String {
    start_switchable_proxy(storage, Arc::new(Mutex::new(origin))).await
}

async fn start_switchable_proxy(
    storage: &'static TieredStorage,
    origin: Arc<Mutex<SocketAddr>>,
) -> String {
    static LOCK: std::sync::OnceLock<&'static CacheKeyLockImpl> = std::sync::OnceLock::new();
    let lock = *LOCK.get_or_init(|| Box::leak(CacheLock::new_boxed(Duration::from_secs(10))));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fds: ListenFds = Arc::new(parking_lot::Mutex::new(Fds::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    fds.lock().add(addr.to_string(), listener.into_raw_fd());
    let conf = Arc::new(ServerConf::default());
    let mut service = pingora::proxy::http_proxy_service(
        &conf,
        CacheProxy {
            storage,
            lock,
            origin,
        },
    );
    service.add_tcp(&addr.to_string());
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = shutdown; // the service runs for the rest of the test
        service.start_service(Some(fds), watch, 1).await;
    });
    format!("http://{addr}")
}

fn storage(dir: &std::path::Path, l1: u64) -> &'static TieredStorage {
    TieredStorage::open_static(&CacheOptions {
        l1_capacity: l1,
        l1_max_object: l1 / 8,
        l1_policy: Default::default(),
        l2_dir: Some(dir.join("cache")),
        l2_capacity: 256 * 1024 * 1024,
        max_object_size: 64 * 1024 * 1024,
    })
}

struct Got {
    status: u16,
    cache: String,
    tier: String,
    body: bytes::Bytes,
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    // The listener is up before the service task polls it; the first connect can race it.
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (status, cache, tier) = (
        response.status().as_u16(),
        header("x-cache"),
        header("x-cache-tier"),
    );
    Got {
        status,
        cache,
        tier,
        body: response.bytes().await.unwrap(),
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_make_one_origin_fetch() {
    let (origin_addr, origin) = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let store = storage(dir.path(), 8 * 1024 * 1024);
    let base = start_proxy(store, origin_addr).await;
    let client = client();
    let url = format!("{base}/slow/cold");
    // Collected, so that all 50 are in flight at once (a lazy map would spawn them one by one).
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url, &[]).await })
        })
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let got = request.await.unwrap();
        assert_eq!((got.status, &got.body[..]), (200, &b"slow:/slow/cold"[..]));
        *outcomes
            .entry(format!("{} {}", got.cache, got.tier))
            .or_default() += 1;
    }
    assert_eq!(origin.count("/slow/cold"), 1, "{outcomes:?}");
    assert_eq!(outcomes.get("MISS origin"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("HIT l1"), Some(&49), "{outcomes:?}");
    assert!(store.snapshot().lock_waits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_restart_ranges_large_objects_and_corruption_through_the_proxy() {
    let (origin_addr, origin) = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    // 1 MiB of L1: the 8 MiB object can only live in L2.
    let base = start_proxy(storage(dir.path(), 1024 * 1024), origin_addr).await;
    let first = get(&client, &format!("{base}/a.txt"), &[]).await;
    assert_eq!(
        (first.cache.as_str(), first.tier.as_str()),
        ("MISS", "origin")
    );
    let again = get(&client, &format!("{base}/a.txt"), &[]).await;
    assert_eq!(
        (again.cache.as_str(), again.tier.as_str(), &again.body[..]),
        ("HIT", "l1", &b"body:/a.txt"[..])
    );
    let big = get(&client, &format!("{base}/big"), &[]).await;
    assert_eq!((big.cache.as_str(), big.body.len()), ("MISS", BIG));
    let big = get(&client, &format!("{base}/big"), &[]).await;
    assert_eq!((big.cache.as_str(), big.tier.as_str()), ("HIT", "l2"));
    assert!(
        big.body == body(BIG, 42),
        "large object differs when served from L2"
    );

    // Restart: a new storage over the same directory, a new proxy.
    let restarted = storage(dir.path(), 1024 * 1024);
    let base = start_proxy(restarted, origin_addr).await;
    let after = get(&client, &format!("{base}/a.txt"), &[]).await;
    assert_eq!(
        (after.cache.as_str(), after.tier.as_str(), &after.body[..]),
        ("HIT", "l2", &b"body:/a.txt"[..])
    );
    let promoted = get(&client, &format!("{base}/a.txt"), &[]).await;
    assert_eq!(promoted.tier, "l1");

    // Ranges from a cached full object, from either tier.
    let range = get(
        &client,
        &format!("{base}/big"),
        &[("range", "bytes=5000000-5000099")],
    )
    .await;
    assert_eq!((range.status, range.cache.as_str()), (206, "HIT"));
    assert_eq!(range.body, body(BIG, 42).slice(5_000_000..5_000_100));
    let range = get(&client, &format!("{base}/a.txt"), &[("range", "bytes=5-")]).await;
    assert_eq!((range.status, &range.body[..]), (206, &b"/a.txt"[..]));
    assert_eq!(origin.count("/big"), 1);

    // A corrupted L2 file: detected, refetched from the origin, never served.
    get(&client, &format!("{base}/c.txt"), &[]).await;
    let entry = entry_path(dir.path(), &cache_key("127.0.0.1", "/c.txt"));
    flip_byte(&entry, std::fs::metadata(&entry).unwrap().len() - 8);
    let fresh_store = storage(dir.path(), 1024 * 1024);
    let base = start_proxy(fresh_store, origin_addr).await;
    let refetched = get(&client, &format!("{base}/c.txt"), &[]).await;
    assert_eq!(
        (refetched.cache.as_str(), &refetched.body[..]),
        ("MISS", &b"body:/c.txt"[..])
    );
    assert_eq!(origin.count("/c.txt"), 2);
    assert_eq!(fresh_store.snapshot().corrupt_entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_vary_and_purge_through_the_proxy() {
    let (origin_addr, origin) = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let store = storage(dir.path(), 8 * 1024 * 1024);
    let base = start_proxy(store, origin_addr).await;
    let client = client();

    // no-cache + ETag: stored, revalidated with a 304 every time, body from cache.
    assert_eq!(
        get(&client, &format!("{base}/reval"), &[]).await.cache,
        "MISS"
    );
    for _ in 0..2 {
        let got = get(&client, &format!("{base}/reval"), &[]).await;
        assert_eq!(
            (got.cache.as_str(), &got.body[..]),
            ("REVALIDATED", &b"revalidated body"[..])
        );
    }
    assert_eq!(origin.not_modified.load(Ordering::SeqCst), 2);

    // Vary: Accept-Encoding keeps one variant per encoding.
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(
        get(&client, &format!("{base}/vary"), &gzip).await.cache,
        "MISS"
    );
    assert_eq!(
        get(&client, &format!("{base}/vary"), &br).await.cache,
        "MISS"
    );
    let got = get(&client, &format!("{base}/vary"), &gzip).await;
    assert_eq!(
        (got.cache.as_str(), &got.body[..]),
        ("HIT", &b"enc=gzip"[..])
    );
    let got = get(&client, &format!("{base}/vary"), &br).await;
    assert_eq!((got.cache.as_str(), &got.body[..]), ("HIT", &b"enc=br"[..]));
    assert_eq!(
        store
            .purge_by(&PurgeRequest::Url("/vary".into()), PurgeKind::Remove)
            .await,
        2,
        "both variants"
    );
    assert_eq!(
        get(&client, &format!("{base}/vary"), &gzip).await.cache,
        "MISS"
    );

    // Purge by tag removes exactly the tagged objects; the next request shows it.
    for path in ["/tag/1", "/tag/2", "/untagged"] {
        get(&client, &format!("{base}{path}"), &[]).await;
    }
    assert_eq!(
        store
            .purge_by(&PurgeRequest::Tag("t-1".into()), PurgeKind::Remove)
            .await,
        1
    );
    assert_eq!(
        get(&client, &format!("{base}/tag/1"), &[]).await.cache,
        "MISS"
    );
    assert_eq!(
        get(&client, &format!("{base}/tag/2"), &[]).await.cache,
        "HIT"
    );
    assert_eq!(
        get(&client, &format!("{base}/untagged"), &[]).await.cache,
        "HIT"
    );
    assert_eq!(
        store
            .purge_by(&PurgeRequest::Tag("common".into()), PurgeKind::Remove)
            .await,
        2
    );
    assert_eq!(
        get(&client, &format!("{base}/tag/2"), &[]).await.cache,
        "MISS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_and_head_through_the_proxy() {
    let (origin_addr, _origin) = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let store = storage(dir.path(), 8 * 1024 * 1024);
    let upstream = Arc::new(Mutex::new(origin_addr));
    let base = start_switchable_proxy(store, upstream.clone()).await;
    let client = client();

    // HEAD is answered from the cached GET.
    assert_eq!(
        get(&client, &format!("{base}/h.txt"), &[]).await.cache,
        "MISS"
    );
    let head = client.head(format!("{base}/h.txt")).send().await.unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(head.headers()["content-length"], "11"); // "body:/h.txt"
    assert!(head.bytes().await.unwrap().is_empty());

    // stale-if-error: with the origin unreachable the stale copy is served; when the origin
    // forbade it, the client gets the error.
    let sie = format!("{base}/cc/max-age=0,stale-if-error=60");
    // The configured default stale-if-error (300 s here) applies unless the origin overrides it.
    let plain = format!("{base}/cc/max-age=0,stale-if-error=0");
    assert_eq!(get(&client, &sie, &[]).await.cache, "MISS");
    assert_eq!(get(&client, &plain, &[]).await.cache, "MISS");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    *upstream.lock().unwrap() = closed; // nothing listens there any more
    // A new client: pingora may close a connection after an upstream failure, and a pooled
    // connection being closed under a new request is not what this test is about.
    let client = self::client();
    let served = get(&client, &sie, &[]).await;
    assert_eq!(
        (served.status, served.cache.as_str(), &served.body[..]),
        (200, "STALE", &b"v1"[..])
    );
    // This harness has no error page (the edge's proxy answers 502/504 JSON): pingora resets
    // the connection or answers 5xx; either way the stale copy is not served.
    match self::client().get(&plain).send().await {
        Ok(response) => assert!(response.status().is_server_error(), "{response:?}"),
        Err(error) => assert!(error.is_request(), "{error}"),
    }
}
