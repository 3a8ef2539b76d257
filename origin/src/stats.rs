//! Counters behind `/metrics` and `/_origin/stats`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

/// Distinct paths counted one by one; beyond this, requests are counted under
/// [`OTHER_PATHS`] so that a scan of random URLs cannot grow the map without bound.
const MAX_TRACKED_PATHS: usize = 10_000;
const OTHER_PATHS: &str = "(other)";

#[derive(Debug, Default)]
pub struct Stats {
    /// Responses by status class: index 0 is 1xx, 4 is 5xx.
    by_class: [AtomicU64; 5],
    /// Body bytes handed to hyper for sending.
    bytes_sent: AtomicU64,
    /// Content requests (not healthz, metrics or stats).
    content_requests: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
    in_flight: AtomicU64,
}

impl Stats {
    pub fn record_status(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_bytes(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn record_content_request(&self, path: &str) {
        self.content_requests.fetch_add(1, Ordering::Relaxed);
        let mut by_path = self.by_path.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = by_path.get_mut(path) {
            *count += 1;
        } else if by_path.len() < MAX_TRACKED_PATHS {
            by_path.insert(path.to_owned(), 1);
        } else {
            *by_path.entry(OTHER_PATHS.to_owned()).or_default() += 1;
        }
    }

    /// Marks a request as in flight until the guard is dropped.
    pub fn start_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// The `/_origin/stats` document.
    pub fn to_json(&self, node: &str) -> serde_json::Value {
        let by_path = self
            .by_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let responses: serde_json::Map<String, serde_json::Value> = classes
            .iter()
            .zip(&self.by_class)
            .map(|(class, count)| ((*class).to_owned(), count.load(Ordering::Relaxed).into()))
            .collect();
        serde_json::json!({
            "node": node,
            "requests": self.content_requests.load(Ordering::Relaxed),
            "by_path": by_path,
            "responses": responses,
            "bytes_sent": self.bytes_sent.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
        })
    }

    /// Prometheus text exposition.
    pub fn to_prometheus(&self, node: &str) -> String {
        let mut out = String::new();
        out.push_str("# HELP edgebox_origin_responses_total Responses sent, by status class.\n");
        out.push_str("# TYPE edgebox_origin_responses_total counter\n");
        for (class, count) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .zip(&self.by_class)
        {
            let _ = writeln!(
                out,
                "edgebox_origin_responses_total{{node=\"{node}\",class=\"{class}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "edgebox_origin_content_requests_total",
                "counter",
                "Requests for content (not health, metrics or stats).",
                self.content_requests.load(Ordering::Relaxed),
            ),
            (
                "edgebox_origin_sent_bytes_total",
                "counter",
                "Response body bytes sent.",
                self.bytes_sent.load(Ordering::Relaxed),
            ),
            (
                "edgebox_origin_in_flight_requests",
                "gauge",
                "Requests being served now.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {value}");
        }
        out
    }
}

pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
