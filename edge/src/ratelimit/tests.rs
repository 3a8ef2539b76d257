use std::time::Duration;

use edgebox_config::{PathPattern, RateKey, RateRule};

use super::{Buckets, Key, Rules, retry_after_secs};

const MS: u64 = 1_000_000;

fn rules(rate: u32, per_ms: u64, burst: u32) -> Rules {
    Rules::new(&[RateRule {
        pattern: PathPattern::parse("/**").unwrap(),
        rate,
        per: Duration::from_millis(per_ms),
        burst,
        key: RateKey::Ip,
    }])
}

fn ip(last: u8) -> Key<'static> {
    Key::Ip(Some([10, 0, 0, last].into()))
}

#[test]
fn burst_then_one_token_per_interval() {
    let buckets = Buckets::default();
    let rules = rules(10, 1000, 3); // one token per 100 ms, three at once
    let rule = rules.find("/a").unwrap();
    let now = 5_000 * MS;
    for _ in 0..3 {
        assert!(buckets.take_at(rule, ip(1), now).is_ok());
    }
    let wait = buckets.take_at(rule, ip(1), now).unwrap_err();
    assert_eq!(wait, Duration::from_millis(100));
    // Refused requests take nothing: the wait does not grow.
    assert_eq!(buckets.take_at(rule, ip(1), now).unwrap_err(), wait);
    assert!(buckets.take_at(rule, ip(1), now + 99 * MS).is_err());
    assert!(buckets.take_at(rule, ip(1), now + 100 * MS).is_ok());
    assert!(buckets.take_at(rule, ip(1), now + 100 * MS).is_err());
    // Idle for long enough, the bucket is full again, not fuller.
    let later = now + 10_000 * MS;
    for _ in 0..3 {
        assert!(buckets.take_at(rule, ip(1), later).is_ok());
    }
    assert!(buckets.take_at(rule, ip(1), later).is_err());
}

#[test]
fn keys_and_rules_have_their_own_buckets() {
    let buckets = Buckets::default();
    let rules = rules(1, 1000, 1);
    let rule = rules.find("/").unwrap();
    let now = 1_000 * MS;
    assert!(buckets.take_at(rule, ip(1), now).is_ok());
    assert!(buckets.take_at(rule, ip(1), now).is_err());
    for other in 2..200 {
        assert!(
            buckets.take_at(rule, ip(other), now).is_ok(),
            "10.0.0.{other}"
        );
    }
    assert!(buckets.take_at(rule, Key::Header(b"key-a"), now).is_ok());
    assert!(buckets.take_at(rule, Key::Header(b"key-b"), now).is_ok());
    assert!(buckets.take_at(rule, Key::Header(b"key-a"), now).is_err());
}

#[test]
fn many_keys_within_their_burst_leave_other_keys_alone() {
    // 20,000 distinct keys in one instant, each once, a third as many as cells per row:
    // a fresh key is refused only when all four of its cells were raised twice (two
    // earlier keys shared each), which happens to about one key in a million here.
    let buckets = Buckets::default();
    let rules = rules(1, 1000, 2);
    let rule = rules.find("/").unwrap();
    let now = 1_000 * MS;
    for n in 0u32..20_000 {
        assert!(
            buckets
                .take_at(rule, Key::Header(&n.to_le_bytes()), now)
                .is_ok()
        );
    }
    let refused = (0u32..1000)
        .filter(|n| {
            let key = format!("fresh-{n}");
            buckets
                .take_at(rule, Key::Header(key.as_bytes()), now)
                .is_err()
        })
        .count();
    assert!(refused <= 1, "{refused} of 1000 fresh keys refused");
}

#[test]
fn counters_and_first_match() {
    let buckets = Buckets::default();
    let rules = Rules::new(&[
        RateRule {
            pattern: PathPattern::parse("/api/**").unwrap(),
            rate: 1,
            per: Duration::from_secs(60),
            burst: 1,
            key: RateKey::Header("x-api-key".into()),
        },
        RateRule {
            pattern: PathPattern::parse("/**").unwrap(),
            rate: 100,
            per: Duration::from_secs(1),
            burst: 100,
            key: RateKey::Ip,
        },
    ]);
    let api = rules.find("/api/v1/x").unwrap();
    assert_eq!(api.key(), &RateKey::Header("x-api-key".into()));
    assert!(buckets.take(api, Key::Header(b"k")).is_ok());
    assert!(buckets.take(api, Key::Header(b"k")).is_err());
    assert!(
        buckets
            .take(rules.find("/img/a.png").unwrap(), ip(1))
            .is_ok()
    );
    let stats = rules.stats(&buckets);
    assert_eq!((stats.checked, stats.limited), (3, 1));
    assert_eq!((stats.rules[0].checked, stats.rules[0].limited), (2, 1));
    assert_eq!(stats.rules[0].key, "header:x-api-key");
    assert_eq!((stats.rules[1].checked, stats.rules[1].limited), (1, 0));
}

#[test]
fn retry_after_rounds_up() {
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
}
