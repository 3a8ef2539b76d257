//! The two load-balancing policies pingora does not ship, as `BackendSelection`s:
//! least connections and latency-aware (power of two choices over an EWMA).
//!
//! `BackendSelection::build` only sees the backend set, so the live numbers these
//! policies need (active requests, observed latency) travel inside each `Backend`'s
//! `ext` as an `Arc<OriginStats>` shared with the proxy that updates them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora::lb::Backend;
use pingora::lb::selection::{BackendIter, BackendSelection};
use rand::Rng;

use super::OriginStats;

fn stats(backend: &Backend) -> Option<&Arc<OriginStats>> {
    backend.ext.get::<Arc<OriginStats>>()
}

/// Iterates a precomputed preference order.
pub struct OrderIter<S> {
    owner: Arc<S>,
    order: Vec<usize>,
    position: usize,
}

trait HasBackends {
    fn backends(&self) -> &[Backend];
}

impl<S: HasBackends> BackendIter for OrderIter<S> {
    fn next(&mut self) -> Option<&Backend> {
        let index = *self.order.get(self.position)?;
        self.position += 1;
        self.owner.backends().get(index)
    }
}

/// Prefers the backend with the fewest requests in flight; ties rotate so that an idle
/// group still spreads load.
pub struct LeastConnections {
    backends: Vec<Backend>,
    rotation: AtomicUsize,
}

impl HasBackends for LeastConnections {
    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

impl BackendSelection for LeastConnections {
    type Iter = OrderIter<Self>;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self {
            backends: backends.iter().cloned().collect(),
            rotation: AtomicUsize::new(0),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        let n = self.backends.len();
        let start = if n == 0 {
            0
        } else {
            self.rotation.fetch_add(1, Ordering::Relaxed) % n
        };
        // Stable sort of a rotated order: equal loads keep the rotation.
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        order.sort_by_key(|&i| {
            stats(&self.backends[i]).map_or(0, |s| {
                // Scale by weight so a heavier origin takes proportionally more.
                s.active() * 1000 / self.backends[i].weight.max(1) as u64
            })
        });
        OrderIter {
            owner: self.clone(),
            order,
            position: 0,
        }
    }
}

/// Power of two choices over an EWMA of observed latency (weighted by requests in
/// flight): sample two backends at random, prefer the cheaper. Avoids the herd effect of
/// always choosing the single fastest origin while steering clearly away from slow ones.
pub struct LatencyAware {
    backends: Vec<Backend>,
}

impl HasBackends for LatencyAware {
    fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

impl LatencyAware {
    fn cost(&self, index: usize) -> f64 {
        stats(&self.backends[index]).map_or(0.0, |s| s.latency_cost())
    }
}

impl BackendSelection for LatencyAware {
    type Iter = OrderIter<Self>;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self {
            backends: backends.iter().cloned().collect(),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        let n = self.backends.len();
        let mut order = Vec::with_capacity(n);
        if n >= 2 {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (first, second) = if self.cost(b) < self.cost(a) {
                (b, a)
            } else {
                (a, b)
            };
            order.push(first);
            order.push(second);
            // The rest, cheapest first, as fallbacks when both choices are unusable.
            let mut rest: Vec<usize> = (0..n).filter(|&i| i != a && i != b).collect();
            rest.sort_by(|&x, &y| self.cost(x).total_cmp(&self.cost(y)));
            order.extend(rest);
        } else {
            order.extend(0..n);
        }
        OrderIter {
            owner: self.clone(),
            order,
            position: 0,
        }
    }
}
