//! Unit tests of the selection policies over live statistics.

use std::collections::HashMap;

use super::*;

fn pool(policy: LbPolicy, n: u16) -> (Pool, Vec<Arc<OriginStats>>) {
    let registry = OriginRegistry::default();
    let stats: Vec<_> = (0..n)
        .map(|i| registry.get(SocketAddr::from(([127, 0, 0, 1], 9000 + i)), "r"))
        .collect();
    let pool = Pool::build(&policy, stats.iter().map(|s| (s.clone(), 1)).collect());
    (pool, stats)
}

#[test]
fn round_robin_cycles_exactly() {
    let (pool, _) = pool(LbPolicy::RoundRobin, 3);
    let mut counts: HashMap<SocketAddr, u32> = HashMap::new();
    for _ in 0..30 {
        *counts.entry(pool.pick(b"", &[]).unwrap().addr).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
}

#[test]
fn least_connections_prefers_idle() {
    let (pool, stats) = pool(LbPolicy::LeastConnections, 3);
    let _busy0 = stats[0].clone().begin();
    let _busy1 = stats[1].clone().begin();
    for _ in 0..10 {
        assert_eq!(pool.pick(b"", &[]).unwrap().addr, stats[2].addr);
    }
}

#[test]
fn latency_aware_avoids_slow_origin() {
    let (pool, stats) = pool(LbPolicy::LatencyAware, 3);
    stats[0].observe_latency(Duration::from_millis(200));
    stats[1].observe_latency(Duration::from_millis(2));
    stats[2].observe_latency(Duration::from_millis(2));
    let slow = (0..300)
        .filter(|_| pool.pick(b"", &[]).unwrap().addr == stats[0].addr)
        .count();
    assert_eq!(slow, 0, "P2C never prefers the slow origin over a fast one");
}

#[test]
fn ejected_origin_is_skipped_and_skip_list_honoured() {
    let (pool, stats) = pool(LbPolicy::RoundRobin, 2);
    stats[0].passive_failure(Duration::from_secs(60), 3, true);
    for _ in 0..10 {
        assert_eq!(pool.pick(b"", &[]).unwrap().addr, stats[1].addr);
    }
    assert!(pool.pick(b"", &[stats[1].addr]).is_none());
}
