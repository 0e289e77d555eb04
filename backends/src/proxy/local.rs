//! `LocalStore`: what [`super::open_local_store`] hands out. It delegates to the agent's
//! socket or to the sled database, and can let go of the database ([`release_local`]) so a
//! calico-node this process just started can open it: `calicoctl node` has the database
//! open (it wrote the host's records) and must wait until the agent serves it. After a
//! release, the next call opens the store again, which then goes through the agent.
//!
//! sled's lock belongs to the process, so "every handle this process holds on a data dir"
//! is process-wide state: a registry of weak references, not a handle passed around.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;

use crate::{Compare, KeyValue, Revision, Store, StoreError, TxnOp, WatchStream};

/// This machine's store, reopened on demand after [`release_local`].
pub struct LocalStore {
    data_dir: PathBuf,
    inner: tokio::sync::Mutex<Option<Arc<dyn Store>>>,
}

/// Every `LocalStore` this process created (dead ones are pruned on registration).
static REGISTRY: Mutex<Vec<Weak<LocalStore>>> = Mutex::new(Vec::new());

impl LocalStore {
    /// Wraps `store` (opened on `data_dir`) and registers it for [`release_local`].
    pub(super) fn register(data_dir: &Path, store: Arc<dyn Store>) -> Arc<LocalStore> {
        let local = Arc::new(LocalStore {
            data_dir: data_dir.to_path_buf(),
            inner: tokio::sync::Mutex::new(Some(store)),
        });
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|w| w.strong_count() > 0);
        registry.push(Arc::downgrade(&local));
        local
    }

    async fn store(&self) -> Result<Arc<dyn Store>, StoreError> {
        let mut inner = self.inner.lock().await;
        if let Some(store) = inner.as_ref() {
            return Ok(Arc::clone(store));
        }
        let store = super::open_store(&self.data_dir).await?;
        *inner = Some(Arc::clone(&store));
        Ok(store)
    }
}

/// Drops this process's open handles on `data_dir`'s store (the sled database closes once
/// no call is using it); their next call opens the store again.
pub async fn release_local(data_dir: &Path) {
    let live: Vec<Arc<LocalStore>> = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|l| l.data_dir == data_dir)
        .collect();
    for local in live {
        *local.inner.lock().await = None;
    }
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store it delegates to (`SledStore`, `RemoteStore`), or that it is released.
        match self.inner.try_lock() {
            Ok(inner) => match inner.as_ref() {
                Some(store) => write!(f, "LocalStore({store:?})"),
                None => write!(f, "LocalStore(released {})", self.data_dir.display()),
            },
            Err(_) => write!(f, "LocalStore(busy {})", self.data_dir.display()),
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.store().await?.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.store().await?.list(prefix).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.store().await?.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.store().await?.update(key, value, expected).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.store().await?.put(key, value).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.store().await?.delete(key, expected).await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError> {
        self.store().await?.txn(compares, ops).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.store().await?.watch(prefix, from_revision).await
    }
}
