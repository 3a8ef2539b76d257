//! Unit tests for the parsers that guard the origin: request paths and ranges.

// Single-range vectors are exactly what a one-range request resolves to.
#![allow(clippy::single_range_in_vec_init)]

use crate::range::{self, Resolved, Spec};
use crate::request_path::{PathError, decode};

#[test]
fn request_paths_decode_to_segments_under_the_root() {
    let check = |raw: &str, expected: &str| {
        assert_eq!(decode(raw).unwrap().as_str(), expected, "decoding {raw:?}");
    };
    check("/", "");
    check("/index.html", "index.html");
    check("//etc/passwd", "etc/passwd");
    check("/a/./b/", "a/b");
    check("/a%2fb", "a/b");
    check("/caf%C3%A9.html", "café.html");
    check("/with%20space", "with space");
}

#[test]
fn request_paths_that_could_escape_are_refused() {
    let check = |raw: &str, expected: PathError| {
        assert_eq!(decode(raw), Err(expected), "decoding {raw:?}");
    };
    check("/../etc/passwd", PathError::DotDot);
    check("/a/..", PathError::DotDot);
    check("/%2e%2e/etc/passwd", PathError::DotDot);
    check("/%2E%2E%2fetc", PathError::DotDot);
    check("/a%2f..%2f..%2fetc", PathError::DotDot);
    check("/a%5c..%5cb", PathError::Backslash);
    check("/a\\b", PathError::Backslash);
    check("/a%00b", PathError::Nul);
    check("/a%zz", PathError::BadEscape);
    check("/a%2", PathError::BadEscape);
    check("/a%ff", PathError::NotUtf8);
}

#[test]
fn range_headers_parse_or_are_ignored() {
    assert_eq!(
        range::parse("bytes=0-9, 20-, -5"),
        Some(vec![
            Spec::From {
                first: 0,
                last: Some(9)
            },
            Spec::From {
                first: 20,
                last: None
            },
            Spec::Suffix(5),
        ])
    );
    for invalid in [
        "bytes=",
        "bytes=5-1",
        "items=0-1",
        "bytes=a-b",
        "bytes=-",
        "0-1",
        "bytes=1-2-3",
    ] {
        assert_eq!(range::parse(invalid), None, "parsing {invalid:?}");
    }
}

#[test]
fn ranges_resolve_against_the_length() {
    let resolve = |header: &str, len: u64| range::resolve(&range::parse(header).unwrap(), len);
    assert_eq!(resolve("bytes=0-9", 100), Resolved::Partial(vec![0..10]));
    assert_eq!(
        resolve("bytes=90-200", 100),
        Resolved::Partial(vec![90..100])
    );
    assert_eq!(resolve("bytes=-10", 100), Resolved::Partial(vec![90..100]));
    assert_eq!(resolve("bytes=-1000", 100), Resolved::Partial(vec![0..100]));
    assert_eq!(resolve("bytes=100-", 100), Resolved::Unsatisfiable);
    assert_eq!(resolve("bytes=-0", 100), Resolved::Unsatisfiable);
    assert_eq!(resolve("bytes=0-0", 0), Resolved::Unsatisfiable);
    assert_eq!(resolve("bytes=-5", 0), Resolved::Unsatisfiable);
    assert_eq!(
        resolve("bytes=200-300, 0-0", 100),
        Resolved::Partial(vec![0..1])
    );
    let many = format!("bytes={}", vec!["0-0"; range::MAX_RANGES + 1].join(","));
    assert_eq!(resolve(&many, 100), Resolved::Whole);
}

