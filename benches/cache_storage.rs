//! Cache storage hit throughput: a full hit (lookup through pingora's `Storage` trait, meta
//! deserialisation, reading the whole body) from L1 and from L2, for 1 KiB and 100 KiB objects.
//!
//! L2 is measured with the memory tier switched off so that every lookup goes to disk (the
//! files stay in the OS page cache, as hot objects do in production; this measures our code,
//! checksumming included, not the device). Results: `benches/results/cache_storage.md`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgebox_edge::cache::hot::PerRequest;
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

async fn store(storage: &'static TieredStorage, key: &CacheKey, body: Bytes) {
    let span = Span::inactive().handle();
    let mut miss = storage.get_miss_handler(key, &meta(), &span).await.unwrap();
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
    let key = cache_key("bench.example", "/fast/1024");
    runtime.block_on(store(storage, &key, Bytes::from(vec![7u8; 1024])));
    let mut group = c.benchmark_group("fast_hit");
    group.bench_function("lookup+header/1KiB", |b| {
        b.iter(|| {
            let now = SystemTime::now();
            let entry = storage.fresh_l1(&key, now).expect("fresh in L1");
            let hot = entry.hot.as_ref().expect("prepared header");
            let header = hot
                .response(
                    now,
                    PerRequest {
                        cache_status: HeaderValue::from_static("edge-eu; hit; ttl=3599"),
                        via: HeaderValue::from_static("1.1 edgebox-edge-eu"),
                        request_id: HeaderValue::from_static("edge-eu-2a7f43ff-00000001"),
                        server_timing: HeaderValue::from_static("edge;dur=0.1, total;dur=0.1"),
                    },
                )
                .unwrap();
            std::hint::black_box((header, entry.body.len()))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
