//! The simulated network: how long one request/response exchange over a link takes, with
//! jitter, and with loss modelled as a retransmission delay (a lost exchange costs one more
//! round trip after a retransmission timeout), never as a dropped response.
//!
//! The random draws are inputs, so the edge feeds it from its thread RNG and the model from
//! its seeded stream.

use std::time::Duration;

/// Retransmission timeout as a multiple of the link's RTT (floored, like TCP's RTO).
pub const RTO_FACTOR: u32 = 2;
pub const RTO_FLOOR: Duration = Duration::from_millis(10);

/// One link of the latency model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub rtt: Duration,
    pub jitter: Duration,
    /// Probability in `0.0..=1.0`.
    pub loss: f64,
}

/// The delay of one exchange over `link`, given two uniform draws in `[0, 1)`: `jitter_draw`
/// places the delay in `rtt ± jitter`, `loss_draw < loss` makes the exchange lost once.
pub fn exchange(link: &Link, jitter_draw: f64, loss_draw: f64) -> Duration {
    let mut delay = link.rtt;
    if !link.jitter.is_zero() {
        let jitter = link.jitter.as_secs_f64();
        let offset = (jitter_draw * 2.0 - 1.0) * jitter;
        delay = Duration::from_secs_f64((link.rtt.as_secs_f64() + offset).max(0.0));
    }
    if link.loss > 0.0 && loss_draw < link.loss.clamp(0.0, 1.0) {
        delay += (link.rtt * RTO_FACTOR).max(RTO_FLOOR) + link.rtt;
    }
    delay
}

/// A link in milliseconds, for callers that sample millions of exchanges (the simulator's
/// model): [`exchange_ms`] is [`exchange`]'s arithmetic without `Duration` conversions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkMs {
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    /// Probability in `0.0..=1.0`.
    pub loss: f64,
    /// What one loss adds: the retransmission timeout and one more round trip.
    pub retransmit_ms: f64,
}

impl From<&Link> for LinkMs {
    fn from(link: &Link) -> Self {
        Self {
            rtt_ms: link.rtt.as_secs_f64() * 1000.0,
            jitter_ms: link.jitter.as_secs_f64() * 1000.0,
            loss: link.loss.clamp(0.0, 1.0),
            retransmit_ms: ((link.rtt * RTO_FACTOR).max(RTO_FLOOR) + link.rtt).as_secs_f64()
                * 1000.0,
        }
    }
}

/// [`exchange`] in milliseconds, with the same draws.
#[inline]
pub fn exchange_ms(link: &LinkMs, jitter_draw: f64, loss_draw: f64) -> f64 {
    let mut delay = link.rtt_ms;
    if link.jitter_ms != 0.0 {
        delay = (link.rtt_ms + (jitter_draw * 2.0 - 1.0) * link.jitter_ms).max(0.0);
    }
    if link.loss > 0.0 && loss_draw < link.loss {
        delay += link.retransmit_ms;
    }
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds_and_loss_adds_a_retransmission() {
        let link = Link {
            rtt: Duration::from_millis(50),
            jitter: Duration::from_millis(5),
            loss: 0.0,
        };
        assert_eq!(exchange(&link, 0.0, 0.0), Duration::from_millis(45));
        assert_eq!(exchange(&link, 0.5, 0.0), Duration::from_millis(50));
        assert!(exchange(&link, 0.999_999, 0.0) <= Duration::from_millis(55));
        let lossy = Link {
            loss: 1.0,
            jitter: Duration::ZERO,
            ..link
        };
        assert_eq!(exchange(&lossy, 0.3, 0.999), Duration::from_millis(200));
    }

    #[test]
    fn the_millisecond_form_agrees_with_the_duration_form() {
        for link in [
            Link {
                rtt: Duration::from_millis(70),
                jitter: Duration::from_millis(5),
                loss: 0.002,
            },
            Link {
                rtt: Duration::from_micros(2500),
                jitter: Duration::ZERO,
                loss: 0.5,
            },
        ] {
            let fast = LinkMs::from(&link);
            for (jitter, loss) in [(0.0, 0.9), (0.25, 0.0), (0.5, 0.001), (0.999, 0.7)] {
                let slow = exchange(&link, jitter, loss).as_secs_f64() * 1000.0;
                assert!((exchange_ms(&fast, jitter, loss) - slow).abs() < 1e-6);
            }
        }
    }
}
