//! Cache storage hit throughput: a full hit (lookup through pingora's `Storage` trait, meta
//! deserialisation, reading the whole body) from L1 and from L2, for 1 KiB and 100 KiB objects.
//!
//! L2 is measured with the memory tier switched off so that every lookup goes to disk (the
//! files stay in the OS page cache, as hot objects do in production; this measures our code,
//! checksumming included, not the device). Results: `benches/results/cache_storage.md`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgebox_edge::cache::hot::PerRequest;
use edgebox_edge::cache::memory::MemEntry;
use edgebox_edge::cache::{CacheOptions, TieredStorage, key::cache_key, tier_of};
use http::HeaderValue;
use pingora::cache::trace::Span;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;

const MIB: u64 = 1024 * 1024;

fn meta() -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .append_header("content-type", "application/octet-stream")
        .unwrap();
    header.append_header("etag", "\"bench\"").unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

/// The headers an nginx origin sends for a static file (hop-by-hop ones removed).
fn nginx_meta() -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("Server", "nginx/1.22.1"),
        ("Date", "Sun, 06 Dec 2026 09:00:00 GMT"),
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", "1024"),
        ("Last-Modified", "Tue, 01 Dec 2026 23:00:00 GMT"),
        ("ETag", "\"6566d8e2-400\""),
        ("Cache-Control", "max-age=3600"),
        ("Accept-Ranges", "bytes"),
    ] {
        header.append_header(name, value).unwrap();
    }
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

/// Whether this tree has the compact L1 header (the before/after comparison of issue 12
/// runs this bench on both trees; the baseline sets it false).
const BUILT: bool = true;

/// The per-request values of a fast hit, as `serve_fresh_l1` passes them.
fn per_request() -> PerRequest {
    PerRequest {
        cache_status: HeaderValue::from_static("edge-eu; hit; ttl=3599"),
        via: HeaderValue::from_static("1.1 edgebox-edge-eu"),
        request_id: HeaderValue::from_static("edge-eu-2a7f43ff-00000001"),
        server_timing: HeaderValue::from_static("edge;dur=0.1, total;dur=0.1"),
    }
}

/// The fast path's header for `entry`, as `serve_fresh_l1` builds it.
fn fast_header(entry: &Arc<MemEntry>, now: SystemTime) -> Box<ResponseHeader> {
    entry
        .fast_header(now, per_request())
        .expect("a fast-path layout")
        .unwrap()
}

/// The same header built from the compact form field by field, as for an entry this
/// thread has not hit lately (`MemEntry::fast_header` keeps the last ones built).
fn built_header(entry: &Arc<MemEntry>, now: SystemTime) -> Box<ResponseHeader> {
    entry
        .header
        .response(now, entry.epoch, per_request())
        .expect("a fast-path layout")
        .unwrap()
}

async fn store(storage: &'static TieredStorage, key: &CacheKey, body: Bytes) {
    store_with(storage, key, &meta(), body).await;
}

async fn store_with(
    storage: &'static TieredStorage,
    key: &CacheKey,
    meta: &CacheMeta,
    body: Bytes,
) {
    let span = Span::inactive().handle();
    let mut miss = storage.get_miss_handler(key, meta, &span).await.unwrap();
    miss.write_body(body, true).await.unwrap();
    miss.finish().await.unwrap();
}

/// One full hit; returns the body length so the work cannot be optimised away.
async fn hit(storage: &'static TieredStorage, key: &CacheKey) -> usize {
    let span = Span::inactive().handle();
    let (_meta, mut hit) = storage
        .lookup(key, &span)
        .await
        .unwrap()
        .expect("benchmark object must be cached");
    std::hint::black_box(tier_of(&hit));
    let mut len = 0;
    while let Some(chunk) = hit.read_body().await.unwrap() {
        len += chunk.len();
    }
    len
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tiers = [("l1", 64 * MIB), ("l2", 0)];
    let mut group = c.benchmark_group("cache_hit");
    for (tier, l1_capacity) in tiers {
        let storage = TieredStorage::open_static(&CacheOptions {
            l1_capacity,
            l1_max_object: l1_capacity / 8,
            l1_policy: Default::default(),
            l2_dir: Some(dir.path().join(tier)),
            l2_capacity: 256 * MIB,
            max_object_size: 64 * MIB,
        });
        for size in [1024usize, 100 * 1024] {
            let key = cache_key("bench.example", &format!("/{tier}/{size}"));
            let body: Bytes = (0..size).map(|i| i as u8).collect::<Vec<_>>().into();
            runtime.block_on(store(storage, &key, body));
            assert_eq!(runtime.block_on(hit(storage, &key)), size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(format!("{tier}/{}KiB", size / 1024), |b| {
                b.iter(|| runtime.block_on(hit(storage, &key)));
            });
        }
    }
    group.finish();

    // The fast path's own work for a fresh L1 hit, in isolation: the L1 lookup and the
    // response header assembled from the prepared one (what `serve_fresh_l1` does before
    // pingora writes the answer).
    let storage = TieredStorage::open_static(&CacheOptions {
        l1_capacity: 64 * MIB,
        l1_max_object: 8 * MIB,
        l1_policy: Default::default(),
        l2_dir: Some(dir.path().join("fast")),
        l2_capacity: 256 * MIB,
        max_object_size: 64 * MIB,
    });
    // Two stored headers: the two fields of `meta()`, and the eight an nginx origin sends
    // for a static file (what `benches/cache_hit.sh` serves).
    let mut group = c.benchmark_group("fast_hit");
    for (name, meta) in [("1KiB", meta()), ("nginx-1KiB", nginx_meta())] {
        let key = cache_key("bench.example", &format!("/fast/{name}"));
        runtime.block_on(store_with(
            storage,
            &key,
            &meta,
            Bytes::from(vec![7u8; 1024]),
        ));
        group.bench_function(format!("lookup+header/{name}"), |b| {
            b.iter(|| {
                let now = SystemTime::now();
                let entry = storage.fresh_l1(&key, now).expect("fresh in L1");
                let header = fast_header(&entry, now);
                std::hint::black_box((header, entry.body.len()))
            });
        });
        if BUILT {
            group.bench_function(format!("lookup+built header/{name}"), |b| {
                b.iter(|| {
                    let now = SystemTime::now();
                    let entry = storage.fresh_l1(&key, now).expect("fresh in L1");
                    let header = built_header(&entry, now);
                    std::hint::black_box((header, entry.body.len()))
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
