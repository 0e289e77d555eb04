//! The typed `Datastore`: pools, hosts, endpoints, profiles, BGP, config and block IPAM over any
//! raw [`Store`].
//!
//! - `mod.rs`: the handle, typed get/list, [`TxnPlan`] (compares + ops committed as one
//!   transaction) and the conflict-retry loop every read-modify-write uses.
//! - `hosts`: host registration, global defaults, Felix/BGP config, BGP peers and the mesh.
//! - `pools`, `endpoints`, `profiles`: one resource each.
//! - `ipam`: block IPAM (reference 1.8) that *plans* reservations so callers can commit the
//!   reservation together with their own writes.
//!
//! Every multi-key write is one `Store::txn`, so nothing is ever half-written; every
//! read-modify-write compares the revisions it read and retries on conflict.

mod endpoints;
mod error;
mod hosts;
mod ipam;
mod pools;
mod profiles;
mod tunnels;

use std::future::Future;
use std::sync::Arc;

use calico_core::codec::{decode, encode, Value};
use calico_core::keys::Key;

use crate::{Compare, Revision, Store, TxnOp};

pub use endpoints::{EndpointFilter, ProfileEdit};
pub use error::DatastoreError;
pub use hosts::HostRecord;
pub use ipam::{AssignRequest, IpamInfo};
pub use profiles::Profile;
pub use tunnels::TunnelAddrChange;

/// How many times a read-modify-write is retried on conflict (as libcalico did).
pub const MAX_RETRIES: u32 = 100;

/// The typed datastore over a shared raw store.
#[derive(Debug, Clone)]
pub struct Datastore {
    store: Arc<dyn Store>,
}

/// A typed value read with the revision to compare against when writing it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

/// A stored record whose value does not decode (its error names the key). Lenient listings
/// return these next to the good rows so `show` commands can mark them, never drop them.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokenRecord {
    pub key: String,
    pub error: calico_core::ModelError,
}

/// What a lenient listing found: every decodable item, and every record that was not.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: T,
    pub broken: Vec<BrokenRecord>,
}

impl<T> Listing<T> {
    /// The items, or the first broken record's error: the reading every write path uses, so
    /// nothing is rewritten from a listing that silently missed a record.
    ///
    /// # Errors
    /// `Model` naming the first undecodable key.
    pub fn strict(self) -> Result<T, DatastoreError> {
        match self.broken.into_iter().next() {
            Some(broken) => Err(DatastoreError::Model(broken.error)),
            None => Ok(self.items),
        }
    }
}

/// Compares and writes to commit as one transaction. Planning functions return one, callers
/// merge several and commit once, so e.g. an IP reservation and the endpoint using it land
/// together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnPlan {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
}

impl TxnPlan {
    /// Requires `key` to be absent at commit time.
    pub fn require_absent(&mut self, key: &Key) {
        self.compares.push(Compare::Absent {
            key: key.to_string(),
        });
    }

    /// Requires `key` to still be at `revision` (`0`: still absent).
    pub fn require_revision(&mut self, key: &Key, revision: Revision) {
        let key = key.to_string();
        self.compares.push(if revision == 0 {
            Compare::Absent { key }
        } else {
            Compare::ModRevision { key, revision }
        });
    }

    /// Writes `value` under `key`.
    pub fn put(&mut self, key: &Key, value: &Value) {
        self.ops.push(TxnOp::Put {
            key: key.to_string(),
            value: encode(value),
        });
    }

    /// Deletes `key` (absent is fine).
    pub fn delete(&mut self, key: impl ToString) {
        self.ops.push(TxnOp::Delete {
            key: key.to_string(),
        });
    }

    /// Appends another plan's compares and ops.
    pub fn extend(&mut self, other: TxnPlan) {
        self.compares.extend(other.compares);
        self.ops.extend(other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Datastore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Datastore { store }
    }

    /// The raw store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Commits a plan as one transaction (nothing to do for an empty plan).
    ///
    /// # Errors
    /// `Store(Conflict)` when a compare failed; nothing was written.
    pub async fn commit(&self, plan: TxnPlan) -> Result<Option<Revision>, DatastoreError> {
        if plan.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.store.txn(plan.compares, plan.ops).await?))
    }

    /// Decoded value and revision under `key`, `None` when absent.
    pub async fn get(&self, key: &Key) -> Result<Option<Versioned<Value>>, DatastoreError> {
        let Some(kv) = self.store.get(&key.to_string()).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: decode(key, &kv.value)?,
            revision: kv.mod_revision,
        }))
    }

    /// Every key under `prefix` that is part of the model, decoded. Keys outside the layout
    /// (directory markers, newer data) are skipped; a model key with a bad value is an error
    /// naming it.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(Key, Versioned<Value>)>, DatastoreError> {
        self.list_lenient(prefix).await?.strict()
    }

    /// As [`list`](Self::list), but a model key with a bad value is returned as broken
    /// instead of failing the whole listing.
    pub async fn list_lenient(
        &self,
        prefix: &str,
    ) -> Result<Listing<Vec<(Key, Versioned<Value>)>>, DatastoreError> {
        let (kvs, _) = self.store.list(prefix).await?;
        let mut items = Vec::with_capacity(kvs.len());
        let mut broken = Vec::new();
        for kv in kvs {
            let Ok(key) = Key::parse(&kv.key) else {
                continue;
            };
            match decode(&key, &kv.value) {
                Ok(value) => items.push((
                    key,
                    Versioned {
                        value,
                        revision: kv.mod_revision,
                    },
                )),
                Err(error) => broken.push(BrokenRecord { key: kv.key, error }),
            }
        }
        Ok(Listing { items, broken })
    }

    /// Raw key names under `prefix` (for deleting whole directories).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, DatastoreError> {
        let (kvs, _) = self.store.list(prefix).await?;
        Ok(kvs.into_iter().map(|kv| kv.key).collect())
    }

    /// Writes one value unconditionally.
    pub async fn put(&self, key: &Key, value: &Value) -> Result<Revision, DatastoreError> {
        Ok(self.store.put(&key.to_string(), encode(value)).await?)
    }

    /// Deletes one key; `false` when it was absent.
    pub async fn delete(&self, key: &Key) -> Result<bool, DatastoreError> {
        match self.store.delete(&key.to_string(), None).await {
            Ok(_) => Ok(true),
            Err(crate::StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs a read-modify-write until it does not conflict, at most [`MAX_RETRIES`] times.
///
/// # Errors
/// The first non-conflict error, or `TooManyConflicts` naming `what`.
pub async fn retry_on_conflict<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, DatastoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DatastoreError>>,
{
    for _ in 0..MAX_RETRIES {
        match attempt().await {
            Err(e) if e.is_conflict() => continue,
            other => return other,
        }
    }
    Err(DatastoreError::TooManyConflicts {
        what: what.to_string(),
        attempts: MAX_RETRIES,
    })
}

/// The error for a value of the wrong variant under `key`.
pub(crate) fn unexpected(key: &Key) -> DatastoreError {
    DatastoreError::UnexpectedValue {
        key: key.to_string(),
    }
}
