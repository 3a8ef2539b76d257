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
        storage
            .purge_by(&PurgeRequest::Url("/v.css".into()), PurgeKind::Remove)
            .await,
        3
    );
    for key in [&primary, &gzip, &br] {
        assert!(fetch(storage, key).await.is_none());
    }
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Url("/v.css".into()), PurgeKind::Remove)
            .await,
        0
    );

    for key in [&primary, &gzip] {
        store_with(storage, key, &tagged, &body(100, 1), 100).await;
    }
    // Tag: exactly the tagged objects (two variants + /img/a.png), nothing else.
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Tag("assets".into()), PurgeKind::Remove)
            .await,
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
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::Tag("blue".into()), PurgeKind::Remove)
            .await,
        0
    );

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
            .purge_by(
                &PurgeRequest::Url("http://other.example/imgx".into()),
                PurgeKind::Remove
            )
            .await,
        1
    );
    assert_eq!(
        storage
            .purge_by(&PurgeRequest::All, PurgeKind::Remove)
            .await,
        1
    );
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
    assert_eq!(
        restarted
            .purge_by(&PurgeRequest::Tag("t1".into()), PurgeKind::Remove)
            .await,
        1
    );
    assert_eq!(
        restarted
            .purge_by(&PurgeRequest::Prefix("/p/".into()), PurgeKind::Remove)
            .await,
        1
    );
    assert_eq!(
        restarted
            .purge_by(&PurgeRequest::Url("/q/3".into()), PurgeKind::Remove)
            .await,
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

#[tokio::test]
async fn a_soft_purge_keeps_the_body_in_both_tiers_and_makes_it_stale() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.append_header("surrogate-key", "soft").unwrap();
    // Fresh for an hour, with a minute of stale-if-error.
    let fresh = CacheMeta::new(now + Duration::from_secs(3600), now, 0, 60, header);
    let key = cache_key("h", "/soft");
    let data = body(1000, 3);
    store_with(storage, &key, &fresh, &data, 1000).await;
    let l1_key = key.clone();
    assert!(storage.fresh_l1(&l1_key, now).is_some());

    let marked = storage
        .purge_by(&PurgeRequest::Tag("soft".into()), PurgeKind::MarkStale)
        .await;
    assert_eq!(marked, 1);
    assert!(
        storage.fresh_l1(&key, SystemTime::now()).is_none(),
        "the fast path no longer sees it fresh"
    );
    let (meta, _) = storage.lookup(&key, &span()).await.unwrap().unwrap();
    assert!(!meta.is_fresh(SystemTime::now()));
    assert!(
        meta.serve_stale_if_error(SystemTime::now()),
        "its window still holds"
    );
    assert_eq!(fetch(storage, &key).await, Some((Tier::L1, data.clone())));
    let stats = storage.snapshot();
    assert_eq!((stats.marked_stale, stats.purged), (1, 0));
    // The disk copy was marked too: after a restart (empty L1) L2 answers, stale.
    let restarted = open(dir.path(), 8 * MIB, 64 * MIB);
    let (meta, hit) = restarted.lookup(&key, &span()).await.unwrap().unwrap();
    assert_eq!(tier_of(&hit), Some(Tier::L2));
    assert!(!meta.is_fresh(SystemTime::now()));
}

#[tokio::test]
async fn a_fill_admitted_before_a_purge_is_not_stored_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    for kind in [PurgeKind::Remove, PurgeKind::MarkStale] {
        let mut key = cache_key("h", &format!("/race-{kind:?}"));
        key.extensions
            .insert(super::super::purges::FillEpoch(storage.purge_epoch()));
        // The fill starts (its epoch is noted), the purge lands, then the body arrives.
        let meta = meta(&[]);
        let mut miss = storage
            .get_miss_handler(&key, &meta, &span())
            .await
            .unwrap();
        storage
            .purge_by(&PurgeRequest::Prefix("/race".into()), kind)
            .await;
        miss.write_body(body(100, 4), true).await.unwrap();
        miss.finish().await.unwrap();
        assert!(fetch(storage, &key).await.is_none(), "{kind:?}");
        // A fill that starts after the purge is stored.
        key.extensions
            .insert(super::super::purges::FillEpoch(storage.purge_epoch()));
        store_with(storage, &key, &meta, &body(100, 5), 100).await;
        assert!(fetch(storage, &key).await.is_some(), "{kind:?}");
    }
}
