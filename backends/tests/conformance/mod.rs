//! The `Store` conformance suite: one set of cases every backend must pass.
//!
//! Each case is a public fn generic over the store and takes a key prefix of its own, so the
//! suite also runs against an external store whose keys outlive a case (etcd): callers pass a
//! fresh prefix per case, e.g. [`unique_prefix`]. Backend test files include this module with
//! `mod conformance;` and declare one `#[tokio::test]` per case.
//!
//! Revisions are only compared relatively (strictly increasing, equal within a transaction),
//! never as absolute numbers, because a shared store may be written by other cases meanwhile.

#![allow(dead_code)]

pub mod model;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calico_backends::{
    Compare, KeyValue, Revision, Store, StoreError, TxnOp, WatchEvent, WatchStream,
};
use futures::StreamExt;

pub use model::model_check;

/// How long a watch may stay silent before the suite reports it stalled (a hang guard, not a
/// timing assertion).
const STALL: Duration = Duration::from_secs(20);

/// A key prefix no other case or run uses: `/test/<case>/<time>-<counter>/`.
pub fn unique_prefix(case: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("/test/{case}/{nanos}-{n}/")
}

/// The next watch event, failing the test if the stream ends, errors or stalls.
pub async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(STALL, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("watch stalled for {STALL:?}"),
    }
}

/// Every event up to and including the first `InSync`, and that sync revision.
pub async fn collect_until_in_sync(stream: &mut WatchStream) -> (Vec<WatchEvent>, Revision) {
    let mut events = Vec::new();
    loop {
        match next_event(stream).await {
            WatchEvent::InSync { revision } => return (events, revision),
            event => events.push(event),
        }
    }
}

fn put_event(
    key: &str,
    value: &[u8],
    create_revision: Revision,
    mod_revision: Revision,
) -> WatchEvent {
    WatchEvent::Put(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    })
}

/// Create, get, update, put and delete, with every error and its data.
pub async fn crud<S: Store + ?Sized>(store: &S, prefix: &str) {
    let key = format!("{prefix}k");
    assert_eq!(store.get(&key).await.unwrap(), None);

    let r1 = store.create(&key, b"one".to_vec()).await.unwrap();
    assert!(r1 > 0, "first revision {r1} must be positive");
    let kv = store
        .get(&key)
        .await
        .unwrap()
        .expect("created key is readable");
    assert_eq!(
        kv,
        KeyValue {
            key: key.clone(),
            value: b"one".to_vec(),
            create_revision: r1,
            mod_revision: r1
        }
    );

    match store.create(&key, b"again".to_vec()).await {
        Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("create of an existing key: expected AlreadyExists, got {other:?}"),
    }

    let r2 = store.update(&key, b"two".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    let kv = store
        .get(&key)
        .await
        .unwrap()
        .expect("updated key is readable");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"two"[..], r1, r2)
    );

    match store.update(&key, b"stale".to_vec(), r1).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => assert_eq!((k, expected, actual), (key.clone(), r1, r2)),
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    let missing = format!("{prefix}missing");
    match store.update(&missing, b"x".to_vec(), r1).await {
        Err(StoreError::NotFound { key: k }) => assert_eq!(k, missing),
        other => panic!("update of an absent key: expected NotFound, got {other:?}"),
    }

    let r3 = store.put(&key, b"three".to_vec()).await.unwrap();
    assert!(r3 > r2);
    let kv = store.get(&key).await.unwrap().expect("put key is readable");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"three"[..], r1, r3)
    );

    let other = format!("{prefix}blind");
    let r4 = store.put(&other, b"new".to_vec()).await.unwrap();
    assert!(r4 > r3);
    let kv = store.get(&other).await.unwrap().expect("blind put creates");
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));

    match store.delete(&key, Some(r2)).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => assert_eq!((k, expected, actual), (key.clone(), r2, r3)),
        other => panic!("stale delete: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.unwrap().map(|kv| kv.mod_revision),
        Some(r3),
        "failed delete wrote"
    );

    let r5 = store.delete(&key, Some(r3)).await.unwrap();
    assert!(r5 > r4);
    assert_eq!(store.get(&key).await.unwrap(), None);
    for expected in [None, Some(r5)] {
        match store.delete(&key, expected).await {
            Err(StoreError::NotFound { key: k }) => assert_eq!(k, key),
            other => {
                panic!("delete of an absent key ({expected:?}): expected NotFound, got {other:?}")
            }
        }
    }

    let r6 = store.delete(&other, None).await.unwrap();
    assert!(r6 > r5);
    let r7 = store.create(&key, b"reborn".to_vec()).await.unwrap();
    let kv = store
        .get(&key)
        .await
        .unwrap()
        .expect("recreated key is readable");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r7, r7),
        "a recreated key has a new create revision"
    );
}

