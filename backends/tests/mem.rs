//! The conformance suite against `MemStore`, plus its compaction path.

mod conformance;

use std::sync::Arc;

use calico_backends::{MemStore, Store, StoreError, WatchEvent};
use conformance::unique_prefix;

#[tokio::test]
async fn crud() {
    conformance::crud(&MemStore::new(), &unique_prefix("crud")).await;
}

#[tokio::test]
async fn revisions() {
    conformance::revisions(&MemStore::new(), &unique_prefix("revisions")).await;
}

#[tokio::test]
async fn list_prefix() {
    conformance::list_prefix(&MemStore::new(), &unique_prefix("list")).await;
}

#[tokio::test]
async fn txn_atomic() {
    conformance::txn_atomic(&MemStore::new(), &unique_prefix("txn")).await;
}

#[tokio::test]
async fn watch_replay() {
    conformance::watch_replay(&MemStore::new(), &unique_prefix("replay")).await;
}

#[tokio::test]
async fn watch_live() {
    conformance::watch_live(&MemStore::new(), &unique_prefix("live")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_during_writes() {
    conformance::watch_during_writes(Arc::new(MemStore::new()), &unique_prefix("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_update() {
    conformance::concurrent_update(Arc::new(MemStore::new()), &unique_prefix("cas")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create() {
    conformance::concurrent_create(Arc::new(MemStore::new()), &unique_prefix("create")).await;
}

#[test]
fn model_check() {
    conformance::model_check(|| async { MemStore::new() }, 64);
}

#[tokio::test]
async fn watch_from_compacted_revision_fails_and_later_ones_replay() {
    let store = MemStore::new();
    let mut revs = Vec::new();
    for i in 0..5u8 {
        revs.push(store.put(&format!("/k{i}"), vec![i]).await.unwrap());
    }
    store.compact(revs[2]);
    for from in [0, 1, revs[1]] {
        match store.watch("/", from).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (from, revs[2]))
            }
            Err(e) => panic!("watch from {from}: expected Compacted, got {e}"),
            Ok(_) => panic!("watch from {from}: expected Compacted, got a stream"),
        }
    }
    let mut stream = store.watch("/", revs[2]).await.unwrap();
    let (replay, in_sync) = conformance::collect_until_in_sync(&mut stream).await;
    let replayed: Vec<_> = replay.iter().map(WatchEvent::revision).collect();
    assert_eq!(replayed, revs[2..].to_vec());
    assert_eq!(in_sync, revs[4]);
}

#[tokio::test]
async fn dropped_watch_is_forgotten() {
    let store = MemStore::new();
    let stream = store.watch("/", 0).await.unwrap();
    assert_eq!(store.watcher_count(), 1);
    drop(stream);
    store.put("/k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.watcher_count(), 0);
}

#[tokio::test]
async fn a_txn_without_effective_writes_keeps_the_revision() {
    let store = MemStore::new();
    let r = store.put("/a", b"v".to_vec()).await.unwrap();
    let same = store
        .txn(
            Vec::new(),
            vec![calico_backends::TxnOp::Delete {
                key: "/absent".into(),
            }],
        )
        .await
        .unwrap();
    assert_eq!((same, store.revision()), (r, r));
}
