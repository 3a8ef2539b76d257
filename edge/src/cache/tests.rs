//! Unit tests for the cache tiers, driving the real pingora `Storage` trait against a real
//! directory: round trips per tier, restart, corruption, budget, purge, large objects, ranges.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::{HitHandler, PurgeTarget, PurgeType};
use pingora::cache::trace::{Span, SpanHandle};
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;

use super::disk::{CHUNK_SIZE, hex};
use super::key::cache_key;
use super::*;

mod integrity;
mod policy;
mod proxy;
mod purge;

const MIB: u64 = 1024 * 1024;

fn span() -> SpanHandle {
    Span::inactive().handle()
}

fn options(dir: &Path, l1: u64, l2: u64) -> CacheOptions {
    CacheOptions {
        l1_capacity: l1,
        l1_max_object: l1 / 8,
        l1_policy: Default::default(),
        l2_dir: Some(dir.join("cache")),
        l2_capacity: l2,
        max_object_size: 64 * MIB,
    }
}

fn open(dir: &Path, l1: u64, l2: u64) -> &'static TieredStorage {
    TieredStorage::open_static(&options(dir, l1, l2))
}

fn meta(headers: &[(&str, &str)]) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    for (name, value) in headers {
        header.append_header(name.to_string(), *value).unwrap();
    }
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

