//! `Cache-Status` (RFC 9211) and `Age` through real edges: each cache's entry says how it
//! handled the request, chained from the shield to the edge nearest the client, and a
//! child's copy of a parent's object is as old as the parent's plus its time here.

use std::time::Duration;

use super::shield;
use super::{Edge, Origin, get, request};
use crate::support::{client, eventually};

const FRESH: &str = "[[origin.rules]]\npattern = \"/**\"\ncache_control = \"max-age=300\"\n";

/// `value` with every `ttl=N` checked (0 < N <= 300) and replaced by `ttl=<n>`.
fn shape(value: &str) -> String {
    value
        .split(", ")
        .map(|entry| {
            entry
                .split("; ")
                .map(|param| match param.strip_prefix("ttl=") {
                    Some(n) => {
                        let n: i64 = n.parse().unwrap_or_else(|_| panic!("{value}"));
                        assert!((1..=300).contains(&n), "{value}");
                        "ttl=<n>".to_owned()
                    }
                    None => param.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_says_miss_stored_then_hit_with_the_remaining_ttl() {
    let origin = Origin::start(&[("x.txt", b"x")], "", FRESH);
    let edge = Edge::start(&origin, "", "");
    let miss = get(&edge.daemon, "/x.txt", &[]).await;
    assert_eq!(miss.how(), "MISS origin");
    assert_eq!(
        shape(miss.header("cache-status")),
        "edge; fwd=uri-miss; stored; ttl=<n>"
    );
    let hit = get(&edge.daemon, "/x.txt", &[]).await;
    assert_eq!(hit.how(), "HIT l1");
    assert_eq!(shape(hit.header("cache-status")), "edge; hit; ttl=<n>");
    // Not cacheable: forwarded, not stored, no ttl.
    let post = request(
        &client(),
        reqwest::Method::POST,
        &format!("{}/x.txt", edge.daemon.url("http")),
        &[],
    )
    .await;
    assert_eq!(post.header("cache-status"), "edge; fwd=bypass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_shield_its_entry_comes_first_and_the_child_appends_its_own() {
    let origin = Origin::start(&[("s.txt", b"s")], "", FRESH);
    let tiered = shield::start(&origin);
    let [a, b] = &tiered.children;
    let first = get(a, "/s.txt", &[]).await;
    assert_eq!(first.how(), "MISS origin");
    assert_eq!(
        shape(first.header("cache-status")),
        "shield; fwd=uri-miss; stored; ttl=<n>, a; fwd=uri-miss; stored; ttl=<n>"
    );
    let second = get(b, "/s.txt", &[]).await;
    assert_eq!(second.how(), "MISS parent");
    assert_eq!(
        shape(second.header("cache-status")),
        "shield; hit; ttl=<n>, b; fwd=uri-miss; stored; ttl=<n>"
    );
    // A hit on the child involved the child alone: the shield's old entry is not replayed.
    let hit = get(b, "/s.txt", &[]).await;
    assert_eq!(hit.how(), "HIT l1");
    assert_eq!(shape(hit.header("cache-status")), "b; hit; ttl=<n>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_that_waited_on_another_fetch_say_collapsed() {
    let origin = Origin::start(&[("slow.txt", b"slow")], "delay = \"500ms\"", FRESH);
    let edge = Edge::start(&origin, "", "");
    let url = format!("{}/slow.txt", edge.daemon.url("http"));
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { request(&client(), reqwest::Method::GET, &url, &[]).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        let got = request.await.unwrap();
        assert_eq!((got.status, &got.body[..]), (200, &b"slow"[..]));
        statuses.push(shape(got.header("cache-status")));
    }
    assert_eq!(origin.count("/slow.txt").await, 1);
    let count = |wanted: &str| statuses.iter().filter(|s| *s == wanted).count();
    assert_eq!(
        count("edge; fwd=uri-miss; stored; ttl=<n>"),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        count("edge; fwd=uri-miss; collapsed; ttl=<n>"),
        7,
        "{statuses:?}"
    );
}

fn age(got: &super::Got) -> u64 {
    got.header("age")
        .parse()
        .unwrap_or_else(|_| panic!("an Age header: {got:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_copy_is_as_old_as_the_parents_and_goes_stale_as_much_sooner() {
    let origin = Origin::start(&[("old.txt", b"old")], "", FRESH);
    let tiered = shield::start(&origin);
    let [a, _] = &tiered.children;
    assert_eq!(
        get(&tiered.shield, "/old.txt", &[]).await.how(),
        "MISS origin"
    );
    // Let the shield's copy age (a condition on its own Age header, not a fixed sleep).
    let at_shield = eventually(
        "the shield's copy to age",
        Duration::from_secs(10),
        || async {
            let got = get(&tiered.shield, "/old.txt", &[]).await;
            (age(&got) >= 2).then_some(age(&got))
        },
    )
    .await;
    let miss = get(a, "/old.txt", &[]).await;
    assert_eq!(miss.how(), "MISS parent");
    assert!(age(&miss) >= at_shield, "{miss:?}");
    let hit = get(a, "/old.txt", &[]).await;
    assert_eq!(hit.how(), "HIT l1");
    assert!(age(&hit) >= at_shield, "{hit:?}");
    // Its freshness counts from the shield's copy: at most 300 s minus that age remain.
    let ttl: i64 = hit
        .header("cache-status")
        .rsplit("ttl=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl <= 300 - at_shield as i64, "{hit:?}");
}
