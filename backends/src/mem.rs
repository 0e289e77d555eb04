//! `MemStore`: the in-memory reference implementation of [`Store`].
//!
//! Everything lives behind one mutex: the keys, the global revision, the full event history
//! (for watch replay) and the live watchers. Every write happens under the lock and feeds the
//! watchers before it is released, so the history, the watchers and the revision always agree.
//! `compact` drops old history so the `Compacted` path can be exercised.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::watch_hub::{event_key, WatchHub};
use crate::{Compare, KeyValue, Revision, Store, StoreError, TxnOp, WatchEvent, WatchStream};

/// The in-memory store; clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    revision: Revision,
    keys: BTreeMap<String, KeyValue>,
    /// Every event since `oldest`, in revision order.
    history: Vec<WatchEvent>,
    /// The oldest revision a watch can still replay from (0 before any compaction).
    oldest: Revision,
    hub: WatchHub,
}

impl MemStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store's current revision (that of the last write).
    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Forgets the history before `revision`, like etcd's compaction: a later watch from an
    /// older revision fails with `Compacted`. Live watches are unaffected.
    pub fn compact(&self, revision: Revision) {
        let mut inner = self.lock();
        let revision = revision.min(inner.revision + 1);
        if revision <= inner.oldest {
            return;
        }
        let cut = inner.history.partition_point(|e| e.revision() < revision);
        inner.history.drain(..cut);
        inner.oldest = revision;
    }

    /// Number of live watchers (dropped watches are forgotten at the next write).
    pub fn watcher_count(&self) -> usize {
        self.lock().hub.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing under the lock can panic halfway through a write, so a poisoned lock still
        // holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn mod_revision(&self, key: &str) -> Revision {
        self.keys.get(key).map_or(0, |kv| kv.mod_revision)
    }

    /// Applies `ops` at a new revision, records and publishes their events. Deletes of absent
    /// keys are no-ops; a commit that changes nothing keeps the current revision (etcd does
    /// the same for a transaction without effective writes).
    fn commit(&mut self, ops: Vec<TxnOp>) -> Revision {
        let revision = self.revision + 1;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    let create_revision = self
                        .keys
                        .get(&key)
                        .map_or(revision, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                    };
                    self.keys.insert(key, kv.clone());
                    events.push(WatchEvent::Put(kv));
                }
                TxnOp::Delete { key } => {
                    if self.keys.remove(&key).is_some() {
                        events.push(WatchEvent::Delete { key, revision });
                    }
                }
            }
        }
        if events.is_empty() {
            return self.revision;
        }
        self.revision = revision;
        self.hub.publish(&events);
        self.history.extend(events);
        revision
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().keys.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let inner = self.lock();
        let kvs = inner
            .keys
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((kvs, inner.revision))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let mut inner = self.lock();
        if inner.keys.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(inner.commit(vec![TxnOp::Put {
            key: key.to_owned(),
            value,
        }]))
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let mut inner = self.lock();
        check_mod_revision(&inner, key, expected)?;
        Ok(inner.commit(vec![TxnOp::Put {
            key: key.to_owned(),
            value,
        }]))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        Ok(self.lock().commit(vec![TxnOp::Put {
            key: key.to_owned(),
            value,
        }]))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let mut inner = self.lock();
        match expected {
            Some(expected) => check_mod_revision(&inner, key, expected)?,
            None if !inner.keys.contains_key(key) => {
                return Err(StoreError::NotFound {
                    key: key.to_owned(),
                })
            }
            None => {}
        }
        Ok(inner.commit(vec![TxnOp::Delete {
            key: key.to_owned(),
        }]))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError> {
        let mut inner = self.lock();
        for compare in &compares {
            let (key, expected) = match compare {
                Compare::Absent { key } => (key, 0),
                Compare::ModRevision { key, revision } => (key, *revision),
            };
            let actual = inner.mod_revision(key);
            if actual != expected {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected,
                    actual,
                });
            }
        }
        Ok(inner.commit(ops))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let mut inner = self.lock();
        let from = from_revision.max(1);
        if from < inner.oldest {
            return Err(StoreError::Compacted {
                requested: from_revision,
                oldest: inner.oldest,
            });
        }
        let start = inner.history.partition_point(|e| e.revision() < from);
        let replay: Vec<WatchEvent> = inner.history[start..]
            .iter()
            .filter(|e| event_key(e).is_some_and(|k| k.starts_with(prefix)))
            .cloned()
            .collect();
        let in_sync = inner.revision;
        Ok(inner.hub.subscribe(prefix, from, replay, in_sync))
    }
}

/// `update`/`delete` precondition: the key exists with exactly `expected` as mod revision.
fn check_mod_revision(inner: &Inner, key: &str, expected: Revision) -> Result<(), StoreError> {
    match inner.keys.get(key) {
        None => Err(StoreError::NotFound {
            key: key.to_owned(),
        }),
        Some(kv) if kv.mod_revision != expected => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual: kv.mod_revision,
        }),
        Some(_) => Ok(()),
    }
}