/// A body whose every byte depends on its position, so misplaced bytes are caught.
fn body(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// Store `data` under `key` through a miss handler, in `piece`-sized writes.
async fn store_with(
    storage: &'static TieredStorage,
    key: &CacheKey,
    meta: &CacheMeta,
    data: &Bytes,
    piece: usize,
) {
    let mut miss = storage.get_miss_handler(key, meta, &span()).await.unwrap();
    let mut rest = data.clone();
    while !rest.is_empty() {
        let chunk = rest.split_to(piece.min(rest.len()));
        let eof = rest.is_empty();
        miss.write_body(chunk, eof).await.unwrap();
    }
    miss.finish().await.unwrap();
}

async fn store(storage: &'static TieredStorage, key: &CacheKey, data: &Bytes) {
    store_with(
        storage,
        key,
        &meta(&[("content-type", "text/plain")]),
        data,
        16 * 1024,
    )
    .await;
}

async fn drain(hit: &mut HitHandler) -> pingora::Result<Vec<Bytes>> {
    let mut chunks = Vec::new();
    while let Some(chunk) = hit.read_body().await? {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// Look `key` up and read the whole body: (tier, body), or None on a miss.
async fn fetch(storage: &'static TieredStorage, key: &CacheKey) -> Option<(Tier, Bytes)> {
    let (_meta, mut hit) = storage.lookup(key, &span()).await.unwrap()?;
    let tier = tier_of(&hit).unwrap();
    let chunks = drain(&mut hit).await.unwrap();
    Some((tier, chunks.concat().into()))
}

fn entry_path(dir: &Path, key: &CacheKey) -> PathBuf {
    let hex = hex(&key.combined_bin());
    dir.join("cache").join(&hex[..2]).join(format!("{hex}.ent"))
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn small_object_round_trips_through_l1_and_keeps_its_headers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let key = cache_key("Example.COM", "/a.txt?x=1");
    let data = body(10_000, 1);
    store_with(storage, &key, &meta(&[("etag", "\"v1\"")]), &data, 3000).await;

    let (meta, mut hit) = storage.lookup(&key, &span()).await.unwrap().unwrap();
    assert_eq!(tier_of(&hit), Some(Tier::L1));
    assert_eq!(meta.headers().get("etag").unwrap(), "\"v1\"");
    assert_eq!(drain(&mut hit).await.unwrap().concat(), data.to_vec());
    // The same object via a differently-cased host is the same key.
    assert!(
        fetch(storage, &cache_key("example.com", "/a.txt?x=1"))
            .await
            .is_some()
    );
    assert!(
        fetch(storage, &cache_key("example.com", "/a.txt"))
            .await
            .is_none()
    );

    let stats = storage.snapshot();
    assert_eq!(
        (stats.l1.hits, stats.l1.objects, stats.l2.objects),
        (2, 1, 1)
    );
    assert_eq!(stats.l1.bytes_served, 20_000);
    assert_eq!(stats.misses, 1);
}

#[tokio::test]
async fn l2_survives_a_restart_and_its_hits_are_promoted_to_l1() {
    let dir = tempfile::tempdir().unwrap();
    let key = cache_key("h", "/persist.css");
    let data = body(50_000, 2);
    store(open(dir.path(), 8 * MIB, 64 * MIB), &key, &data).await;

    // A fresh storage over the same directory: the restart of the edge.
    let restarted = open(dir.path(), 8 * MIB, 64 * MIB);
    assert_eq!(restarted.snapshot().l2.objects, 1);
    assert_eq!(fetch(restarted, &key).await, Some((Tier::L2, data.clone())));
    assert_eq!(fetch(restarted, &key).await, Some((Tier::L1, data.clone())));
    let stats = restarted.snapshot();
    assert_eq!((stats.l2.hits, stats.l1.hits, stats.promotions), (1, 1, 1));
    assert_eq!(stats.l2.bytes_served, 50_000);
}

#[tokio::test]
async fn l1_evicts_by_bytes_and_evicted_objects_still_come_from_l2() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB of L1, 8 KiB per object at most: 40 objects of 4 KiB cannot all stay.
    let storage = open(dir.path(), 64 * 1024, 64 * MIB);
    let keys: Vec<_> = (0..40)
        .map(|i| cache_key("h", &format!("/o/{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        store(storage, key, &body(4096, i as u8)).await;
    }
    storage.sync();
    let stats = storage.snapshot();
    assert!(stats.l1.bytes <= 64 * 1024, "{stats:?}");
    assert!(stats.l1.objects < 40, "{stats:?}");
    assert_eq!(stats.l2.objects, 40);
    let mut from_l2 = 0;
    for (i, key) in keys.iter().enumerate() {
        let (tier, got) = fetch(storage, key).await.unwrap();
        assert_eq!(got, body(4096, i as u8));
        from_l2 += (tier == Tier::L2) as usize;
    }
    assert!(from_l2 > 0);
}

/// Every `[cache] l1_policy` keeps L1 within its bytes, counts its evictions, and keeps
/// the purge index true: what L1 reports holding is what it answers for, and a purge of
/// everything empties it.
#[tokio::test]
async fn every_l1_policy_evicts_by_bytes_and_keeps_the_purge_index_true() {
    for policy in edgebox_config::L1Policy::ALL {
        let dir = tempfile::tempdir().unwrap();
        let storage = TieredStorage::open_static(&CacheOptions {
            l1_policy: policy,
            ..options(dir.path(), 64 * 1024, 64 * MIB)
        });
        let keys: Vec<_> = (0..40)
            .map(|i| cache_key("h", &format!("/o/{i}")))
            .collect();
        for (round, key) in keys.iter().chain(&keys[..10]).enumerate() {
            store(storage, key, &body(4096, round as u8)).await;
            // Popular objects: the first ten are read again and again.
            for key in &keys[..(round % 10)] {
                let _ = fetch(storage, key).await;
            }
        }
        storage.sync();
        let stats = storage.snapshot();
        assert!(stats.l1.bytes <= 64 * 1024, "{policy:?}: {stats:?}");
        assert!(
            stats.l1.objects > 0 && stats.l1.objects < 40,
            "{policy:?}: {stats:?}"
        );
        let held = keys.iter().filter(|k| storage.holds(k, Tier::L1)).count() as u64;
        assert_eq!(held, stats.l1.objects, "{policy:?}");
        if policy != edgebox_config::L1Policy::Moka {
            // moka counts evictions in its own batches; the others at once.
            assert!(stats.l1.evictions > 0, "{policy:?}: {stats:?}");
        }
        let purged = storage
            .purge_by(&PurgeRequest::All, PurgeKind::Remove)
            .await;
        assert!(purged >= 40, "{policy:?}: {purged}");
        storage.sync();
        assert_eq!(storage.snapshot().l1.objects, 0, "{policy:?}");
        assert!(
            keys.iter().all(|k| !storage.holds(k, Tier::L1)),
            "{policy:?}"
        );
    }
}

#[tokio::test]
async fn objects_too_large_for_l1_skip_it_and_an_old_l1_copy_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), MIB, 64 * MIB); // 128 KiB per-object cap
    let key = cache_key("h", "/grows");
    store(storage, &key, &body(1000, 1)).await;
    assert!(storage.holds(&key, Tier::L1));
    let big = body(200_000, 2);
    store(storage, &key, &big).await;
    assert!(
        !storage.holds(&key, Tier::L1),
        "the stale small version must not shadow the new one"
    );
    assert_eq!(fetch(storage, &key).await, Some((Tier::L2, big)));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

#[tokio::test]
async fn the_disk_budget_evicts_least_recently_used_entries() {
    let dir = tempfile::tempdir().unwrap();
    // ~100 KiB of disk, 20 KiB objects: about four fit.
    let storage = open(dir.path(), 0, 100 * 1024);
    let keys: Vec<_> = (0..10)
        .map(|i| cache_key("h", &format!("/b/{i}")))
        .collect();
    store(storage, &keys[0], &body(20_000, 0)).await;
    for (i, key) in keys.iter().enumerate().skip(1) {
        store(storage, key, &body(20_000, i as u8)).await;
        // Keep /b/0 hot: it must survive the churn.
        assert!(
            fetch(storage, &keys[0]).await.is_some(),
            "hot object evicted at {i}"
        );
    }
    let stats = storage.snapshot();
    assert!(stats.l2.bytes <= 100 * 1024, "{stats:?}");
    assert!(stats.l2.evictions >= 5, "{stats:?}");
    assert!(
        fetch(storage, &keys[1]).await.is_none(),
        "coldest object still stored"
    );
    assert_eq!(
        fetch(storage, &keys[9]).await,
        Some((Tier::L2, body(20_000, 9)))
    );
    let files = walk(&dir.path().join("cache")).len() as u64;
    assert_eq!(files, stats.l2.objects, "files on disk match the index");
}

#[tokio::test]
async fn a_large_object_streams_through_l2_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB of L1; the object is 8 MiB.
    let storage = open(dir.path(), MIB, 64 * MIB);
    let key = cache_key("h", "/big.bin");
    let data = body(8 * MIB as usize, 7);
    store_with(storage, &key, &meta(&[]), &data, 64 * 1024).await;
    assert!(!storage.holds(&key, Tier::L1));

    for _ in 0..2 {
        let (_meta, mut hit) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        assert_eq!(tier_of(&hit), Some(Tier::L2));
        let chunks = drain(&mut hit).await.unwrap();
        assert!(
            chunks.len() >= 32 && chunks.iter().all(|c| c.len() <= CHUNK_SIZE),
            "read whole instead of streamed"
        );
        assert_eq!(chunks.concat(), data.to_vec());
    }
    let stats = storage.snapshot();
    assert_eq!(
        (stats.l2.hits, stats.promotions, stats.l1.objects),
        (2, 0, 0)
    );
    assert_eq!(stats.l2.bytes_served, 16 * MIB);
}

#[tokio::test]
async fn seek_serves_ranges_from_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), MIB, 64 * MIB);
    let small = cache_key("h", "/small");
    let large = cache_key("h", "/large");
    let small_body = body(10_000, 1);
    let large_body = body(3 * MIB as usize, 2);
    store(storage, &small, &small_body).await;
    store(storage, &large, &large_body).await;

    let ranges: [(usize, Option<usize>); 4] = [
        (0, Some(1)),
        (10, Some(20)),
        (CHUNK_SIZE - 5, Some(CHUNK_SIZE + 5)),
        (2 * MIB as usize + 3, None),
    ];
    for (key, data, expect_tier) in [
        (&small, &small_body, Tier::L1),
        (&large, &large_body, Tier::L2),
    ] {
        let (_meta, mut hit) = storage.lookup(key, &span()).await.unwrap().unwrap();
        assert_eq!(tier_of(&hit), Some(expect_tier));
        assert!(hit.can_seek());
        for (start, end) in ranges {
            if start >= data.len() {
                assert!(hit.seek(start, end).is_err());
                continue;
            }
            hit.seek(start, end).unwrap();
            let got = drain(&mut hit).await.unwrap().concat();
            let end = end.unwrap_or(data.len()).min(data.len());
            assert_eq!(
                got,
                data[start..end].to_vec(),
                "range {start}..{end} of {}",
                data.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_all_get_the_whole_object() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), MIB, 64 * MIB);
    let small = cache_key("h", "/c-small");
    let large = cache_key("h", "/c-large");
    let small_body = body(50_000, 3);
    let large_body = body(2 * MIB as usize, 4);
    store(storage, &small, &small_body).await;
    store(storage, &large, &large_body).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (key, data) = if i % 2 == 0 {
            (small.clone(), small_body.clone())
        } else {
            (large.clone(), large_body.clone())
        };
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                let (_, got) = fetch(storage, &key).await.unwrap();
                assert_eq!(got, data);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(storage.snapshot().l1.hits + storage.snapshot().l2.hits, 128);
}

