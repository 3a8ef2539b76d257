//! L1 memory overhead per cached object: stores 100,000 small objects in the edge's tiered
//! storage (memory tier only, as the proxy stores a miss: miss handler, body, finish) and
//! reports what the process holds per object beyond the body bytes.
//!
//! Two figures: heap bytes still allocated (a counting global allocator around the system
//! one: exact, excludes allocator slack) and resident memory (RSS from `/proc`, includes
//! slack and fragmentation). Run: `cargo bench --bench l1_memory` (release profile);
//! `OBJECTS=N` and `BODY=bytes` change the defaults (100,000 objects of 100 bytes),
//! `POLICY=lru|s3fifo|sieve|tinyufo` the L1 eviction policy (default moka).
//! Results: `benches/results/l1_memory.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edgebox_edge::cache::{CacheOptions, TieredStorage, key::cache_key};
use pingora::cache::trace::Span;
use pingora::cache::{CacheMeta, Storage};
use pingora::http::ResponseHeader;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded to the system allocator with the caller's layout; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The headers an nginx origin sends for a static file (hop-by-hop ones already removed,
/// as the proxy stores them).
fn meta(body: usize, i: usize) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("Server", "nginx/1.22.1".to_owned()),
        ("Date", httpdate::fmt_http_date(SystemTime::now())),
        ("Content-Type", "application/octet-stream".to_owned()),
        ("Content-Length", body.to_string()),
        ("Last-Modified", "Tue, 01 Dec 2026 23:00:00 GMT".to_owned()),
        ("ETag", format!("\"6566d8e2-{i:x}\"")),
        ("Cache-Control", "max-age=3600".to_owned()),
        ("Accept-Ranges", "bytes".to_owned()),
    ] {
        header.append_header(name, value).unwrap();
    }
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, header)
}

fn main() {
    let objects: usize = std::env::var("OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let body_len: usize = std::env::var("BODY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let policy = std::env::var("POLICY").map_or(edgebox_config::L1Policy::Moka, |name| {
        edgebox_config::L1Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .unwrap_or_else(|| panic!("unknown POLICY {name:?}"))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage: &'static TieredStorage = TieredStorage::open_static(&CacheOptions {
        l1_capacity: 1 << 34,
        l1_max_object: 1 << 20,
        l1_policy: policy,
        l2_dir: None,
        l2_capacity: 0,
        max_object_size: 1 << 20,
    });
    let span = Span::inactive().handle();
    let keys: Vec<_> = (0..objects)
        .map(|i| cache_key("bench.example", &format!("/objects/{i:06}.bin")))
        .collect();
    let bodies: Vec<Bytes> = (0..objects)
        .map(|i| Bytes::from(vec![i as u8; body_len]))
        .collect();
    let metas: Vec<CacheMeta> = (0..objects).map(|i| meta(body_len, i)).collect();
    storage.sync();
    let (heap0, rss0) = (LIVE.load(Relaxed), rss_bytes());
    runtime.block_on(async {
        for ((key, body), meta) in keys.iter().zip(&bodies).zip(&metas) {
            let mut miss = storage.get_miss_handler(key, meta, &span).await.unwrap();
            miss.write_body(body.clone(), true).await.unwrap();
            miss.finish().await.unwrap();
        }
    });
    storage.sync();
    // `keys`, `bodies` and `metas` were allocated before the first reading and are still
    // alive, so the delta is what the storage itself holds: the body copies it buffered
    // plus its overhead.
    let (heap1, rss1) = (LIVE.load(Relaxed), rss_bytes());
    let held = storage.snapshot().l1.objects;
    // One hit of each object through the `Storage` trait, as the full hit path does.
    runtime.block_on(async {
        for key in &keys {
            let (_meta, mut hit) = storage.lookup(key, &span).await.unwrap().expect("held");
            while hit.read_body().await.unwrap().is_some() {}
        }
    });
    let (heap2, rss2) = (LIVE.load(Relaxed), rss_bytes());
    let per = |bytes: i64| bytes as f64 / objects as f64 - body_len as f64;
    println!(
        "L1 policy {}: objects stored: {objects} of {body_len} body bytes; L1 holds {held}",
        policy.as_str()
    );
    println!(
        "after storing: heap {:.0} B/object beyond the body (allocator slack excluded), RSS {:.0} B/object beyond the body",
        per(heap1 - heap0),
        per(rss1 - rss0)
    );
    println!(
        "after one hit each: heap {:.0} B/object beyond the body, RSS {:.0} B/object beyond the body",
        per(heap2 - heap0),
        per(rss2 - rss0)
    );
    // What the parts of an entry hold, each built the way the storage builds it at
    // admission and measured on its own (heap, same objects).
    let sample = objects.min(10_000);
    let measure = |build: &dyn Fn(usize) -> Box<dyn std::any::Any>| {
        let before = LIVE.load(Relaxed);
        let held: Vec<_> = (0..sample).map(build).collect();
        let bytes = (LIVE.load(Relaxed) - before) as f64 / sample as f64;
        drop(held);
        bytes
    };
    let header = measure(&|i| {
        Box::new(edgebox_edge::cache::hot::CompactHeader::new(&metas[i]).expect("compact"))
    });
    let internal = measure(&|i| Box::new(metas[i].serialize().unwrap().0));
    let serialised = measure(&|i| Box::new(metas[i].serialize().unwrap()));
    let index = edgebox_edge::cache::index::PurgeIndex::default();
    let before = LIVE.load(Relaxed);
    for key in &keys[..sample] {
        let url = edgebox_edge::cache::key::url_of_primary(key.primary_key());
        index.record(
            pingora::cache::key::CacheHashKey::combined_bin(key),
            &url,
            &[],
            edgebox_edge::cache::Tier::L1,
        );
    }
    let index_bytes = (LIVE.load(Relaxed) - before) as f64 / sample as f64;
    drop(index);
    println!(
        "of which (heap, measured apart): the compact header {header:.0} B/object, pingora's internal meta {internal:.0} B/object (the whole serialised meta, no longer kept in L1: {serialised:.0} B), the purge index record {index_bytes:.0} B/object"
    );
    drop((keys, bodies, metas));
}
