//! The edge daemon (`edgebox edge`) against real in-process HTTP origins: balancing,
//! failover, health, TLS, HTTP/2, forwarding hygiene, limits, compression, latency
//! simulation, the admin listener and graceful shutdown.

mod admin;
mod balancing;
mod discovery;
mod hygiene;
mod origin;
mod tls;
mod traffic;
mod trust;

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{Daemon, TestDir};
pub use origin::TestOrigin;
pub use trust::raw as trust_raw;

/// A deployment with one edge (`edge`, region `edge_region`) in front of `origins`
/// (as origin nodes `o0..`, each with a region), and `group` lines for `[origin_groups.g]`
/// (members are generated unless `group` sets them).
pub struct Deploy<'a> {
    pub regions: &'a str,
    pub edge_region: &'a str,
    pub origins: Vec<(&'a TestOrigin, &'a str)>,
    pub group: &'a str,
    pub extra: &'a str,
}

impl<'a> Deploy<'a> {
    pub fn local(origins: &[&'a TestOrigin], group: &'a str) -> Self {
        Self {
            regions: crate::support::ONE_REGION,
            edge_region: "local",
            origins: origins.iter().map(|o| (*o, "local")).collect(),
            group,
            extra: "",
        }
    }

    pub fn extra(mut self, extra: &'a str) -> Self {
        self.extra = extra;
        self
    }

    pub fn toml(&self) -> String {
        let mut text = format!(
            "{}\n[[nodes]]\nname = \"edge\"\nrole = \"edge\"\nregion = \"{}\"\nlisten = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin_group = \"g\"\n",
            self.regions, self.edge_region
        );
        for (i, (origin, region)) in self.origins.iter().enumerate() {
            text += &format!(
                "\n[[nodes]]\nname = \"o{i}\"\nrole = \"origin\"\nregion = \"{region}\"\nlisten = \"{}\"\n",
                origin.addr
            );
        }
        text += "\n[origin_groups.g]\n";
        if !self.group.contains("members") {
            let members: Vec<String> = (0..self.origins.len())
                .map(|i| format!("{{ node = \"o{i}\" }}"))
                .collect();
            text += &format!("members = [{}]\n", members.join(", "));
        }
        if !self.group.contains("health") {
            text += "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 1, unhealthy_threshold = 2 }\n";
        }
        text += self.group;
        text += "\n";
        text += self.extra;
        text
    }

    /// Writes the deployment into `dir` and starts the edge.
    pub fn start(&self, dir: &TestDir) -> (Daemon, PathBuf) {
        let config = dir.config(&self.toml());
        let edge = Daemon::start("edge", &config, "edge", &["http", "https", "admin"]);
        (edge, config)
    }
}

/// GET `url` and return (status, `x-origin` header, body).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let response = client.get(url).send().await.expect("request to the edge");
    let status = response.status().as_u16();
    let origin = response
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, origin, response.text().await.unwrap_or_default())
}

/// The edge's `/stats` document.
pub async fn stats(edge: &Daemon) -> edgebox_wire::edge::EdgeStats {
    edge.authed_client()
        .get(format!("{}/stats", edge.url("admin")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POSTs a TOML body to `/reload`.
pub async fn reload(edge: &Daemon, toml: String) -> (u16, serde_json::Value) {
    let response = edge
        .authed_client()
        .post(format!("{}/reload", edge.url("admin")))
        .header("content-type", "application/toml")
        .body(toml)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

pub const SECOND: Duration = Duration::from_secs(1);

/// Two regions with simulated latency on: 2 ms within a region, 80 ms between them.
pub const NEAR_FAR_80MS: &str = "[regions.near]\n[regions.far]\n\n[latency]\nenabled = true\nintra_region = { rtt = \"2ms\", jitter = \"0ms\", loss = 0.0 }\n[[latency.links]]\nbetween = [\"near\", \"far\"]\nrtt = \"80ms\"\njitter = \"0ms\"\nloss = 0.0\n";

/// The simulated milliseconds (`sim;dur=`) of a `Server-Timing` header.
pub fn sim_ms(server_timing: &str) -> f64 {
    server_timing
        .split(',')
        .find_map(|part| part.trim().strip_prefix("sim;dur="))
        .and_then(|rest| rest.split(';').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sim entry in {server_timing}"))
}
