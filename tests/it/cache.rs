//! The edge cache end to end: real origin, edge and shield processes on port 0. The origin
//! counts content requests per path (`/_origin/stats`), which is how these tests see how
//! many fetches the cache let through.

mod cache_status;
mod fast_path;
mod headers;
mod key;
mod semantics;
mod shield;
mod soft_purge;
mod tiers;

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{Daemon, ONE_REGION, TestDir, client};

/// A real origin daemon serving files written under its own `site/` directory.
pub struct Origin {
    /// Holds the site and config for the daemon's life.
    pub _dir: TestDir,
    pub daemon: Daemon,
}

impl Origin {
    /// `files` are (path under the site, contents); `node_options` go on the origin node
    /// (e.g. `delay = "300ms"`); `rules` are `[[origin.rules]]` tables.
    pub fn start(files: &[(&str, &[u8])], node_options: &str, rules: &str) -> Self {
        let dir = TestDir::new();
        std::fs::create_dir_all(dir.path().join("site")).unwrap();
        for (path, contents) in files {
            dir.write(&format!("site/{}", path.trim_start_matches('/')), contents);
        }
        let config = dir.config(&format!(
            "{ONE_REGION}\n[[nodes]]\nname = \"o0\"\nrole = \"origin\"\nregion = \"local\"\n\
             listen = \"127.0.0.1:0\"\nroot = \"site\"\n{node_options}\n\n{rules}\n"
        ));
        let daemon = Daemon::start("origin", &config, "o0", &["http"]);
        Self { _dir: dir, daemon }
    }

    /// The origin's `/_origin/stats`.
    pub async fn stats(&self) -> edgebox_wire::origin::OriginStats {
        client()
            .get(format!("{}/_origin/stats", self.daemon.url("http")))
            .send()
            .await
            .expect("origin stats")
            .json()
            .await
            .unwrap()
    }

    /// Content requests the origin has seen for `path`.
    pub async fn count(&self, path: &str) -> u64 {
        self.stats().await.by_path.get(path).copied().unwrap_or(0)
    }
}

/// The origin node and group lines every edge config needs, pointing at `origin`.
pub fn origin_group(origin: &Origin) -> String {
    origin_group_at(origin.daemon.addr("http"))
}

/// [`origin_group`] for an origin at `addr`.
pub fn origin_group_at(addr: std::net::SocketAddr) -> String {
    format!(
        "[[nodes]]\nname = \"o0\"\nrole = \"origin\"\nregion = \"local\"\nlisten = \"{}\"\n\n\
         [origin_groups.g]\nmembers = [{{ node = \"o0\" }}]\nretries = 0\n\
         health = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 1, unhealthy_threshold = 2 }}\n",
        addr
    )
}

/// One edge (`edge`) in front of `origin`; `node_options` go on the edge node, `extra` is
/// appended (e.g. a `[cache]` section).
pub struct Edge {
    pub dir: TestDir,
    pub config: PathBuf,
    pub daemon: Daemon,
}

impl Edge {
    pub fn start(origin: &Origin, node_options: &str, extra: &str) -> Self {
        Self::start_at(origin.daemon.addr("http"), node_options, extra)
    }

    /// [`Edge::start`] in front of an origin at `addr`.
    pub fn start_at(origin: std::net::SocketAddr, node_options: &str, extra: &str) -> Self {
        Self::start_in(TestDir::new(), origin, node_options, extra)
    }

    /// [`Edge::start_at`] in a prepared directory (e.g. with a damaged data directory).
    pub fn start_in(
        dir: TestDir,
        origin: std::net::SocketAddr,
        node_options: &str,
        extra: &str,
    ) -> Self {
        let config = dir.config(&format!(
            "{ONE_REGION}\n[[nodes]]\nname = \"edge\"\nrole = \"edge\"\nregion = \"local\"\n\
             listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin_group = \"g\"\n{node_options}\n\n{}\n{extra}\n",
            origin_group_at(origin)
        ));
        let daemon = Daemon::start("edge", &config, "edge", &["http", "admin"]);
        Self {
            dir,
            config,
            daemon,
        }
    }

    /// Stops the edge (SIGTERM, clean exit) and starts it again over the same data dir.
    pub fn restart(&mut self) {
        let status = self.daemon.terminate(Duration::from_secs(15));
        assert!(
            status.success(),
            "edge exit: {status:?}\n{}",
            self.daemon.logs()
        );
        self.daemon = Daemon::start("edge", &self.config, "edge", &["http", "admin"]);
    }

    /// The L2 directory of this edge.
    pub fn l2_dir(&self) -> PathBuf {
        self.dir.path().join("data/nodes/edge/cache")
    }
}

/// What a response said about how it was served.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub cache: String,
    pub tier: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Got {
    /// `"X-Cache X-Cache-Tier"`, e.g. `"HIT l1"`.
    pub fn how(&self) -> String {
        format!("{} {}", self.cache, self.tier)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request to the edge");
    let headers = response.headers().clone();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Got {
        status: response.status().as_u16(),
        cache: text("x-cache"),
        tier: text("x-cache-tier"),
        body: response.bytes().await.expect("response body"),
        headers,
    }
}

/// GET `path` from `daemon`'s http listener.
pub async fn get(daemon: &Daemon, path: &str, headers: &[(&str, &str)]) -> Got {
    request(
        &client(),
        reqwest::Method::GET,
        &format!("{}{path}", daemon.url("http")),
        headers,
    )
    .await
}

/// POST `body` to the edge's `/purge`: (status, JSON answer).
pub async fn purge(edge: &Daemon, body: &str) -> (u16, serde_json::Value) {
    let response = edge
        .authed_client()
        .post(format!("{}/purge", edge.url("admin")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

/// The `cache` object of the edge's `/stats`.
pub async fn cache_stats(edge: &Daemon) -> edgebox_wire::edge::CacheStats {
    let stats: edgebox_wire::edge::EdgeStats = edge
        .authed_client()
        .get(format!("{}/stats", edge.url("admin")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats.cache
}

/// `len` bytes whose value at offset `i` is `i % 251`: any slice names its offset.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