#[test]
fn overlapping_and_adjacent_ranges_are_coalesced() {
    let resolve = |header: &str, len: u64| range::resolve(&range::parse(header).unwrap(), len);
    let zeros = format!("bytes={}", vec!["0-"; range::MAX_RANGES].join(","));
    assert_eq!(resolve(&zeros, 100), Resolved::Partial(vec![0..100]));
    assert_eq!(
        resolve("bytes=0-9, 10-19", 100),
        Resolved::Partial(vec![0..20])
    );
    assert_eq!(
        resolve("bytes=50-59, 0-9, 5-14", 100),
        Resolved::Partial(vec![0..15, 50..60])
    );
    // Nothing to merge: the request's order is kept.
    assert_eq!(
        resolve("bytes=50-59, 0-9", 100),
        Resolved::Partial(vec![50..60, 0..10])
    );
    // Multipart only when smaller than the file.
    let overhead = |_: &std::ops::Range<u64>| 80;
    assert!(range::multipart_worthwhile(
        &[0..10, 50..60],
        1000,
        overhead,
        40
    ));
    assert!(!range::multipart_worthwhile(
        &[0..10, 50..60],
        200,
        overhead,
        40
    ));
}

mod properties {
    //! Property tests: the Range decoder reads bytes from any client.

    use super::*;
    use proptest::prelude::*;

    /// Range header values: mostly well-formed specs, with hostile numbers and noise.
    fn header() -> impl Strategy<Value = String> {
        let number = prop_oneof![0u64..2000, Just(u64::MAX), any::<u64>()];
        let spec = prop_oneof![
            (number.clone(), proptest::option::of(number.clone()))
                .prop_map(|(a, b)| b.map_or(format!("{a}-"), |b| format!("{a}-{b}"))),
            number.prop_map(|n| format!("-{n}")),
            "[ 0-9,=-]{0,8}",
        ];
        (
            prop_oneof![Just("bytes"), Just("BYTES"), Just("items"), Just("")],
            proptest::collection::vec(spec, 0..80),
        )
            .prop_map(|(unit, specs)| format!("{unit}={}", specs.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parsing_any_text_never_panics(text in "\\PC{0,200}") {
            let _ = range::parse(&text);
        }

        /// What `resolve` sends: disjoint ranges inside the file, each byte at most
        /// once, covering exactly the bytes the satisfiable specs asked for.
        #[test]
        fn resolved_ranges_cover_what_was_asked_and_nothing_twice(
            value in header(),
            len in 0u64..1500,
        ) {
            let Some(specs) = range::parse(&value) else { return Ok(()) };
            let mut asked = vec![false; len as usize];
            for spec in &specs {
                let (start, end) = match *spec {
                    Spec::From { first, last } => (first, last.map_or(len, |l| l.saturating_add(1))),
                    Spec::Suffix(n) => (len.saturating_sub(n), len),
                };
                for byte in start.min(len)..end.min(len) {
                    asked[byte as usize] = true;
                }
            }
            match range::resolve(&specs, len) {
                Resolved::Whole => prop_assert!(specs.len() > range::MAX_RANGES),
                Resolved::Unsatisfiable => prop_assert!(!asked.contains(&true)),
                Resolved::Partial(ranges) => {
                    prop_assert!(ranges.len() <= specs.len());
                    let mut sent = vec![false; len as usize];
                    for range in &ranges {
                        prop_assert!(range.start < range.end && range.end <= len);
                        for byte in range.clone() {
                            prop_assert!(!sent[byte as usize], "byte {} sent twice", byte);
                            sent[byte as usize] = true;
                        }
                    }
                    prop_assert_eq!(sent, asked);
                    let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
                    prop_assert!(total <= len);
                }
            }
        }
    }
}

#[test]
fn the_large_sample_file_is_deterministic_and_mixed() {
    let generate = || {
        let mut out = Vec::new();
        crate::sample::write_large(&mut out, 1_000_000).unwrap();
        out
    };
    let first = generate();
    assert_eq!(first.len(), 1_000_000);
    assert_eq!(first, generate(), "same seed, same bytes on every node");
    let zeros = first.iter().filter(|b| **b == 0).count();
    assert!(zeros < first.len() / 100, "not a file of zeros");
    // Text blocks make it partly compressible: the word list shows up.
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("origin ") && text.contains("cache "));
}

#[test]
fn entity_tag_lists_split_on_commas_outside_quotes() {
    let tags: Vec<&str> = crate::service::entity_tags(r#""a", W/"b" ,"c,d",, "e""#).collect();
    assert_eq!(tags, [r#""a""#, r#"W/"b""#, r#""c,d""#, r#""e""#]);
    assert_eq!(crate::service::entity_tags(" , ").count(), 0);
}
