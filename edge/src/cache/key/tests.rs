//! The cache key builder against hostile input: no two distinct normalised (host, path,
//! query) triples share a key, and every key gives its parts back.

use std::collections::HashMap;

use pingora::cache::key::{CacheHashKey, HashBinary};
use proptest::prelude::*;

use super::{key_for, parts_of_primary, primary, url_of_primary};
use crate::authority;

/// Bytes that move boundaries in naive keys, plus ordinary ones.
const HOSTILE: &[char] = &[
    'a', 'B', 'z', '0', '9', '-', '.', '_', '~', ':', '/', '\\', '?', '#', '@', ' ', '\t', '\r',
    '\n', '\0', '%', '[', ']', 'h', 'p', 'q', '1', '5', 'é', '\u{7f}', ';', '=', '&',
];

fn hostile(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(HOSTILE), 0..max)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Hosts: free hostile strings and shapes that look almost right.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        hostile(16),
        (hostile(8), 0u32..70_000).prop_map(|(h, port)| format!("{h}:{port}")),
        (hostile(6), hostile(6)).prop_map(|(a, b)| format!("{a}/{b}")),
        hostile(6).prop_map(|h| format!("127.0.0.1{h}")),
        (0u16..16, hostile(4)).prop_map(|(n, h)| format!("[::{n:x}]{h}")),
        hostile(8).prop_map(|h| h.to_ascii_uppercase()),
    ]
}

type Triple = (String, String, Option<String>);

fn triple() -> impl Strategy<Value = (String, String, Option<String>)> {
    (
        host(),
        hostile(24).prop_map(|p| format!("/{p}")),
        prop::option::of(hostile(16)),
    )
}

/// Records `key → triple` and fails on the first key that two distinct triples share.
#[derive(Default)]
struct Seen {
    by_primary: HashMap<Vec<u8>, Triple>,
    by_hash: HashMap<HashBinary, Triple>,
    collisions: usize,
}

impl Seen {
    fn add(&mut self, host: &str, path: &str, query: Option<&str>) {
        let triple: Triple = (host.into(), path.into(), query.map(Into::into));
        let bytes = primary(host, path, query);
        let (h, p, q) = parts_of_primary(&bytes).expect("every key parses");
        assert_eq!(
            (h, p, q),
            (host.as_bytes(), path.as_bytes(), query.map(str::as_bytes))
        );
        let hash = key_for(host, path, query).combined_bin();
        for previous in [
            self.by_primary.insert(bytes, triple.clone()),
            self.by_hash.insert(hash, triple.clone()),
        ]
        .into_iter()
        .flatten()
        {
            if previous != triple {
                self.collisions += 1;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

    /// Each case is a corpus of 10,000 hostile triples (30,000 in all).
    #[test]
    fn no_two_normalised_triples_share_a_key(corpus in prop::collection::vec(triple(), 10_000)) {
        let mut seen = Seen::default();
        let mut refused = 0;
        for (raw_host, path, query) in &corpus {
            match authority::normalise(raw_host) {
                Ok(host) => {
                    prop_assert!(!host.contains(['/', '\\', '?', '#', '@', ' ', '\0', '%']));
                    seen.add(&host, path, query.as_deref());
                }
                Err(_) => refused += 1,
            }
            // The key itself is injective even over hosts the proxy would refuse.
            seen.add(raw_host, path, query.as_deref());
        }
        prop_assert_eq!(seen.collisions, 0);
        prop_assert!(refused > 0 && refused < corpus.len(), "{} refused", refused);
    }

    /// Any primary key bytes at all: parsing never panics.
    #[test]
    fn parsing_arbitrary_keys_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parts_of_primary(&bytes);
        let _ = url_of_primary(&bytes);
    }
}

#[test]
fn every_split_of_one_string_is_its_own_key() {
    // The classic ambiguity: the same bytes split differently between host, path and query.
    let text = "ab/cd?ef/g";
    let mut seen = Seen::default();
    for i in 0..=text.len() {
        for j in i..=text.len() {
            seen.add(&text[..i], &text[i..j], None);
            seen.add(&text[..i], &text[i..j], Some(&text[j..]));
        }
    }
    assert_eq!(seen.collisions, 0);
}

#[test]
fn the_reported_repro_is_refused_and_cannot_meet_the_real_path() {
    // `Host: 127.0.0.1/assets` + `/index.html` used to be the key of `/assets/index.html`.
    assert!(authority::normalise("127.0.0.1/assets").is_err());
    assert_ne!(
        primary("127.0.0.1/assets", "/index.html", None),
        primary("127.0.0.1", "/assets/index.html", None)
    );
    assert_eq!(url_of_primary(&primary("h", "/a", Some("b=1"))), "/a?b=1");
    assert_eq!(url_of_primary(&primary("h", "/a", Some(""))), "/a?");
}