#[tokio::test]
async fn update_meta_rewrites_both_tiers_and_keeps_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let key = cache_key("h", "/reval");
    let data = body(2 * MIB as usize, 5); // L2 only (too big for L1's 1 MiB cap)
    let small_key = cache_key("h", "/reval-small");
    let small = body(1000, 6);
    store_with(storage, &key, &meta(&[("etag", "\"1\"")]), &data, 100_000).await;
    store_with(
        storage,
        &small_key,
        &meta(&[("etag", "\"1\""), ("surrogate-key", "old")]),
        &small,
        1000,
    )
    .await;

    let updated = meta(&[("etag", "\"2\""), ("surrogate-key", "new")]);
    assert!(storage.update_meta(&key, &updated, &span()).await.unwrap());
    assert!(
        storage
            .update_meta(&small_key, &updated, &span())
            .await
            .unwrap()
    );
    assert!(
        !storage
            .update_meta(&cache_key("h", "/nope"), &updated, &span())
            .await
            .unwrap()
    );

    let restarted = open(dir.path(), 8 * MIB, 64 * MIB);
    for (store, k, data) in [
        (storage, &key, &data),
        (storage, &small_key, &small),
        (restarted, &key, &data),
        (restarted, &small_key, &small),
    ] {
        let (meta, mut hit) = store.lookup(k, &span()).await.unwrap().unwrap();
        assert_eq!(meta.headers().get("etag").unwrap(), "\"2\"");
        assert_eq!(drain(&mut hit).await.unwrap().concat(), data.to_vec());
    }
    // The purge index follows the new tags.
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Tag("old".into()), PurgeKind::Remove)
            .await,
        0
    );
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Tag("new".into()), PurgeKind::Remove)
            .await,
        2
    );
}

