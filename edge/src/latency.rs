//! The simulated network: how long a hop between two regions takes, with jitter, and
//! with loss modelled as a retransmission delay (a lost exchange costs one more
//! round trip after a retransmission timeout), never as a dropped response.

use std::time::Duration;

use edgebox_config::{LatencyModel, Link};
use rand::Rng;

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

/// One exchange over `link`: the shared latency model (the simulator's model mode runs the
/// same function), fed from this thread's RNG.
fn sample_link(link: &Link, rng: &mut impl Rng) -> Duration {
    let link = edgebox_cache_model::latency::Link {
        rtt: link.rtt,
        jitter: link.jitter,
        loss: link.loss,
    };
    edgebox_cache_model::latency::exchange(&link, rng.random(), rng.random())
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
