//! The parent tier: two edges behind one shield edge. Misses go to the shield, which
//! answers from its cache or the origin; the children say which (`parent` / `origin`).

use std::collections::HashMap;

use super::{Origin, get, origin_group};
use crate::support::{Daemon, ONE_REGION, TestDir, client};
use edgebox_wire::edge::{CacheStatus, Tier};

struct Tiered {
    _shield_dir: TestDir,
    shield: Daemon,
    _dir: TestDir,
    children: [Daemon; 2],
}

fn start(origin: &Origin) -> Tiered {
    let shield_dir = TestDir::new();
    let shield_config = shield_dir.config(&format!(
        "{ONE_REGION}\n[[nodes]]\nname = \"shield\"\nrole = \"edge\"\nregion = \"local\"\n\
         listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin_group = \"g\"\n\n{}",
        origin_group(origin)
    ));
    let shield = Daemon::start("edge", &shield_config, "shield", &["http", "admin"]);
    // The children's copy of the deployment names the shield's real address.
    let mut toml = format!(
        "{ONE_REGION}\n[[nodes]]\nname = \"shield\"\nrole = \"edge\"\nregion = \"local\"\n\
         listen = \"{}\"\nadmin = \"127.0.0.1:1\"\norigin_group = \"g\"\n\n{}",
        shield.addr("http"),
        origin_group(origin)
    );
    for child in ["a", "b"] {
        toml += &format!(
            "\n[[nodes]]\nname = \"{child}\"\nrole = \"edge\"\nregion = \"local\"\n\
             listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\norigin_group = \"g\"\nparent = \"shield\"\n"
        );
    }
    let dir = TestDir::new();
    let config = dir.config(&toml);
    let children = [
        Daemon::start("edge", &config, "a", &["http", "admin"]),
        Daemon::start("edge", &config, "b", &["http", "admin"]),
    ];
    Tiered {
        _shield_dir: shield_dir,
        shield,
        _dir: dir,
        children,
    }
}

const FRESH: &str = "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";

#[tokio::test]
async fn a_second_edge_missing_an_object_gets_it_from_the_shield_cache() {
    let origin = Origin::start(&[("shared.txt", b"shared")], "", FRESH);
    let tiered = start(&origin);
    let [a, b] = &tiered.children;
    let first = get(a, "/shared.txt", &[]).await;
    assert_eq!(
        (first.how().as_str(), &first.body[..]),
        ("MISS origin", &b"shared"[..])
    );
    assert_eq!(
        first.header("via"),
        "1.1 edgebox-shield, 1.1 edgebox-a",
        "went through the shield"
    );
    let second = get(b, "/shared.txt", &[]).await;
    assert_eq!(
        (second.how().as_str(), &second.body[..]),
        ("MISS parent", &b"shared"[..])
    );
    assert_eq!(get(b, "/shared.txt", &[]).await.how(), "HIT l1");
    assert_eq!(get(a, "/shared.txt", &[]).await.how(), "HIT l1");
    assert_eq!(origin.count("/shared.txt").await, 1);
    let stats = super::cache_stats(b).await;
    assert_eq!(stats.by_tier[&Tier::Parent].responses, 1, "{stats:?}");
    assert_eq!(stats.by_tier[&Tier::Parent].bytes, 6, "{stats:?}");
    assert_eq!(stats.by_tier[&Tier::L1].responses, 1, "{stats:?}");
    assert_eq!(stats.by_status[&CacheStatus::Hit], 1, "{stats:?}");
    // The shield itself answers from its cache too.
    assert_eq!(
        get(&tiered.shield, "/shared.txt", &[]).await.how(),
        "HIT l1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_edges_missing_the_same_cold_object_at_once_cause_one_origin_fetch() {
    let origin = Origin::start(&[("cold.txt", b"cold")], "delay = \"500ms\"", FRESH);
    let tiered = start(&origin);
    let client = client();
    let requests: Vec<_> = (0..40)
        .map(|i| {
            let url = format!("{}/cold.txt", tiered.children[i % 2].url("http"));
            let client = client.clone();
            tokio::spawn(async move {
                let got = super::request(&client, reqwest::Method::GET, &url, &[]).await;
                (i % 2, got)
            })
        })
        .collect();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let (child, got) = request.await.unwrap();
        assert_eq!((got.status, &got.body[..]), (200, &b"cold"[..]));
        *outcomes
            .entry(format!("{child}: {}", got.how()))
            .or_default() += 1;
    }
    assert_eq!(origin.count("/cold.txt").await, 1, "{outcomes:?}");
    // Each child fetched once from the shield (its own lock collapsed the rest); one of the
    // two fetches was the origin fetch, the other waited on the shield's lock and was then
    // served from the shield's cache.
    let misses: Vec<_> = outcomes
        .keys()
        .filter(|k| k.contains("MISS"))
        .cloned()
        .collect();
    assert_eq!(misses.len(), 2, "{outcomes:?}");
    assert!(
        misses.iter().any(|k| k.ends_with("MISS origin")),
        "{outcomes:?}"
    );
    assert!(
        misses.iter().any(|k| k.ends_with("MISS parent")),
        "{outcomes:?}"
    );
}
