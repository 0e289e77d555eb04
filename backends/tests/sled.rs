//! The conformance suite against `SledStore`, plus its durability, compaction and
//! corruption paths.

mod conformance;

use std::sync::Arc;

use calico_backends::{SledStore, Store, StoreError, WatchEvent};
use conformance::unique_prefix;
use tempfile::TempDir;

/// A fresh store in a temp dir (the dir must outlive the store).
fn fresh() -> (TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn crud() {
    let (_dir, store) = fresh();
    conformance::crud(&store, &unique_prefix("crud")).await;
}

#[tokio::test]
async fn revisions() {
    let (_dir, store) = fresh();
    conformance::revisions(&store, &unique_prefix("revisions")).await;
}

#[tokio::test]
async fn list_prefix() {
    let (_dir, store) = fresh();
    conformance::list_prefix(&store, &unique_prefix("list")).await;
}

#[tokio::test]
async fn txn_atomic() {
    let (_dir, store) = fresh();
    conformance::txn_atomic(&store, &unique_prefix("txn")).await;
}

#[tokio::test]
async fn watch_replay() {
    let (_dir, store) = fresh();
    conformance::watch_replay(&store, &unique_prefix("replay")).await;
}

#[tokio::test]
async fn watch_live() {
    let (_dir, store) = fresh();
    conformance::watch_live(&store, &unique_prefix("live")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_during_writes() {
    let (_dir, store) = fresh();
    conformance::watch_during_writes(Arc::new(store), &unique_prefix("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_update() {
    let (_dir, store) = fresh();
    conformance::concurrent_update(Arc::new(store), &unique_prefix("cas")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create() {
    let (_dir, store) = fresh();
    conformance::concurrent_create(Arc::new(store), &unique_prefix("create")).await;
}

#[test]
fn model_check() {
    let (_dir, store) = fresh();
    conformance::model_check(|| async { store }, 32);
}

#[tokio::test]
async fn reopened_store_keeps_keys_revision_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (r1, r2) = {
        let store = SledStore::open(&path).unwrap();
        let r1 = store.create("/a", b"one".to_vec()).await.unwrap();
        let r2 = store.update("/a", b"two".to_vec(), r1).await.unwrap();
        (r1, r2)
    };
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.revision().await, r2);
    let kv = store
        .get("/a")
        .await
        .unwrap()
        .expect("key survives a reopen");
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b"two".to_vec(), r1, r2)
    );
    let mut stream = store.watch("/", 0).await.unwrap();
    let (replay, in_sync) = conformance::collect_until_in_sync(&mut stream).await;
    assert_eq!(
        replay.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
        vec![r1, r2]
    );
    assert_eq!(in_sync, r2);
    let r3 = store.delete("/a", Some(r2)).await.unwrap();
    assert!(r3 > r2);
}

#[tokio::test]
async fn second_open_of_a_held_database_is_unavailable() {
    let (dir, _store) = fresh();
    match SledStore::open(dir.path().join("db")) {
        Err(StoreError::Unavailable { endpoint, .. }) => {
            assert!(endpoint.ends_with("db"), "{endpoint}")
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("expected Unavailable, got a second store"),
    }
}

#[tokio::test]
async fn watch_from_compacted_revision_fails_even_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut revs = Vec::new();
    {
        let store = SledStore::open(&path).unwrap();
        for i in 0..5u8 {
            revs.push(store.put(&format!("/k{i}"), vec![i]).await.unwrap());
        }
        store.compact(revs[2]).await.unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    match store.watch("/", revs[1]).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (revs[1], revs[2]))
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    let mut stream = store.watch("/", revs[2]).await.unwrap();
    let (replay, _) = conformance::collect_until_in_sync(&mut stream).await;
    assert_eq!(
        replay.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
        revs[2..].to_vec()
    );
}

#[tokio::test]
async fn corrupt_record_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = SledStore::open(&path).unwrap();
        store.put("/good", b"v".to_vec()).await.unwrap();
    }
    {
        let db = open_raw(&path);
        db.open_tree("kv")
            .unwrap()
            .insert("/bad", &[1u8, 2, 3][..])
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    for result in [
        store.get("/bad").await.map(|_| ()),
        store.list("/").await.map(|_| ()),
        store.update("/bad", vec![], 1).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "/bad"),
            other => panic!("expected Corrupt naming /bad, got {other:?}"),
        }
    }
    assert_eq!(
        store.get("/good").await.unwrap().map(|kv| kv.value),
        Some(b"v".to_vec())
    );
}

/// Opens the database with sled itself, past the moment the dropped store still holds its
/// file lock (sled's flusher thread lets go of it shortly after the last handle drops).
fn open_raw(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("sled still locked ({e}); retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("sled::open {}: {e}", path.display()),
        }
    }
}
