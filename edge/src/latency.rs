//! The simulated network: how long a hop between two regions takes, with jitter, and
//! with loss modelled as a retransmission delay (a lost exchange costs one more
//! round trip after a retransmission timeout), never as a dropped response.

use std::time::Duration;

use edgebox_config::{LatencyModel, Link};
use rand::Rng;

/// Retransmission timeout as a multiple of the link's RTT (floored, like TCP's RTO).
const RTO_FACTOR: u32 = 2;
const RTO_FLOOR: Duration = Duration::from_millis(10);

/// Present in the snapshot only when simulation is enabled, so that a disabled model
/// costs one `Option` check per hop.
#[derive(Debug, Clone)]
pub struct Simulator {
    model: LatencyModel,
}

impl Simulator {
    pub fn new(model: &LatencyModel) -> Option<Self> {
        model.enabled.then(|| Self {
            model: model.clone(),
        })
    }

    pub fn knows(&self, region: &str) -> bool {
        self.model
            .links
            .keys()
            .any(|(a, b)| a == region || b == region)
    }

    /// One request/response exchange between regions `a` and `b`.
    pub fn sample(&self, a: &str, b: &str) -> Duration {
        match self.model.link(a, b) {
            Some(link) => sample_link(link, &mut rand::rng()),
            None => Duration::ZERO,
        }
    }
}

fn sample_link(link: &Link, rng: &mut impl Rng) -> Duration {
    let mut delay = link.rtt;
    if !link.jitter.is_zero() {
        let jitter = link.jitter.as_secs_f64();
        let offset = rng.random_range(-jitter..=jitter);
        delay = Duration::from_secs_f64((link.rtt.as_secs_f64() + offset).max(0.0));
    }
    if link.loss > 0.0 && rng.random_bool(link.loss.clamp(0.0, 1.0)) {
        delay += (link.rtt * RTO_FACTOR).max(RTO_FLOOR) + link.rtt;
    }
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds_and_loss_adds_retransmission() {
        let link = Link {
            rtt: Duration::from_millis(50),
            jitter: Duration::from_millis(5),
            loss: 0.0,
        };
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = sample_link(&link, &mut rng);
            assert!(
                d >= Duration::from_millis(45) && d <= Duration::from_millis(55),
                "{d:?}"
            );
        }
        let lossy = Link {
            loss: 1.0,
            jitter: Duration::ZERO,
            ..link
        };
        assert_eq!(sample_link(&lossy, &mut rng), Duration::from_millis(200));
    }
}
