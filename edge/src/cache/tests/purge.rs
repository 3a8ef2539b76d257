//! Purge by URL, prefix, tag and everything, in both tiers and after a restart.

use super::*;

#[tokio::test]
async fn purge_by_url_prefix_tag_and_everything() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let tagged = meta(&[("surrogate-key", "assets  red"), ("surrogate-key", "blue")]);
    // Two Vary variants of /v.css plus the primary slot.
    let primary = cache_key("h", "/v.css");
    let mut gzip = cache_key("h", "/v.css");
    gzip.set_variance_key([1; 16]);
    let mut br = cache_key("h", "/v.css");
    br.set_variance_key([2; 16]);
    for key in [&primary, &gzip, &br] {
        store_with(storage, key, &tagged, &body(100, 1), 100).await;
    }
    let others = [
        ("/img/a.png", "assets"),
        ("/img/b.png", ""),
        ("/imgx", ""),
        ("/doc/a", "docs"),
    ];
    for (path, tag) in others {
        store_with(
            storage,
            &cache_key("h", path),
            &meta(&[("surrogate-key", tag)]),
            &body(100, 2),
            100,
        )
        .await;
    }

    assert_eq!(
        storage.purge_by(&PurgeRequest::Url("/v.css".into()), PurgeKind::Remove).await,
        3
    );
    for key in [&primary, &gzip, &br] {
        assert!(fetch(storage, key).await.is_none());
    }
    assert_eq!(
        storage.purge_by(&PurgeRequest::Url("/v.css".into()), PurgeKind::Remove).await,
        0
    );

    for key in [&primary, &gzip] {
        store_with(storage, key, &tagged, &body(100, 1), 100).await;
    }
    // Tag: exactly the tagged objects (two variants + /img/a.png), nothing else.
    assert_eq!(
        storage.purge_by(&PurgeRequest::Tag("assets".into()), PurgeKind::Remove).await,
        3
    );
    assert!(
        fetch(storage, &cache_key("h", "/img/a.png"))
            .await
            .is_none()
    );
    assert!(
        fetch(storage, &cache_key("h", "/img/b.png"))
            .await
            .is_some()
    );
    assert_eq!(storage.purge_by(&PurgeRequest::Tag("blue".into()), PurgeKind::Remove).await, 0);

    // Prefix: "/img/" takes /img/b.png but not /imgx.
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Prefix("/img/".into()), PurgeKind::Remove)
            .await,
        1
    );
    assert!(fetch(storage, &cache_key("h", "/imgx")).await.is_some());

    // Absolute URLs purge by their path.
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Url("http://other.example/imgx".into()), PurgeKind::Remove)
            .await,
        1
    );
    assert_eq!(storage.purge_by(&PurgeRequest::All, PurgeKind::Remove).await, 1);
    assert!(fetch(storage, &cache_key("h", "/doc/a")).await.is_none());
    let stats = storage.snapshot();
    assert_eq!(
        (stats.l1.objects, stats.l2.objects, stats.purged),
        (0, 0, 9)
    );
    assert!(walk(&dir.path().join("cache")).is_empty());
}

#[tokio::test]
async fn tags_and_urls_are_rebuilt_from_disk_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    store_with(
        storage,
        &cache_key("h", "/p/1"),
        &meta(&[("surrogate-key", "t1")]),
        &body(10, 1),
        10,
    )
    .await;
    store_with(
        storage,
        &cache_key("h", "/p/2"),
        &meta(&[("surrogate-key", "t2")]),
        &body(10, 1),
        10,
    )
    .await;
    store_with(
        storage,
        &cache_key("h", "/q/3"),
        &meta(&[]),
        &body(10, 1),
        10,
    )
    .await;
    let restarted = open(dir.path(), 8 * MIB, 64 * MIB);
    assert_eq!(restarted.purge_by(&PurgeRequest::Tag("t1".into()), PurgeKind::Remove).await, 1);
    assert_eq!(
        restarted
            .purge_by(&PurgeRequest::Prefix("/p/".into()), PurgeKind::Remove)
            .await,
        1
    );
    assert_eq!(
        restarted.purge_by(&PurgeRequest::Url("/q/3".into()), PurgeKind::Remove).await,
        1
    );
    assert_eq!(restarted.snapshot().l2.objects, 0);
}

#[tokio::test]
async fn storage_purge_removes_the_entry_from_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let key = cache_key("h", "/pp");
    store(storage, &key, &body(100, 1)).await;
    let target = key.to_compact();
    let outcome = storage
        .purge(
            PurgeTarget::Active(&target),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        pingora::cache::storage::PurgeOutcome::Purged(None)
    ));
    assert!(!storage.holds(&key, Tier::L1) && !storage.holds(&key, Tier::L2));
    let again = storage
        .purge(
            PurgeTarget::Active(&target),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .unwrap();
    assert!(matches!(
        again,
        pingora::cache::storage::PurgeOutcome::NotFound
    ));
}