/// Every write gets a larger revision; a transaction writes all its keys at one revision.
pub async fn revisions<S: Store + ?Sized>(store: &S, prefix: &str) {
    let mut last = 0;
    for i in 0..5 {
        let rev = store.put(&format!("{prefix}k{i}"), vec![i]).await.unwrap();
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    }
    let ops = (0..3)
        .map(|i| TxnOp::Put {
            key: format!("{prefix}t{i}"),
            value: vec![i],
        })
        .collect();
    let rev = store.txn(Vec::new(), ops).await.unwrap();
    assert!(rev > last);
    for i in 0..3 {
        let kv = store
            .get(&format!("{prefix}t{i}"))
            .await
            .unwrap()
            .expect("txn key written");
        assert_eq!((kv.create_revision, kv.mod_revision), (rev, rev));
    }
    let (_, listed) = store.list(prefix).await.unwrap();
    assert!(
        listed >= rev,
        "list revision {listed} is older than the last write {rev}"
    );
    let next = store.delete(&format!("{prefix}k0"), None).await.unwrap();
    assert!(next > rev);
}

/// `list` returns exactly the keys under the prefix, sorted, whatever the write order.
pub async fn list_prefix<S: Store + ?Sized>(store: &S, prefix: &str) {
    let names = ["b/2", "a", "a/1", "ab", "b/1", "a/0", "a0", "c"];
    for name in names {
        store
            .create(&format!("{prefix}{name}"), name.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let keys = |kvs: Vec<KeyValue>| kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    let full = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("{prefix}{n}"))
            .collect::<Vec<_>>()
    };

    let (all, _) = store.list(prefix).await.unwrap();
    assert_eq!(
        keys(all),
        full(&["a", "a/0", "a/1", "a0", "ab", "b/1", "b/2", "c"])
    );
    let (under_a, _) = store.list(&format!("{prefix}a/")).await.unwrap();
    assert_eq!(keys(under_a.clone()), full(&["a/0", "a/1"]));
    assert_eq!(under_a[0].value, b"a/0");
    let (none, _) = store.list(&format!("{prefix}zz")).await.unwrap();
    assert_eq!(none, Vec::new());
    let (exact, _) = store.list(&format!("{prefix}c")).await.unwrap();
    assert_eq!(keys(exact), full(&["c"]));
}

/// A transaction whose compare fails writes nothing and names the first failing compare.
pub async fn txn_atomic<S: Store + ?Sized>(store: &S, prefix: &str) {
    let (a, b, c) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}c"),
    );
    let ra = store.create(&a, b"a".to_vec()).await.unwrap();
    let writes = |v: &[u8]| {
        vec![
            TxnOp::Put {
                key: a.clone(),
                value: v.to_vec(),
            },
            TxnOp::Put {
                key: b.clone(),
                value: v.to_vec(),
            },
            TxnOp::Delete { key: c.clone() },
        ]
    };

    let cases = [
        (vec![Compare::Absent { key: a.clone() }], (a.clone(), 0, ra)),
        (
            vec![Compare::ModRevision {
                key: a.clone(),
                revision: ra + 1000,
            }],
            (a.clone(), ra + 1000, ra),
        ),
        (
            vec![Compare::ModRevision {
                key: b.clone(),
                revision: ra,
            }],
            (b.clone(), ra, 0),
        ),
        (
            vec![
                Compare::Absent { key: b.clone() },
                Compare::Absent { key: a.clone() },
                Compare::Absent { key: c.clone() },
            ],
            (a.clone(), 0, ra),
        ),
    ];
    for (compares, want) in cases {
        match store.txn(compares.clone(), writes(b"bad")).await {
            Err(StoreError::Conflict {
                key,
                expected,
                actual,
            }) => assert_eq!((key, expected, actual), want, "{compares:?}"),
            other => {
                panic!("txn with failing compare {compares:?}: expected Conflict, got {other:?}")
            }
        }
        assert_eq!(
            store
                .get(&a)
                .await
                .unwrap()
                .map(|kv| (kv.value, kv.mod_revision)),
            Some((b"a".to_vec(), ra))
        );
        assert_eq!(store.get(&b).await.unwrap(), None);
    }

    let rc = store.create(&c, b"c".to_vec()).await.unwrap();
    let compares = vec![
        Compare::ModRevision {
            key: a.clone(),
            revision: ra,
        },
        Compare::Absent { key: b.clone() },
        Compare::ModRevision {
            key: c.clone(),
            revision: rc,
        },
    ];
    let rev = store.txn(compares, writes(b"good")).await.unwrap();
    assert!(rev > rc);
    let (kvs, _) = store.list(prefix).await.unwrap();
    let got: Vec<_> = kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision))
        .collect();
    assert_eq!(
        got,
        vec![
            (a.clone(), b"good".to_vec(), ra, rev),
            (b.clone(), b"good".to_vec(), rev, rev)
        ]
    );

    // Deleting an absent key inside a transaction is not an error.
    let rev2 = store
        .txn(
            Vec::new(),
            vec![
                TxnOp::Delete { key: c.clone() },
                TxnOp::Put {
                    key: c.clone(),
                    value: b"c2".to_vec(),
                },
            ],
        )
        .await
        .unwrap();
    assert!(rev2 > rev);
    assert_eq!(
        store.get(&c).await.unwrap().map(|kv| kv.create_revision),
        Some(rev2)
    );
}

