//! The control plane's own Prometheus metrics, rendered as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use edgebox_node::metrics::MetricsText;

/// (route template, method, status) -> (count, seconds total).
type RequestCounts = BTreeMap<(String, String, u16), (u64, f64)>;

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<RequestCounts>,
    config_version: AtomicU64,
    nodes_reporting: AtomicU64,
    pub watchers: AtomicI64,
    pub relays: AtomicI64,
    pub fanout_failures: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().expect("metrics lock");
        let entry = requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default();
        entry.0 += 1;
        entry.1 += elapsed.as_secs_f64();
    }

    pub fn set_config_version(&self, version: u64) {
        self.config_version.store(version, Ordering::Relaxed);
    }

    pub fn set_nodes_reporting(&self, count: u64) {
        self.nodes_reporting.store(count, Ordering::Relaxed);
    }

    pub fn render(&self, uptime: Duration) -> String {
        let mut out = MetricsText::new();
        let requests = self.requests.lock().expect("metrics lock");
        for ((route, method, status), (count, _)) in requests.iter() {
            out.counter(
                "edgebox_cp_requests_total",
                "API requests by route, method and status.",
                &[
                    ("route", route),
                    ("method", method),
                    ("status", &status.to_string()),
                ],
                *count,
            );
        }
        for ((route, method, status), (_, seconds)) in requests.iter() {
            out.counter(
                "edgebox_cp_request_seconds_total",
                "Time spent answering API requests.",
                &[
                    ("route", route),
                    ("method", method),
                    ("status", &status.to_string()),
                ],
                *seconds,
            );
        }
        drop(requests);
        out.gauge(
            "edgebox_cp_config_version",
            "Current config version.",
            &[],
            self.config_version.load(Ordering::Relaxed),
        )
        .gauge(
            "edgebox_cp_nodes_reporting",
            "Nodes that reported a config status.",
            &[],
            self.nodes_reporting.load(Ordering::Relaxed),
        )
        .gauge(
            "edgebox_cp_config_watchers",
            "Long polls waiting for a config change.",
            &[],
            self.watchers.load(Ordering::Relaxed),
        )
        .gauge(
            "edgebox_cp_event_relays",
            "WebSocket event relays open.",
            &[],
            self.relays.load(Ordering::Relaxed),
        )
        .gauge(
            "edgebox_cp_uptime_seconds",
            "Seconds since the control plane started.",
            &[],
            uptime.as_secs(),
        )
        .counter(
            "edgebox_cp_fanout_failures_total",
            "Node requests (purge, drain, stats) that failed.",
            &[],
            self.fanout_failures.load(Ordering::Relaxed),
        );
        out.finish()
    }
}
