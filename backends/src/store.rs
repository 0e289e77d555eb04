//! The raw key/value `Store` trait every backend implements, in the shape of etcd v3.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::StoreError;

/// A store-wide, strictly increasing revision, like etcd's. The first write gets revision 1;
/// `0` means "no revision" (an absent key).
pub type Revision = i64;

/// One key with its value and the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (reset by a delete).
    pub create_revision: Revision,
    /// Revision of the last write to the key; what `update`/`delete` compare against.
    pub mod_revision: Revision,
}

/// A condition a transaction checks before it writes anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key must not exist (etcd: `create_revision == 0`).
    Absent { key: String },
    /// The key must exist with exactly this `mod_revision`.
    ModRevision { key: String, revision: Revision },
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Deleting an absent key is not an error inside a transaction (etcd semantics).
    Delete {
        key: String,
    },
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete {
        key: String,
        revision: Revision,
    },
    /// Every event up to and including `revision` has been delivered: the replay from
    /// `from_revision` is complete and what follows is live. Sent exactly once per watch.
    InSync {
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the write this event reports (or of the sync point).
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::InSync { revision } => *revision,
        }
    }
}

/// A live watch. It ends with an `Err` (then nothing more) when the backend can no longer
/// guarantee a gap-free stream, e.g. `StoreError::Compacted`; the caller then resyncs.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Raw keys and bytes with revisions: the one interface the typed `Datastore`, the CLI and the
/// node agent use, whatever the backend (etcd, sled, memory).
///
/// Invariants every implementation keeps (checked by the conformance suite in `tests/`):
/// - every successful write (`create`, `update`, `put`, `delete`, `txn`) that changes a key gets
///   a new revision, greater than every earlier one, and a transaction gets exactly one revision
///   (a transaction that changes nothing, e.g. only deletes of absent keys, may return the
///   current revision: etcd does);
/// - a transaction holds at most one op per key (etcd refuses duplicates);
/// - a failed call writes nothing;
/// - `watch(prefix, r)` delivers, in revision order, every write under `prefix` with revision
///   `>= r`, then `InSync`, then every later write, with no gap and no duplicate.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The key's current value, or `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, sorted by key, and the revision the listing is
    /// consistent at (watch from `revision + 1` to follow it without a gap).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Writes `key` only if absent.
    ///
    /// # Errors
    /// `AlreadyExists` when the key exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Writes `key` only if its `mod_revision` is `expected` (compare-and-swap).
    ///
    /// # Errors
    /// `NotFound` when absent, `Conflict` when the revision differs.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError>;

    /// Writes `key` whatever it holds (for config keys the original wrote blindly).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Deletes `key`; with `Some(expected)` only if its `mod_revision` is `expected`.
    ///
    /// # Errors
    /// `NotFound` when absent, `Conflict` when the revision differs.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError>;

    /// Checks every compare, then applies every op, as one atomic step with one revision.
    ///
    /// # Errors
    /// `Conflict { key, expected, actual }` for the first compare that fails (`expected` is
    /// `0` for `Absent`, `actual` is `0` for an absent key); nothing is written.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError>;

    /// Follows every write under `prefix` from `from_revision` on (see the trait invariants).
    ///
    /// # Errors
    /// `Compacted` when `from_revision` is older than the history the backend still holds.
    async fn watch(&self, prefix: &str, from_revision: Revision)
        -> Result<WatchStream, StoreError>;
}
