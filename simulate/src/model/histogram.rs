//! A fixed-size latency histogram: exact below 128 µs, then 64 sub-buckets per power of
//! two (under 1.6% error), up to about 1,000 s. Memory is constant however many requests
//! it counts, which is what lets model mode replay traces of any length.

use crate::report::Percentiles;

const SUB_BITS: u32 = 6;
const LINEAR: u64 = 1 << (SUB_BITS + 1);
const BUCKETS: usize = 2048;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum_us: u128,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exponent = 63 - us.leading_zeros();
    let shift = exponent - SUB_BITS;
    let index = (u64::from(shift) << SUB_BITS) + (us >> shift);
    (index as usize).min(BUCKETS - 1)
}

/// The smallest value of bucket `index` (inverse of [`index`] on bucket starts).
fn value(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let shift = (index >> SUB_BITS) - 1;
    let mantissa = index - (shift << SUB_BITS);
    mantissa << shift
}

impl Histogram {
    pub fn record_ms(&mut self, ms: f64) {
        let us = (ms * 1000.0).max(0.0) as u64;
        self.counts[index(us)] += 1;
        self.count += 1;
        self.sum_us += u128::from(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value (ms) under which a share `q` of the recorded values lie (nearest rank).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return (value(index) as f64 / 1000.0).min(self.max_us as f64 / 1000.0);
            }
        }
        self.max_us as f64 / 1000.0
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.count == 0 {
            return None;
        }
        let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
        Some(Percentiles {
            count: self.count,
            p50: round3(self.quantile_ms(0.50)),
            p90: round3(self.quantile_ms(0.90)),
            p99: round3(self.quantile_ms(0.99)),
            mean: round3(self.sum_us as f64 / self.count as f64 / 1000.0),
            max: round3(self.max_us as f64 / 1000.0),
        })
    }

    /// `[ms, cumulative share]` at `points + 1` evenly spaced shares.
    pub fn cdf(&self, points: usize) -> Vec<[f64; 2]> {
        if self.count == 0 {
            return Vec::new();
        }
        let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
        (0..=points)
            .map(|step| {
                let q = step as f64 / points as f64;
                [round3(self.quantile_ms(q.max(1e-9))), round3(q)]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_when_small_and_within_two_percent_above() {
        for us in [0u64, 1, 127, 128, 129, 1000, 65_432, 1_000_000, 123_456_789] {
            let start = value(index(us));
            assert!(
                start <= us && (us - start) as f64 <= us as f64 * 0.016,
                "{us} → {start}"
            );
        }
        let mut histogram = Histogram::default();
        for ms in 1..=100 {
            histogram.record_ms(f64::from(ms));
        }
        let p = histogram.percentiles().unwrap();
        assert!(
            (p.p50 - 50.0).abs() <= 1.0 && (p.p99 - 99.0).abs() <= 1.6,
            "{p:?}"
        );
        assert_eq!(p.max, 100.0);
        assert_eq!(p.mean, 50.5);
    }
}
