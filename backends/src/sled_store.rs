//! `SledStore`: the embedded, durable [`Store`] for one machine (and the simulator).
//!
//! Three sled trees (layout in [`codec`]): `kv` holds each key's value and revisions,
//! `history` every committed event keyed by big-endian revision (so a restarted process can
//! still replay a watch), `meta` the global revision counter and the compaction point. Every
//! write is one sled transaction over the three trees, serialised by an in-process writer lock
//! and acknowledged only after `flush_async()`: a crash loses nothing acknowledged. Watchers
//! are fed in-process after each commit (sled allows one process per database).

mod codec;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use tokio::sync::Mutex;

use crate::watch_hub::{event_key, WatchHub};
use crate::{Compare, KeyValue, Revision, Store, StoreError, TxnOp, WatchEvent, WatchStream};

const META_REVISION: &str = "revision";
const META_OLDEST: &str = "oldest";

/// A durable store in a sled database directory; clones share the same database.
#[derive(Debug, Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    db: sled::Db,
    kv: Tree,
    history: Tree,
    meta: Tree,
    /// Held across every commit (including its flush and publish), every listing and every
    /// watch start, so revisions, history and watchers stay in step.
    writer: Mutex<WriterState>,
}

#[derive(Debug)]
struct WriterState {
    revision: Revision,
    /// The oldest revision the history still holds (0 when never compacted).
    oldest: Revision,
    hub: WatchHub,
}

/// What a write checks inside its transaction before applying its ops.
type Check<'a> = dyn Fn(&TransactionalTree) -> Result<(), ConflictableTransactionError<StoreError>>
    + Send
    + Sync
    + 'a;

