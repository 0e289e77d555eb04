//! `EtcdStore` against a real etcd the tests start themselves (see `support/etcd_server.rs`):
//! the shared conformance suite, unreachable endpoints, a server restart under a watch,
//! compaction, and a 20,000-key listing. Skips when etcd is not installed (fails under `CI`).

mod conformance;
#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use calico_backends::{EtcdConfig, EtcdStore, Store, StoreError, TxnOp, WatchEvent, WatchStream};
use conformance::unique_prefix;
use etcd_server::EtcdServer;
use futures::StreamExt;

/// A hang guard for waits on etcd (not a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

async fn connect(endpoint: &str) -> EtcdStore {
    let config = EtcdConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..EtcdConfig::new(vec![endpoint.to_string()])
    };
    EtcdStore::connect(config).await.unwrap()
}

/// The next watch item, failing the test if the watch ends or stalls.
async fn next_item(stream: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("watch stalled for {PATIENCE:?}"),
    }
}

/// Retries `create` until etcd answers; a create that landed before its answer was lost shows
/// up as `AlreadyExists` on the retry and counts as done.
async fn create_eventually(store: &EtcdStore, key: &str, value: Vec<u8>) {
    for _ in 0..100 {
        match store.create(key, value.clone()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => return,
            Err(StoreError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("creating {key}: {e}"),
        }
    }
    panic!("creating {key}: etcd never came back");
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_and_named() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = EtcdConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..EtcdConfig::new(vec![endpoint.clone()])
    };
    let result = tokio::time::timeout(PATIENCE, EtcdStore::connect(config))
        .await
        .expect("connect hung");
    match result {
        Err(StoreError::Unavailable {
            endpoint: named,
            reason,
        }) => {
            assert_eq!(named, endpoint);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // An address that never answers (TEST-NET-1): the connect timeout bounds the wait.
    let config = EtcdConfig {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..EtcdConfig::new(vec!["http://192.0.2.1:2379".to_string()])
    };
    let result = tokio::time::timeout(PATIENCE, EtcdStore::connect(config))
        .await
        .expect("connect hung");
    assert!(
        matches!(&result, Err(StoreError::Unavailable { endpoint, .. }) if endpoint == "http://192.0.2.1:2379"),
        "expected Unavailable naming the endpoint, got {result:?}"
    );
}

#[tokio::test]
async fn calls_fail_while_etcd_is_down_and_succeed_after_restart() {
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let store = connect(&server.endpoint()).await;
    let before = store.put("/restart/a", b"1".to_vec()).await.unwrap();
    server.stop();
    match store.put("/restart/b", b"2".to_vec()).await {
        Err(StoreError::Unavailable { endpoint, .. }) => assert_eq!(endpoint, server.endpoint()),
        other => panic!("expected Unavailable while etcd is down, got {other:?}"),
    }
    server.restart().await;
    create_eventually(&store, "/restart/c", b"3".to_vec()).await;
    let kv = store
        .get("/restart/a")
        .await
        .unwrap()
        .expect("data survives the restart");
    assert_eq!((kv.value, kv.mod_revision), (b"1".to_vec(), before));
    assert!(store.get("/restart/c").await.unwrap().is_some());
}

#[tokio::test]
async fn watch_resumes_across_a_restart_without_loss_or_repeat() {
    const BEFORE: usize = 100;
    const AFTER: usize = 100;
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let store = connect(&server.endpoint()).await;
    let prefix = "/seq/";
    let (_, listed_at) = store.list(prefix).await.unwrap();
    let mut stream = store.watch(prefix, listed_at + 1).await.unwrap();
    assert_eq!(
        next_item(&mut stream).await.unwrap(),
        WatchEvent::InSync {
            revision: listed_at
        }
    );
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < BEFORE + AFTER {
            match next_item(&mut stream).await.unwrap() {
                WatchEvent::Put(kv) => seen.push(String::from_utf8(kv.value).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        seen
    });
    let key = |i: usize| format!("{prefix}{i:05}");
    for i in 0..BEFORE {
        store
            .create(&key(i), i.to_string().into_bytes())
            .await
            .unwrap();
    }
    server.stop();
    server.restart().await;
    for i in BEFORE..BEFORE + AFTER {
        create_eventually(&store, &key(i), i.to_string().into_bytes()).await;
    }
    let seen = tokio::time::timeout(PATIENCE, watcher)
        .await
        .expect("watcher hung")
        .unwrap();
    let want: Vec<String> = (0..BEFORE + AFTER).map(|i| i.to_string()).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn watch_from_a_compacted_revision_reports_it_and_a_fresh_listing_resyncs() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let store = connect(&server.endpoint()).await;
    let prefix = "/compact/";
    let mut want = BTreeMap::new();
    for i in 0..10 {
        let key = format!("{prefix}{i}");
        store.put(&key, b"old".to_vec()).await.unwrap();
        want.insert(key, b"old".to_vec());
    }
    let (_, seen_at) = store.list(prefix).await.unwrap();
    for i in 0..5 {
        let key = format!("{prefix}{i}");
        store.put(&key, b"new".to_vec()).await.unwrap();
        want.insert(key, b"new".to_vec());
    }
    store.delete(&format!("{prefix}9"), None).await.unwrap();
    want.remove(&format!("{prefix}9"));
    let compacted_to = store.put("/elsewhere", b"x".to_vec()).await.unwrap();
    store
        .client()
        .clone()
        .compact(compacted_to, None)
        .await
        .unwrap();

    match store.watch(prefix, seen_at + 1).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (seen_at + 1, compacted_to));
        }
        Ok(_) => panic!("watch from a compacted revision succeeded"),
        Err(e) => panic!("expected Compacted, got {e}"),
    }

    // Resync: a fresh listing, then a watch from just after it.
    let (listing, listed_at) = store.list(prefix).await.unwrap();
    let mut state: BTreeMap<String, Vec<u8>> =
        listing.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let mut stream = store.watch(prefix, listed_at + 1).await.unwrap();
    assert_eq!(
        next_item(&mut stream).await.unwrap(),
        WatchEvent::InSync {
            revision: listed_at
        }
    );
    store
        .put(&format!("{prefix}late"), b"late".to_vec())
        .await
        .unwrap();
    want.insert(format!("{prefix}late"), b"late".to_vec());
    match next_item(&mut stream).await.unwrap() {
        WatchEvent::Put(kv) => {
            state.insert(kv.key, kv.value);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(state, want);
}

#[tokio::test]
async fn watch_resuming_into_compacted_history_ends_with_compacted() {
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let store = connect(&server.endpoint()).await;
    let prefix = "/gone/";
    let first = store
        .put(&format!("{prefix}a"), b"1".to_vec())
        .await
        .unwrap();
    let mut stream = store.watch(prefix, first).await.unwrap();
    assert!(matches!(
        next_item(&mut stream).await.unwrap(),
        WatchEvent::Put(_)
    ));
    assert_eq!(
        next_item(&mut stream).await.unwrap(),
        WatchEvent::InSync { revision: first }
    );

    // While the watcher cannot reach etcd, history it has not seen is written and compacted.
    let hidden = server.restart_hidden().await;
    let behind = connect(&hidden).await;
    behind
        .put(&format!("{prefix}b"), b"2".to_vec())
        .await
        .unwrap();
    let compacted_to = behind.put("/elsewhere", b"x".to_vec()).await.unwrap();
    behind
        .client()
        .clone()
        .compact(compacted_to, None)
        .await
        .unwrap();
    server.restart().await;

    match next_item(&mut stream).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (first + 1, compacted_to));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let end = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("stream did not end");
    assert!(end.is_none(), "the stream ends after Compacted");
}

#[tokio::test]
async fn lists_twenty_thousand_keys_in_one_call() {
    const KEYS: usize = 20_000;
    const PER_TXN: usize = 100; // etcd's default --max-txn-ops is 128
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let store = Arc::new(connect(&server.endpoint()).await);
    let prefix = "/big/";
    let value = vec![b'v'; 300];
    let batches: Vec<_> = (0..KEYS / PER_TXN)
        .map(|b| {
            let ops: Vec<TxnOp> = (b * PER_TXN..(b + 1) * PER_TXN)
                .map(|i| TxnOp::Put {
                    key: format!("{prefix}{i:06}"),
                    value: value.clone(),
                })
                .collect();
            let store = Arc::clone(&store);
            async move { store.txn(Vec::new(), ops).await }
        })
        .collect();
    let results: Vec<_> = futures::stream::iter(batches)
        .buffer_unordered(16)
        .collect()
        .await;
    for result in results {
        result.unwrap();
    }
    let last_write = store.put("/after-big", b"x".to_vec()).await.unwrap();
    store
        .put(&format!("{prefix}{:06}", 0), b"changed later".to_vec())
        .await
        .unwrap();
    let (listing, revision) = store.list(prefix).await.unwrap();
    assert_eq!(listing.len(), KEYS);
    assert!(revision > last_write);
    let keys: Vec<String> = listing.iter().map(|kv| kv.key.clone()).collect();
    let want: Vec<String> = (0..KEYS).map(|i| format!("{prefix}{i:06}")).collect();
    assert_eq!(keys, want);
    assert_eq!(listing[0].value, b"changed later".to_vec());
    assert!(listing[1..]
        .iter()
        .all(|kv| kv.value == value && kv.mod_revision <= revision));
}

// The shared conformance suite, one etcd per case (a case never sees another's writes).

#[tokio::test]
async fn conformance_crud() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    conformance::crud(&connect(&server.endpoint()).await, &unique_prefix("crud")).await;
}

