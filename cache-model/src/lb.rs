//! Which origin of a group a miss goes to, for the model. The edge's choice runs inside
//! pingora's load balancer; these follow the same policies as far as one process without
//! concurrency can: round robin and weighted round robin in turn, consistent hashing by a
//! hash of the object, latency-aware to the nearest origin (round robin among equals).
//! Least-connections degenerates to round robin here: the model has one request in flight.

use serde::{Deserialize, Serialize};

use crate::hash::mix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    RoundRobin,
    Weighted,
    ConsistentHash,
    LeastConnections,
    LatencyAware,
}

/// One group's chooser.
#[derive(Debug, Clone)]
pub struct Chooser {
    policy: Policy,
    weights: Vec<u32>,
    /// Smooth weighted round robin's running scores (nginx's algorithm).
    scores: Vec<i64>,
    next: usize,
}

impl Chooser {
    /// `weights` has one entry per member (at least one member).
    pub fn new(policy: Policy, weights: Vec<u32>) -> Self {
        assert!(!weights.is_empty(), "an origin group has members");
        Self {
            policy,
            scores: vec![0; weights.len()],
            weights,
            next: 0,
        }
    }

    /// The member for a miss of `object`; `rtt_rank[i]` orders members by distance from the
    /// asking edge (only read by `latency_aware`).
    pub fn choose(&mut self, object: u64, rtt_ms: &[u64]) -> usize {
        let n = self.weights.len();
        match self.policy {
            Policy::RoundRobin | Policy::LeastConnections => {
                let chosen = self.next % n;
                self.next = self.next.wrapping_add(1);
                chosen
            }
            Policy::Weighted => {
                let total: i64 = self.weights.iter().map(|w| i64::from(*w)).sum();
                let mut best = 0;
                for (i, score) in self.scores.iter_mut().enumerate() {
                    *score += i64::from(self.weights[i]);
                }
                for i in 1..n {
                    if self.scores[i] > self.scores[best] {
                        best = i;
                    }
                }
                self.scores[best] -= total;
                best
            }
            Policy::ConsistentHash => (mix64(object) % n as u64) as usize,
            Policy::LatencyAware => {
                let nearest = rtt_ms.iter().copied().min().unwrap_or(0);
                let candidates: Vec<usize> = (0..n)
                    .filter(|i| rtt_ms.get(*i).copied().unwrap_or(0) == nearest)
                    .collect();
                let chosen = candidates[self.next % candidates.len()];
                self.next = self.next.wrapping_add(1);
                chosen
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_round_robin_follows_the_weights_and_latency_aware_picks_the_nearest() {
        let mut weighted = Chooser::new(Policy::Weighted, vec![3, 1]);
        let picks: Vec<usize> = (0..8).map(|i| weighted.choose(i, &[])).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 6);
        let mut near = Chooser::new(Policy::LatencyAware, vec![1, 1, 1]);
        assert!((0..5).all(|i| near.choose(i, &[80, 5, 40]) == 1));
        let mut hashed = Chooser::new(Policy::ConsistentHash, vec![1, 1]);
        assert_eq!(hashed.choose(42, &[]), hashed.choose(42, &[]));
    }
}
