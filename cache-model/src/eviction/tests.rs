//! Hand-checked sequences: each test spells out the state the algorithm must be in.

use super::*;

fn held(policy: &mut L1, keys: impl IntoIterator<Item = u64>) -> Vec<u64> {
    // `get` counts an access; these checks run at the end of each sequence.
    keys.into_iter()
        .filter(|key| policy.get(*key).is_some())
        .collect()
}

#[test]
fn lru_evicts_the_least_recently_used_and_respects_sizes() {
    let mut lru = L1::new(PolicyKind::Lru, 3, 4);
    for key in 1..=3 {
        assert!(lru.insert(key, 1, key * 10));
    }
    assert_eq!(lru.get(1), Some(10)); // 1 is now the most recent: 2 is the oldest
    lru.insert(4, 1, 40);
    assert_eq!(held(&mut lru, [1, 2, 3, 4]), vec![1, 3, 4]);

    let mut sized = L1::new(PolicyKind::Lru, 10, 4);
    assert!(sized.insert(1, 6, 0));
    assert!(sized.insert(2, 6, 0)); // 6 + 6 > 10: 1 goes
    assert!(!sized.insert(3, 11, 0)); // larger than the whole tier: never admitted
    assert_eq!(held(&mut sized, [1, 2, 3]), vec![2]);
    assert_eq!(sized.usage().bytes, 6);
    assert_eq!(sized.usage().evictions, 1);
}

#[test]
fn sieve_keeps_visited_entries_and_moves_the_hand_toward_newer_ones() {
    let mut sieve = L1::new(PolicyKind::Sieve, 3, 4);
    for key in 1..=3 {
        sieve.insert(key, 1, 0);
    }
    sieve.get(1);
    // Hand starts at the oldest (1): visited, cleared, skipped; 2 is evicted; hand on 3.
    sieve.insert(4, 1, 0);
    // Hand on 3: not visited, evicted (1 is not revisited: its bit was cleared, but the
    // hand has passed it).
    sieve.insert(5, 1, 0);
    let L1::Sieve(inner) = &sieve else {
        unreachable!()
    };
    assert!(inner.contains(1) && inner.contains(4) && inner.contains(5));
    assert!(!inner.contains(2) && !inner.contains(3));
    assert_eq!(sieve.usage().evictions, 2);
}

#[test]
fn s3fifo_promotes_accessed_objects_and_ghost_hits_go_straight_to_main() {
    let mut s3 = S3Fifo::new(10, 16);
    for key in 1..=10 {
        s3.insert(key, 1, 0);
    }
    s3.get(1);
    // Full: the small FIFO (over its 10% target) is evicted from: 1 was accessed and
    // moves to main, 2 was not and leaves for the ghost.
    s3.insert(11, 1, 0);
    assert_eq!(s3.in_main(1), Some(true));
    assert_eq!(s3.in_main(2), None);
    assert_eq!(s3.in_main(11), Some(false));
    // 2 comes back while its ghost is remembered: straight into main; 3 makes room.
    s3.insert(2, 1, 0);
    assert_eq!(s3.in_main(2), Some(true));
    assert_eq!(s3.in_main(3), None);
    assert_eq!(s3.usage.bytes, 10);
    assert_eq!(s3.usage.objects, 10);
}

#[test]
fn s3fifo_main_reinserts_objects_with_frequency_before_evicting() {
    let mut s3 = S3Fifo::new(10, 16);
    for key in 1..=10 {
        s3.insert(key, 1, 0);
    }
    for key in 1..=5 {
        s3.get(key);
    }
    // 1..=5 were accessed in the small FIFO: they move to main (frequency reset); 6 goes.
    s3.insert(11, 1, 0);
    assert!((1..=5).all(|key| s3.in_main(key) == Some(true)));
    assert_eq!(s3.in_main(6), None);
    s3.get(1);
    // Main's oldest is 1 with frequency 1: reinserted (frequency 0); 2 is evicted instead.
    s3.main_bytes_then_evict();
    assert_eq!(s3.in_main(1), Some(true));
    assert_eq!(s3.in_main(2), None);
}

