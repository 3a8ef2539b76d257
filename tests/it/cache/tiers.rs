//! Storage tiers through the real edge: the cache lock, L1 → L2 across a restart, damaged
//! L2 entries, objects larger than L1, purge, and the counters on `/stats` and `/metrics`.

use std::collections::HashMap;
use std::time::Duration;

use super::{Edge, Origin, cache_stats, get, pattern, purge};
use crate::support::client;

const FRESH: &str = "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_for_a_cold_object_make_one_origin_fetch() {
    // The delay keeps the first fetch running while all the others arrive.
    let origin = Origin::start(&[("cold.txt", b"cold object")], "delay = \"500ms\"", FRESH);
    let edge = Edge::start(&origin, "", "");
    let url = format!("{}/cold.txt", edge.daemon.url("http"));
    let client = client();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(
                async move { super::request(&client, reqwest::Method::GET, &url, &[]).await },
            )
        })
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let got = request.await.unwrap();
        assert_eq!((got.status, &got.body[..]), (200, &b"cold object"[..]));
        *outcomes.entry(got.how()).or_default() += 1;
    }
    assert_eq!(origin.count("/cold.txt").await, 1, "{outcomes:?}");
    assert_eq!(outcomes.get("MISS origin"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("HIT l1"), Some(&99), "{outcomes:?}");
    let stats = cache_stats(&edge.daemon).await;
    assert!(stats.lock_waits >= 1, "{stats:?}");
    assert_eq!(stats.l1.hits, 99, "{stats:?}");
}

#[tokio::test]
async fn after_a_restart_objects_come_from_l2_and_a_damaged_entry_is_refetched_not_served() {
    let origin = Origin::start(&[("a.txt", b"object a"), ("c.txt", b"object c")], "", FRESH);
    let mut edge = Edge::start(&origin, "", "");
    assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.how(), "MISS origin");
    assert_eq!(get(&edge.daemon, "/a.txt", &[]).await.how(), "HIT l1");

    edge.restart();
    let got = get(&edge.daemon, "/a.txt", &[]).await;
    assert_eq!(
        (got.how().as_str(), &got.body[..]),
        ("HIT l2", &b"object a"[..])
    );
    assert_eq!(
        get(&edge.daemon, "/a.txt", &[]).await.how(),
        "HIT l1",
        "promoted"
    );
    assert_eq!(origin.count("/a.txt").await, 1);

    // Damage every entry on disk while the edge is down: each must be detected on read,
    // deleted and fetched again — never served.
    assert_eq!(get(&edge.daemon, "/c.txt", &[]).await.how(), "MISS origin");
    let status = edge.daemon.terminate(Duration::from_secs(15));
    assert!(status.success());
    let mut damaged = 0;
    for shard in std::fs::read_dir(edge.l2_dir()).unwrap().flatten() {
        if !shard.path().is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "ent") {
                let mut bytes = std::fs::read(&path).unwrap();
                let at = bytes.len() - 4;
                bytes[at] ^= 0x40;
                std::fs::write(&path, bytes).unwrap();
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 2, "two objects on disk");
    edge.daemon = crate::support::Daemon::start("edge", &edge.config, "edge", &["http", "admin"]);
    for (path, body) in [("/a.txt", &b"object a"[..]), ("/c.txt", &b"object c"[..])] {
        let got = get(&edge.daemon, path, &[]).await;
        assert_eq!(
            (got.status, got.how().as_str(), &got.body[..]),
            (200, "MISS origin", body)
        );
    }
    assert_eq!(origin.count("/a.txt").await, 2);
    assert_eq!(origin.count("/c.txt").await, 2);
    let stats = cache_stats(&edge.daemon).await;
    assert_eq!(stats.corrupt_entries, 2, "{stats:?}");
    // The refetched copies are good again.
    assert_eq!(get(&edge.daemon, "/c.txt", &[]).await.how(), "HIT l1");
}

#[tokio::test]
async fn an_object_larger_than_l1_is_served_whole_from_l2_and_ranges_come_from_it() {
    const BIG: usize = 3 * 1024 * 1024;
    let big = pattern(BIG);
    let origin = Origin::start(&[("big.bin", &big)], "", FRESH);
    let edge = Edge::start(&origin, "l1_capacity = \"1MiB\"", "");
    let first = get(&edge.daemon, "/big.bin", &[]).await;
    assert_eq!(
        (first.how().as_str(), first.body.len()),
        ("MISS origin", BIG)
    );
    assert!(first.body[..] == big[..]);
    let again = get(&edge.daemon, "/big.bin", &[]).await;
    assert_eq!(again.how(), "HIT l2");
    assert!(
        again.body[..] == big[..],
        "the object differs when served from L2"
    );
    let range = get(
        &edge.daemon,
        "/big.bin",
        &[("range", "bytes=2000000-2000099")],
    )
    .await;
    assert_eq!((range.status, range.cache.as_str()), (206, "HIT"));
    assert_eq!(
        range.header("content-range"),
        format!("bytes 2000000-2000099/{BIG}")
    );
    assert_eq!(&range.body[..], &big[2_000_000..2_000_100]);
    assert_eq!(origin.count("/big.bin").await, 1);
    let stats = cache_stats(&edge.daemon).await;
    assert_eq!(stats.l1.capacity, 1024 * 1024, "{stats:?}");
    assert!(stats.l2.bytes_served >= BIG as u64, "{stats:?}");
}

