//! Counters behind `/metrics` and `/_origin/stats`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use edgebox_node::metrics::MetricsText;
use edgebox_wire::origin::OriginStats;
use http::StatusCode;

/// Distinct paths counted one by one; beyond this, requests are counted under
/// [`OTHER_PATHS`] so that a scan of random URLs cannot grow the map without bound.
const MAX_TRACKED_PATHS: usize = 10_000;
const OTHER_PATHS: &str = "(other)";
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

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
    pub fn snapshot(&self, node: &str) -> OriginStats {
        let by_path = self
            .by_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(path, count)| (path.clone(), *count))
            .collect();
        OriginStats {
            node: node.to_owned(),
            requests: self.content_requests.load(Ordering::Relaxed),
            by_path,
            responses: CLASSES
                .iter()
                .zip(&self.by_class)
                .map(|(class, count)| ((*class).to_owned(), count.load(Ordering::Relaxed)))
                .collect(),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Prometheus text exposition.
    pub fn to_prometheus(&self, node: &str) -> String {
        let mut out = MetricsText::new();
        for (class, count) in CLASSES.iter().zip(&self.by_class) {
            out.counter(
                "edgebox_origin_responses_total",
                "Responses sent, by status class.",
                &[("node", node), ("class", class)],
                count.load(Ordering::Relaxed),
            );
        }
        out.counter(
            "edgebox_origin_content_requests_total",
            "Requests for content (not health, metrics or stats).",
            &[("node", node)],
            self.content_requests.load(Ordering::Relaxed),
        )
        .counter(
            "edgebox_origin_sent_bytes_total",
            "Response body bytes sent.",
            &[("node", node)],
            self.bytes_sent.load(Ordering::Relaxed),
        )
        .gauge(
            "edgebox_origin_in_flight_requests",
            "Requests being served now.",
            &[("node", node)],
            self.in_flight.load(Ordering::Relaxed),
        );
        out.finish()
    }
}

pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