#[tokio::test]
async fn conformance_revisions() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    conformance::revisions(
        &connect(&server.endpoint()).await,
        &unique_prefix("revisions"),
    )
    .await;
}

#[tokio::test]
async fn conformance_list_prefix() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    conformance::list_prefix(&connect(&server.endpoint()).await, &unique_prefix("list")).await;
}

#[tokio::test]
async fn conformance_txn_atomic() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    conformance::txn_atomic(&connect(&server.endpoint()).await, &unique_prefix("txn")).await;
}

#[tokio::test]
async fn conformance_watch_replay() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    conformance::watch_replay(&connect(&server.endpoint()).await, &unique_prefix("replay")).await;
}

#[tokio::test]
async fn conformance_watch_live() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    conformance::watch_live(&connect(&server.endpoint()).await, &unique_prefix("live")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_watch_during_writes() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let store = Arc::new(connect(&server.endpoint()).await);
    conformance::watch_during_writes(store, &unique_prefix("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_concurrent_update() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let store = Arc::new(connect(&server.endpoint()).await);
    conformance::concurrent_update(store, &unique_prefix("cas")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_concurrent_create() {
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let store = Arc::new(connect(&server.endpoint()).await);
    conformance::concurrent_create(store, &unique_prefix("create")).await;
}

#[test]
fn conformance_model_check() {
    let starter = tokio::runtime::Runtime::new().unwrap();
    let Some(server) = starter.block_on(EtcdServer::start()) else {
        return;
    };
    let endpoint = server.endpoint();
    conformance::model_check(|| async move { connect(&endpoint).await }, 32);
    drop(server);
}

/// An idle watch on a healthy etcd must never break: our HTTP/2 keepalive pings once stayed
/// under etcd's `--grpc-keepalive-min-time` (5 s) and etcd answered with GOAWAY
/// `too_many_pings` about every 12 s. Two minutes cover ten such cycles.
#[tokio::test]
async fn an_idle_watch_holds_for_two_minutes_without_reconnecting() {
    const HOLD: Duration = Duration::from_secs(120);
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let store = connect(&server.endpoint()).await;
    let prefix = unique_prefix("idle");
    let (_, listed_at) = store.list(&prefix).await.unwrap();
    let mut stream = store.watch(&prefix, listed_at + 1).await.unwrap();
    assert!(matches!(
        next_item(&mut stream).await.unwrap(),
        WatchEvent::InSync { .. }
    ));
    tokio::time::sleep(HOLD).await;
    let key = format!("{prefix}after");
    store.create(&key, b"1".to_vec()).await.unwrap();
    match next_item(&mut stream).await.unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.key, key),
        other => panic!("expected the put of {key}, got {other:?}"),
    }
    assert_eq!(store.watch_interruptions(), 0, "the idle watch reconnected");
}