#[tokio::test]
async fn purge_by_tag_url_prefix_and_all_removes_exactly_what_it_names() {
    let rules = "[[origin.rules]]\npattern = \"/tagged/**\"\ncache_control = \"max-age=300\"\nsurrogate_keys = [\"assets\", \"v1\"]\n\n\
                 [[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";
    let files: &[(&str, &[u8])] = &[
        ("tagged/a.css", b"a"),
        ("tagged/b.css", b"b"),
        ("plain/c.txt", b"c"),
        ("plain/d.txt", b"d"),
        ("e.txt", b"e"),
    ];
    let origin = Origin::start(files, "", rules);
    let edge = Edge::start(&origin, "", "");
    let paths = [
        "/tagged/a.css",
        "/tagged/b.css",
        "/plain/c.txt",
        "/plain/d.txt",
        "/e.txt",
    ];
    for path in paths {
        assert_eq!(get(&edge.daemon, path, &[]).await.cache, "MISS");
        assert_eq!(get(&edge.daemon, path, &[]).await.cache, "HIT");
    }

    assert_eq!(
        purge(&edge.daemon, r#"{"tag": "assets"}"#).await,
        (200, serde_json::json!({"purged": 2}))
    );
    for (path, expected) in [
        ("/tagged/a.css", "MISS"),
        ("/tagged/b.css", "MISS"),
        ("/plain/c.txt", "HIT"),
        ("/e.txt", "HIT"),
    ] {
        assert_eq!(get(&edge.daemon, path, &[]).await.cache, expected, "{path}");
    }
    assert_eq!(
        purge(&edge.daemon, r#"{"url": "/e.txt"}"#).await.1["purged"],
        1
    );
    assert_eq!(get(&edge.daemon, "/e.txt", &[]).await.cache, "MISS");
    assert_eq!(
        purge(&edge.daemon, r#"{"prefix": "/plain/"}"#).await.1["purged"],
        2
    );
    assert_eq!(get(&edge.daemon, "/plain/d.txt", &[]).await.cache, "MISS");
    assert_eq!(get(&edge.daemon, "/tagged/a.css", &[]).await.cache, "HIT");
    // Everything that is cached now: 2 tagged, /e.txt, /plain/d.txt.
    assert_eq!(purge(&edge.daemon, r#"{"all": true}"#).await.1["purged"], 4);
    assert_eq!(get(&edge.daemon, "/tagged/a.css", &[]).await.cache, "MISS");

    // Bad bodies: a JSON 400, nothing purged.
    for body in [
        "",
        "not json",
        "{}",
        r#"{"url": "/a", "tag": "x"}"#,
        r#"{"all": false}"#,
        r#"{"tags": "x"}"#,
        r#"{"url": ""}"#,
    ] {
        let (status, answer) = purge(&edge.daemon, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_purge", "{body}: {answer}");
    }
    assert_eq!(get(&edge.daemon, "/tagged/a.css", &[]).await.cache, "HIT");

    let metrics = client()
        .get(format!("{}/metrics", edge.daemon.url("admin")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("edgebox_cache_hits_total{node=\"edge\",tier=\"l1\"}"),
        "{metrics}"
    );
    let stats = cache_stats(&edge.daemon).await;
    assert_eq!(stats.purged, 9, "{stats:?}");
}

#[tokio::test]
async fn an_unusable_cache_directory_leaves_memory_caching_and_serving_intact() {
    let origin = Origin::start(&[("m.txt", b"memory only")], "", FRESH);
    // A regular file where the L2 directory should be: the disk tier cannot open.
    let dir = crate::support::TestDir::new();
    dir.write("data/nodes/edge/cache", "not a directory");
    let edge = Edge::start_in(dir, origin.daemon.addr("http"), "", "");
    let first = get(&edge.daemon, "/m.txt", &[]).await;
    assert_eq!(
        (first.status, first.how().as_str(), &first.body[..]),
        (200, "MISS origin", &b"memory only"[..])
    );
    assert_eq!(get(&edge.daemon, "/m.txt", &[]).await.how(), "HIT l1");
    let stats = cache_stats(&edge.daemon).await;
    assert!(!stats.l2_enabled, "{stats:?}");
    assert!(
        edge.daemon.logs().contains("disk cache unavailable"),
        "{}",
        edge.daemon.logs()
    );
}

/// `[cache] l1_policy`: each of the simulator's policies runs the real edge's memory tier:
/// a hit after the fill comes from L1 (through the fast path), a purge removes it, and the
/// stats count what L1 holds.
#[tokio::test]
async fn every_l1_policy_serves_hits_from_l1_and_purges_them() {
    let origin = Origin::start(&[("p.txt", b"policy object")], "", FRESH);
    for policy in ["lru", "s3fifo", "sieve", "tinyufo"] {
        let edge = Edge::start(&origin, "", &format!("[cache]\nl1_policy = \"{policy}\"\n"));
        assert_eq!(get(&edge.daemon, "/p.txt", &[]).await.how(), "MISS origin");
        let hit = get(&edge.daemon, "/p.txt", &[]).await;
        assert_eq!(
            (hit.how().as_str(), &hit.body[..]),
            ("HIT l1", &b"policy object"[..]),
            "{policy}"
        );
        let stats = cache_stats(&edge.daemon).await;
        assert_eq!(
            (stats.l1.objects, stats.l1.hits),
            (1, 1),
            "{policy}: {stats:?}"
        );
        let (status, answer) = purge(&edge.daemon, r#"{"url": "/p.txt"}"#).await;
        assert_eq!(
            (status, answer["purged"].as_u64()),
            (200, Some(1)),
            "{policy}"
        );
        assert_eq!(cache_stats(&edge.daemon).await.l1.objects, 0, "{policy}");
        assert_eq!(
            get(&edge.daemon, "/p.txt", &[]).await.how(),
            "MISS origin",
            "{policy}"
        );
    }
}