impl SledStore {
    /// Opens (or creates) the database at `path`.
    ///
    /// # Errors
    /// `Unavailable` when sled cannot open it (e.g. another process holds it), `Corrupt` when
    /// its revision counter is unreadable.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = sled::open(&path).map_err(|e| sled_error(&path, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| sled_error(&path, e));
        let (kv, history, meta) = (tree("kv")?, tree("history")?, tree("meta")?);
        let read_meta = |name: &str| -> Result<Revision, StoreError> {
            match meta.get(name).map_err(|e| sled_error(&path, e))? {
                Some(bytes) => codec::decode_revision(&format!("meta/{name}"), &bytes),
                None => Ok(0),
            }
        };
        let state = WriterState {
            revision: read_meta(META_REVISION)?,
            oldest: read_meta(META_OLDEST)?,
            hub: WatchHub::default(),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                db,
                kv,
                history,
                meta,
                writer: Mutex::new(state),
            }),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The store's current revision (that of the last write).
    pub async fn revision(&self) -> Revision {
        self.shared.writer.lock().await.revision
    }

    /// Deletes the history before `revision`, like etcd's compaction: a later watch from an
    /// older revision fails with `Compacted`. Live watches are unaffected.
    ///
    /// # Errors
    /// `Unavailable` when sled fails.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.shared.writer.lock().await;
        let revision = revision.min(state.revision + 1);
        if revision <= state.oldest {
            return Ok(());
        }
        let s = &self.shared;
        s.meta
            .insert(META_OLDEST, &codec::encode_revision(revision))
            .map_err(|e| sled_error(&s.path, e))?;
        s.db.flush_async()
            .await
            .map_err(|e| sled_error(&s.path, e))?;
        state.oldest = revision;
        for entry in s.history.range(..codec::history_key(revision, 0)) {
            let (key, _) = entry.map_err(|e| sled_error(&s.path, e))?;
            s.history.remove(key).map_err(|e| sled_error(&s.path, e))?;
        }
        s.db.flush_async()
            .await
            .map_err(|e| sled_error(&s.path, e))?;
        Ok(())
    }

    /// Runs `check`, then applies `ops` at the next revision, in one sled transaction; then
    /// flushes, publishes the events and returns the revision. A commit that changes nothing
    /// (only deletes of absent keys) keeps the current revision, as etcd does.
    async fn commit(&self, check: &Check<'_>, ops: &[TxnOp]) -> Result<Revision, StoreError> {
        let s = &self.shared;
        let mut state = s.writer.lock().await;
        let revision = state.revision + 1;
        let result = (&s.kv, &s.history, &s.meta).transaction(|(kv, history, meta)| {
            check(kv)?;
            let mut events = Vec::with_capacity(ops.len());
            for op in ops {
                match op {
                    TxnOp::Put { key, value } => {
                        let create_revision = match kv.get(key.as_bytes())? {
                            Some(old) => {
                                codec::decode_record(key, &old)
                                    .map_err(ConflictableTransactionError::Abort)?
                                    .create_revision
                            }
                            None => revision,
                        };
                        kv.insert(
                            key.as_bytes(),
                            codec::encode_record(create_revision, revision, value),
                        )?;
                        events.push(WatchEvent::Put(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision,
                            mod_revision: revision,
                        }));
                    }
                    TxnOp::Delete { key } => {
                        if kv.remove(key.as_bytes())?.is_some() {
                            events.push(WatchEvent::Delete {
                                key: key.clone(),
                                revision,
                            });
                        }
                    }
                }
            }
            if !events.is_empty() {
                for (index, event) in (0u32..).zip(&events) {
                    history.insert(
                        &codec::history_key(revision, index),
                        codec::encode_event(event),
                    )?;
                }
                meta.insert(META_REVISION, &codec::encode_revision(revision))?;
            }
            Ok(events)
        });
        let events = match result {
            Ok(events) => events,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(sled_error(&s.path, e)),
        };
        if events.is_empty() {
            return Ok(state.revision);
        }
        // The commit is in sled's memory now: keep the counter and watchers in step with it
        // even if the flush fails, but only acknowledge a durable write.
        state.revision = revision;
        let flushed = s.db.flush_async().await;
        state.hub.publish(&events);
        flushed.map_err(|e| sled_error(&s.path, e))?;
        Ok(revision)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let s = &self.shared;
        match s
            .kv
            .get(key.as_bytes())
            .map_err(|e| sled_error(&s.path, e))?
        {
            Some(bytes) => codec::decode_record(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let s = &self.shared;
        let state = s.writer.lock().await;
        let mut kvs = Vec::new();
        for entry in s.kv.scan_prefix(prefix.as_bytes()) {
            let (key, bytes) = entry.map_err(|e| sled_error(&s.path, e))?;
            kvs.push(codec::decode_record(&codec::decode_key(&key)?, &bytes)?);
        }
        Ok((kvs, state.revision))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let check = |kv: &TransactionalTree| match kv.get(key.as_bytes())? {
            Some(_) => Err(abort(StoreError::AlreadyExists {
                key: key.to_owned(),
            })),
            None => Ok(()),
        };
        self.commit(
            &check,
            &[TxnOp::Put {
                key: key.to_owned(),
                value,
            }],
        )
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let check = |kv: &TransactionalTree| check_mod_revision(kv, key, expected);
        self.commit(
            &check,
            &[TxnOp::Put {
                key: key.to_owned(),
                value,
            }],
        )
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.commit(
            &|_| Ok(()),
            &[TxnOp::Put {
                key: key.to_owned(),
                value,
            }],
        )
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let check = |kv: &TransactionalTree| match expected {
            Some(expected) => check_mod_revision(kv, key, expected),
            None => match kv.get(key.as_bytes())? {
                Some(_) => Ok(()),
                None => Err(abort(StoreError::NotFound {
                    key: key.to_owned(),
                })),
            },
        };
        self.commit(
            &check,
            &[TxnOp::Delete {
                key: key.to_owned(),
            }],
        )
        .await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError> {
        let check = |kv: &TransactionalTree| {
            for compare in &compares {
                let (key, expected) = match compare {
                    Compare::Absent { key } => (key, 0),
                    Compare::ModRevision { key, revision } => (key, *revision),
                };
                let actual = match kv.get(key.as_bytes())? {
                    Some(bytes) => codec::decode_mod_revision(key, &bytes).map_err(abort)?,
                    None => 0,
                };
                if actual != expected {
                    return Err(abort(StoreError::Conflict {
                        key: key.clone(),
                        expected,
                        actual,
                    }));
                }
            }
            Ok(())
        };
        self.commit(&check, &ops).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let s = &self.shared;
        let mut state = s.writer.lock().await;
        let from = from_revision.max(1);
        if from < state.oldest {
            return Err(StoreError::Compacted {
                requested: from_revision,
                oldest: state.oldest,
            });
        }
        let mut replay = Vec::new();
        for entry in s.history.range(codec::history_key(from, 0)..) {
            let (key, bytes) = entry.map_err(|e| sled_error(&s.path, e))?;
            let event = codec::decode_event(&key, &bytes)?;
            if event_key(&event).is_some_and(|k| k.starts_with(prefix)) {
                replay.push(event);
            }
        }
        let in_sync = state.revision;
        Ok(state.hub.subscribe(prefix, from, replay, in_sync))
    }
}

/// `update`/`delete` precondition inside a transaction: the key exists with `expected` as
/// its mod revision.
fn check_mod_revision(
    kv: &TransactionalTree,
    key: &str,
    expected: Revision,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let Some(bytes) = kv.get(key.as_bytes())? else {
        return Err(abort(StoreError::NotFound {
            key: key.to_owned(),
        }));
    };
    let actual = codec::decode_mod_revision(key, &bytes).map_err(abort)?;
    if actual != expected {
        return Err(abort(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual,
        }));
    }
    Ok(())
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

/// Maps a sled failure: detected corruption to `Corrupt`, anything else (I/O, a lock held by
/// another process) to `Unavailable`.
/// The start of the `Unavailable` reason when another process holds the database's lock
/// (sled allows one process); [`crate::proxy::open_local_store`] waits on it.
pub(crate) const LOCKED: &str = "held by another process";

fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        // sled 0.34 reports a held lock as an `Other` I/O error with this text.
        sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
            StoreError::Unavailable {
                endpoint: path.display().to_string(),
                reason: format!("{LOCKED} ({io})"),
            }
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            key: path.display().to_string(),
            reason: e.to_string(),
        },
        other => StoreError::Unavailable {
            endpoint: path.display().to_string(),
            reason: other.to_string(),
        },
    }
}