/// Writes a mixed history under `prefix` (plus noise beside it) and returns the events a
/// watch on `prefix` must report, in order.
async fn write_history<S: Store + ?Sized>(store: &S, prefix: &str, noise: &str) -> Vec<WatchEvent> {
    let key = |n: &str| format!("{prefix}{n}");
    let mut events = Vec::new();
    let r = store.create(&key("a"), b"a1".to_vec()).await.unwrap();
    events.push(put_event(&key("a"), b"a1", r, r));
    store
        .put(&format!("{noise}x"), b"noise".to_vec())
        .await
        .unwrap();
    let ra = r;
    let r = store.put(&key("b"), b"b1".to_vec()).await.unwrap();
    events.push(put_event(&key("b"), b"b1", r, r));
    let rb = r;
    let r = store.update(&key("a"), b"a2".to_vec(), ra).await.unwrap();
    events.push(put_event(&key("a"), b"a2", ra, r));
    let r = store
        .txn(
            vec![Compare::ModRevision {
                key: key("b"),
                revision: rb,
            }],
            vec![
                TxnOp::Put {
                    key: key("c"),
                    value: b"c1".to_vec(),
                },
                TxnOp::Delete { key: key("b") },
                TxnOp::Put {
                    key: format!("{noise}y"),
                    value: b"noise".to_vec(),
                },
                TxnOp::Delete { key: key("absent") },
            ],
        )
        .await
        .unwrap();
    events.push(put_event(&key("c"), b"c1", r, r));
    events.push(WatchEvent::Delete {
        key: key("b"),
        revision: r,
    });
    let rc = r;
    store.delete(&format!("{noise}x"), None).await.unwrap();
    let r = store.delete(&key("a"), None).await.unwrap();
    events.push(WatchEvent::Delete {
        key: key("a"),
        revision: r,
    });
    let r = store.put(&key("c"), b"c2".to_vec()).await.unwrap();
    events.push(put_event(&key("c"), b"c2", rc, r));
    let r = store.create(&key("a"), b"a3".to_vec()).await.unwrap();
    events.push(put_event(&key("a"), b"a3", r, r));
    events
}

/// A watch from any revision replays exactly the history from there, then one `InSync`.
pub async fn watch_replay<S: Store + ?Sized>(store: &S, prefix: &str) {
    let watched = format!("{prefix}w/");
    let events = write_history(store, &watched, &format!("{prefix}noise/")).await;
    let first = events[0].revision();
    let last = events[events.len() - 1].revision();
    for from in (first - 1..=last + 1).chain([0]) {
        let mut stream = store.watch(&watched, from).await.unwrap();
        let (replay, in_sync) = collect_until_in_sync(&mut stream).await;
        let want: Vec<WatchEvent> = events
            .iter()
            .filter(|e| e.revision() >= from)
            .cloned()
            .collect();
        assert_eq!(replay, want, "replay from revision {from}");
        assert!(
            in_sync >= last,
            "in-sync revision {in_sync} is older than the last write {last}"
        );
    }
}