#[tokio::test]
async fn an_unusable_cache_directory_leaves_memory_caching_working() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"not a directory").unwrap();
    let storage = TieredStorage::open_static(&CacheOptions {
        l2_dir: Some(dir.path().join("file/cache")),
        ..options(dir.path(), 8 * MIB, 64 * MIB)
    });
    assert!(!storage.has_l2());
    let key = cache_key("h", "/mem-only");
    store(storage, &key, &body(100, 1)).await;
    assert_eq!(fetch(storage, &key).await, Some((Tier::L1, body(100, 1))));
    assert!(!storage.snapshot().l2_enabled);
}

#[tokio::test]
async fn a_failed_disk_write_is_counted_and_the_object_still_served_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let key = cache_key("h", "/disk-fails");
    let mut miss = storage
        .get_miss_handler(&key, &meta(&[]), &span())
        .await
        .unwrap();
    miss.write_body(body(1000, 1), false).await.unwrap();
    // The directory vanishes under the writer (as on a failing disk): the commit's rename fails.
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    miss.write_body(body(1000, 2), true).await.unwrap();
    miss.finish().await.unwrap();
    let stats = storage.snapshot();
    assert_eq!((stats.l2_write_errors, stats.l2.objects), (1, 0));
    assert_eq!(fetch(storage, &key).await.unwrap().0, Tier::L1);
}

#[tokio::test]
async fn a_huge_key_is_stored_by_hash_with_a_bounded_url() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let path = format!("/huge/{}", "x".repeat(100_000));
    let key = cache_key("h", &path);
    store(storage, &key, &body(100, 1)).await;
    let file_len = std::fs::metadata(entry_path(dir.path(), &key))
        .unwrap()
        .len();
    assert!(
        file_len < 10_000,
        "entry carries the whole key: {file_len} bytes"
    );
    let restarted = open(dir.path(), 8 * MIB, 64 * MIB);
    assert_eq!(fetch(restarted, &key).await, Some((Tier::L2, body(100, 1))));
    assert_eq!(
        restarted
            .purge_by(&PurgeRequest::Url(path), PurgeKind::Remove)
            .await,
        1
    );
}

#[tokio::test]
async fn snapshot_serialises_for_stats_and_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    store(storage, &cache_key("h", "/s"), &body(100, 1)).await;
    fetch(storage, &cache_key("h", "/s")).await.unwrap();
    let stats = storage.snapshot();
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["l1"]["hits"], 1);
    assert_eq!(json["l2"]["objects"], 1);
    let mut text = edgebox_node::metrics::MetricsText::new();
    super::metrics::prometheus(&stats, "edge-1", &mut text);
    let text = text.finish();
    assert!(
        text.contains("edgebox_cache_hits_total{node=\"edge-1\",tier=\"l1\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE edgebox_cache_bytes gauge"));
}