#[test]
fn every_policy_parses_and_stays_within_capacity_on_a_skewed_stream() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.as_str().parse::<PolicyKind>().unwrap(), kind);
        let mut policy = L1::new(kind, 10_000, 64);
        let mut hits = 0;
        let mut state = 1u64;
        for _ in 0..20_000 {
            state = crate::hash::mix64(state);
            // A popular set of 20 keys half the time, a long tail otherwise.
            let key = if state.is_multiple_of(2) {
                state % 20
            } else {
                state % 5000
            };
            if policy.get(key).is_some() {
                hits += 1;
            } else {
                policy.insert(key, 100 + key % 400, 0);
            }
            assert!(policy.usage().bytes <= 10_000, "{kind}");
        }
        assert!(hits > 8_000, "{kind} hit {hits} of 20000");
    }
    assert!("arc".parse::<PolicyKind>().is_err());
}

/// The lazily promoted LRU against the textbook one (a list in recency order, searched
/// linearly): the same gets, inserts, replacements and removals leave the same entries,
/// across many compactions of the access queue.
#[test]
fn lazy_lru_evicts_exactly_what_a_textbook_lru_evicts() {
    let capacity = 5_000;
    let mut lazy = Lru::new(capacity, 4);
    // (key, size, payload), most recent first.
    let mut reference: Vec<(u64, u64, u64)> = Vec::new();
    let mut state = 7u64;
    for step in 0..200_000u64 {
        state = crate::hash::mix64(state);
        let key = if state.is_multiple_of(3) {
            state % 15
        } else {
            state % 400
        };
        let size = 1 + (state >> 20) % 300;
        match (state >> 40) % 10 {
            0 => {
                assert_eq!(
                    lazy.remove(key),
                    reference.iter().any(|entry| entry.0 == key)
                );
                reference.retain(|entry| entry.0 != key);
            }
            1 => {
                // A refreshed object: replaced (perhaps larger), the newest entry.
                assert!(lazy.insert(key, size, step));
                reference.retain(|entry| entry.0 != key);
                reference.insert(0, (key, size, step));
                while reference.iter().map(|entry| entry.1).sum::<u64>() > capacity {
                    reference.pop();
                }
            }
            _ => {
                let found = reference.iter().position(|entry| entry.0 == key);
                let expected = found.map(|at| {
                    let entry = reference.remove(at);
                    reference.insert(0, entry);
                    entry.2
                });
                assert_eq!(lazy.get(key), expected, "step {step}");
                if expected.is_none() {
                    lazy.insert(key, size, step);
                    reference.insert(0, (key, size, step));
                    while reference.iter().map(|entry| entry.1).sum::<u64>() > capacity {
                        reference.pop();
                    }
                }
            }
        }
        assert_eq!(lazy.usage().objects, reference.len() as u64, "step {step}");
        assert!(lazy.order.len() <= 2 * reference.len() + LRU_QUEUE_SLACK + 1);
    }
    for (key, _, payload) in reference.clone() {
        assert!(lazy.contains(key));
        assert_eq!(lazy.get(key), Some(payload));
    }
}

#[test]
fn the_eviction_log_names_exactly_the_entries_that_left_to_make_room() {
    for kind in PolicyKind::ALL {
        let mut policy = L1::new(kind, 64 * 100, 256);
        policy.log_evictions();
        let mut held: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut evicted = Vec::new();
        // Payload = key, as the edge stores it; a skewed stream with re-accesses.
        for step in 0..5_000u64 {
            let key = (step * 7919) % 400 + if step % 3 == 0 { 0 } else { step % 17 };
            if policy.get(key).is_none() && policy.insert(key, 64 + key % 64, key) {
                held.insert(key);
            }
            if step % 500 == 0 && held.remove(&(key + 1)) {
                assert!(policy.remove(key + 1), "{kind}");
            }
            policy.drain_evicted(&mut evicted);
            for key in evicted.drain(..) {
                assert!(held.remove(&key), "{kind}: {key} evicted but not held");
            }
        }
        // What the caller still believes held is exactly what the policy holds.
        assert_eq!(held.len() as u64, policy.usage().objects, "{kind}");
        assert!(policy.usage().evictions > 0, "{kind}");
    }
}