/// After `InSync` come the live writes, in order, and no second `InSync`.
pub async fn watch_live<S: Store + ?Sized>(store: &S, prefix: &str) {
    let watched = format!("{prefix}w/");
    let key = format!("{watched}live");
    let r0 = store.put(&key, b"before".to_vec()).await.unwrap();
    let (listing, listed_at) = store.list(&watched).await.unwrap();
    assert_eq!(listing.len(), 1);
    let mut stream = store.watch(&watched, listed_at + 1).await.unwrap();
    let (replay, in_sync) = collect_until_in_sync(&mut stream).await;
    assert_eq!(
        replay,
        Vec::new(),
        "watch from list revision + 1 replays nothing"
    );
    assert!(in_sync >= r0);

    let r1 = store.update(&key, b"after".to_vec(), r0).await.unwrap();
    let r2 = store.delete(&key, None).await.unwrap();
    store
        .put(&format!("{prefix}w-beside"), b"not watched".to_vec())
        .await
        .unwrap();
    let end = format!("{watched}end");
    let r3 = store.put(&end, b"sentinel".to_vec()).await.unwrap();
    let got = vec![
        next_event(&mut stream).await,
        next_event(&mut stream).await,
        next_event(&mut stream).await,
    ];
    assert_eq!(
        got,
        vec![
            put_event(&key, b"after", r0, r1),
            WatchEvent::Delete {
                key: key.clone(),
                revision: r2
            },
            put_event(&end, b"sentinel", r3, r3),
        ]
    );
}

/// A watch that starts while a writer is busy sees every write exactly once, in order, with
/// exactly one `InSync` somewhere in between (the replay/subscribe race).
pub async fn watch_during_writes<S: Store + ?Sized + 'static>(store: Arc<S>, prefix: &str) {
    const WRITES: usize = 60;
    let key = |i: usize| format!("{prefix}k{:03}", i % 7);
    let writer = {
        let store = Arc::clone(&store);
        let keys: Vec<String> = (0..WRITES).map(key).collect();
        tokio::spawn(async move {
            let mut revs = Vec::new();
            for (i, k) in keys.into_iter().enumerate() {
                revs.push(store.put(&k, i.to_string().into_bytes()).await.unwrap());
                tokio::task::yield_now().await;
            }
            revs
        })
    };
    // Start watching once the writer is under way.
    loop {
        let (kvs, _) = store.list(prefix).await.unwrap();
        if kvs.len() >= 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut stream = store.watch(prefix, 1).await.unwrap();
    let mut seen = Vec::new();
    let mut syncs = 0;
    while seen.len() < WRITES {
        match next_event(&mut stream).await {
            WatchEvent::InSync { .. } => syncs += 1,
            WatchEvent::Put(kv) => seen.push((kv.key, kv.value, kv.mod_revision)),
            WatchEvent::Delete { key, .. } => panic!("unexpected delete of {key}"),
        }
    }
    let revs = writer.await.unwrap();
    if syncs == 0 {
        assert!(matches!(
            next_event(&mut stream).await,
            WatchEvent::InSync { .. }
        ));
        syncs = 1;
    }
    assert_eq!(syncs, 1, "exactly one InSync");
    let want: Vec<_> = (0..WRITES)
        .map(|i| (key(i), i.to_string().into_bytes(), revs[i]))
        .collect();
    assert_eq!(seen, want);
}

/// Racing `update`s with the same expected revision: exactly one wins, the rest conflict.
pub async fn concurrent_update<S: Store + ?Sized + 'static>(store: Arc<S>, prefix: &str) {
    const RACERS: usize = 8;
    let key = format!("{prefix}contended");
    let base = store.create(&key, b"base".to_vec()).await.unwrap();
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move { (i, store.update(&key, vec![i as u8], base).await) })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(rev)) => winners.push((i, rev)),
            (
                _,
                Err(StoreError::Conflict {
                    key: k,
                    expected,
                    actual,
                }),
            ) => losers.push((k, expected, actual)),
            (i, Err(e)) => panic!("racer {i}: expected Ok or Conflict, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer wins: {winners:?}");
    let (winner, rev) = winners[0];
    assert_eq!(losers, vec![(key.clone(), base, rev); RACERS - 1]);
    let kv = store
        .get(&key)
        .await
        .unwrap()
        .expect("contended key exists");
    assert_eq!((kv.value, kv.mod_revision), (vec![winner as u8], rev));
}

/// Racing `create`s of one key: exactly one succeeds, the rest get `AlreadyExists`.
pub async fn concurrent_create<S: Store + ?Sized + 'static>(store: Arc<S>, prefix: &str) {
    const RACERS: usize = 8;
    let key = format!("{prefix}first");
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move { store.create(&key, vec![i as u8]).await })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
            Err(e) => panic!("expected Ok or AlreadyExists, got {e}"),
        }
    }
    assert_eq!(wins, 1);
}
