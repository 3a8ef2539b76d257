//! Integrity: every damaged or unfinished disk entry is detected and never served.

use super::*;

#[tokio::test]
async fn a_flipped_byte_anywhere_is_detected_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    // No L1, so every read goes to disk.
    let storage = open(dir.path(), 0, 64 * MIB);
    let data = body(20_000, 3);
    let file_len = {
        let key = cache_key("h", "/c/p"); // same URL length as the keys below
        store(storage, &key, &data).await;
        std::fs::metadata(entry_path(dir.path(), &key))
            .unwrap()
            .len()
    };
    // Magic, key hash, lengths, header checksum, URL, meta, body start/end, chunk table.
    let spots = [
        0,
        20,
        40,
        53,
        60,
        120,
        file_len / 2,
        file_len - 5,
        file_len - 1,
    ];
    for (n, at) in spots.iter().enumerate() {
        let key = cache_key("h", &format!("/c/{n}"));
        store(storage, &key, &data).await;
        let path = entry_path(dir.path(), &key);
        flip_byte(&path, *at);
        assert_eq!(
            fetch(storage, &key).await,
            None,
            "byte {at} flipped was served"
        );
        assert!(
            !path.exists(),
            "damaged entry for byte {at} was not deleted"
        );
    }
    assert_eq!(storage.snapshot().corrupt_entries, spots.len() as u64);
    // Fetched again after deletion: a plain miss, not counted twice.
    assert_eq!(fetch(storage, &cache_key("h", "/c/0")).await, None);
    assert_eq!(storage.snapshot().corrupt_entries, spots.len() as u64);
}

#[tokio::test]
async fn truncated_entries_are_detected_on_read_and_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 0, 64 * MIB);
    let (a, b) = (cache_key("h", "/t/a"), cache_key("h", "/t/b"));
    store(storage, &a, &body(30_000, 1)).await;
    store(storage, &b, &body(30_000, 2)).await;
    for key in [&a, &b] {
        let path = entry_path(dir.path(), key);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(file.metadata().unwrap().len() - 100).unwrap();
    }
    assert_eq!(fetch(storage, &a).await, None);
    assert_eq!(storage.snapshot().corrupt_entries, 1);
    // `b` is found damaged by the restart's scan, before anyone asks for it.
    let restarted = open(dir.path(), 0, 64 * MIB);
    let stats = restarted.snapshot();
    assert_eq!((stats.l2.objects, stats.corrupt_entries), (0, 1));
    assert!(!entry_path(dir.path(), &b).exists());
    assert_eq!(fetch(restarted, &b).await, None);
}

#[tokio::test]
async fn unfinished_writes_leave_nothing_servable() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 8 * MIB, 64 * MIB);
    let key = cache_key("h", "/abandoned");
    let mut miss = storage
        .get_miss_handler(&key, &meta(&[]), &span())
        .await
        .unwrap();
    miss.write_body(body(3 * CHUNK_SIZE, 1), false)
        .await
        .unwrap();
    drop(miss); // the upstream failed mid-body
    assert_eq!(fetch(storage, &key).await, None);
    // A crash mid-write leaves a temp file: cleaned at start, never indexed.
    let stray = dir
        .path()
        .join("cache/ab/abababababababababababababababab.1.2.tmp");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"half an entry").unwrap();
    let restarted = open(dir.path(), 8 * MIB, 64 * MIB);
    assert!(!stray.exists());
    assert_eq!(restarted.snapshot().l2.objects, 0);
    let leftovers: Vec<_> = walk(&dir.path().join("cache"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_corrupt_chunk_in_a_large_object_fails_the_read_before_it_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), 0, 64 * MIB);
    let key = cache_key("h", "/big-bad.bin");
    let data = body(4 * MIB as usize, 9);
    store(storage, &key, &data).await;
    let path = entry_path(dir.path(), &key);
    // Damage the body 3 MiB in (the header does not cover the body, so lookup still succeeds).
    let body_offset = std::fs::metadata(&path).unwrap().len() - data.len() as u64 - 16 * 4;
    flip_byte(&path, body_offset + 3 * MIB + 17);

    let (_meta, mut hit) = storage.lookup(&key, &span()).await.unwrap().unwrap();
    let mut served = Vec::new();
    let error = loop {
        match hit.read_body().await {
            Ok(Some(chunk)) => served.extend_from_slice(&chunk),
            Ok(None) => panic!("corrupt object read to the end"),
            Err(e) => break e,
        }
    };
    assert!(error.to_string().contains("checksum"), "{error}");
    assert_eq!(
        served.len() as u64,
        3 * MIB,
        "only the verified chunks before the damage"
    );
    assert_eq!(served, data[..served.len()].to_vec());
    assert!(!path.exists());
    assert_eq!(fetch(storage, &key).await, None);
    assert_eq!(storage.snapshot().corrupt_entries, 1);
}
