//! The entry decoder against damaged and hostile files: whatever the bytes, a lookup
//! or the index rebuild returns an error (and the tier deletes the file), never panics,
//! never allocates what a header merely claims, and never returns a body that differs
//! from what was written.

use std::path::Path;

use pingora::cache::key::HashBinary;
use proptest::prelude::*;

use super::entry::{CHUNK_SIZE, HEADER_LEN, Header, header_crc, open_entry};
use super::{DiskBody, DiskError};

const KEY: HashBinary = *b"0123456789abcdef";

/// A valid entry file, encoded as the writer does.
fn entry(url: &str, meta: (&[u8], &[u8]), body: &[u8], chunk_size: u32) -> Vec<u8> {
    let mut prefix = url.as_bytes().to_vec();
    prefix.extend_from_slice(meta.0);
    prefix.extend_from_slice(meta.1);
    let table: Vec<u8> = body
        .chunks(chunk_size as usize)
        .flat_map(|c| crc32fast::hash(c).to_le_bytes())
        .collect();
    let mut header = Header {
        chunk_size,
        key: KEY,
        url_len: url.len() as u32,
        meta_internal_len: meta.0.len() as u32,
        meta_header_len: meta.1.len() as u32,
        body_len: body.len() as u64,
        crc: 0,
    };
    header.crc = header_crc(&header.encode(), &prefix, &table);
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&prefix);
    out.extend_from_slice(body);
    out.extend_from_slice(&table);
    out
}

fn open_bytes(dir: &Path, bytes: &[u8], key: &HashBinary) -> Result<Vec<u8>, DiskError> {
    let path = dir.join("entry.ent");
    std::fs::write(&path, bytes).unwrap();
    let object = open_entry(&path, key)?;
    match object.body {
        DiskBody::Whole(body) => Ok(body.to_vec()),
        DiskBody::Chunked(chunked) => {
            let mut body = Vec::new();
            for index in 0..chunked.body_len.div_ceil(chunked.chunk_size()) {
                body.extend_from_slice(&chunked.read_chunk(index)?);
            }
            Ok(body)
        }
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_valid_entry_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = body(10_000);
    let bytes = entry("/a?b", (b"internal", b"header"), &data, 4096);
    assert_eq!(open_bytes(dir.path(), &bytes, &KEY).unwrap(), data);
}

#[test]
fn absurd_header_lengths_are_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let valid = entry("/x", (b"i", b"h"), &body(100), CHUNK_SIZE as u32);
    // (offset, width) of each length field, set to its largest values.
    for (at, width) in [(12, 4), (32, 4), (36, 4), (40, 4), (44, 8)] {
        for value in [u64::MAX, u64::MAX / 2, u32::MAX as u64, 1 << 41, 0] {
            let mut bytes = valid.clone();
            bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            assert!(
                open_bytes(dir.path(), &bytes, &KEY).is_err(),
                "field at {at} = {value}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes, sometimes behind a valid magic and version so the decoder gets past
    /// the first check.
    #[test]
    fn random_bytes_never_panic(
        mut bytes in prop::collection::vec(any::<u8>(), 0..1024),
        plausible in any::<bool>(),
    ) {
        if plausible && bytes.len() >= HEADER_LEN {
            bytes[..8].copy_from_slice(b"EBXCACHE");
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        let key: HashBinary = bytes
            .get(16..32)
            .map_or(KEY, |k| k.try_into().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let _ = open_bytes(dir.path(), &bytes, &key);
    }

    /// A valid entry truncated, extended, or with bytes changed: refused, or (when the
    /// change missed everything checked) read back exactly as written.
    #[test]
    fn damaged_entries_are_refused_or_intact(
        len in 0usize..20_000,
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        field in prop::option::of((0usize..7, any::<u64>())),
        extend in 0usize..3,
    ) {
        let data = body(len);
        let valid = entry("/p", (b"meta-i", b"meta-h"), &data, 4096);
        let mut bytes = valid.clone();
        for (at, xor) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
        }
        if let Some((which, value)) = field {
            let (at, width) = [(12, 4), (16, 8), (32, 4), (36, 4), (40, 4), (44, 8), (52, 4)][which];
            bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        if extend > 0 {
            bytes.extend(std::iter::repeat_n(0u8, extend));
        } else if !flips.is_empty() {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let dir = tempfile::tempdir().unwrap();
        if let Ok(read) = open_bytes(dir.path(), &bytes, &KEY) {
            prop_assert_eq!(read, data);
        }
    }
}

#[tokio::test]
async fn the_index_rebuild_deletes_hostile_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let sub = root.join(&super::hex(&KEY)[..2]);
    std::fs::create_dir_all(&sub).unwrap();
    let name = |n: &str| sub.join(format!("{}{n}.ent", &super::hex(&KEY)[..30]));
    let mut absurd = entry("/x", (b"i", b"h"), &body(10), 4096);
    absurd[44..52].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(name("00"), &absurd).unwrap();
    std::fs::write(name("01"), b"EBXCACHE\x01\x00\x00\x00garbage").unwrap();
    std::fs::write(name("02"), []).unwrap();
    let options = crate::cache::CacheOptions {
        l1_capacity: 1 << 20,
        l1_max_object: 1 << 17,
        l1_policy: Default::default(),
        l2_dir: Some(root),
        l2_capacity: 1 << 24,
        max_object_size: 1 << 20,
    };
    let _storage = crate::cache::TieredStorage::open_static(&options);
    for n in ["00", "01", "02"] {
        assert!(!name(n).exists(), "{n} deleted");
    }
}
