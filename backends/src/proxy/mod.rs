//! Sharing one machine's store between processes over a Unix socket.
//!
//! sled lets one process open a database. While calico-node runs it holds the `SledStore`
//! and serves it with [`StoreServer`] on `<data-dir>/calico.sock`; calicoctl then talks to
//! it through [`RemoteStore`], which implements [`Store`] like any backend.
//! [`open_local_store`] picks whichever applies.
//!
//! - `wire`: newline-delimited JSON requests and responses; a watch is a streamed response.
//! - `server`: [`StoreServer`], one task per connection over any `Store`.
//! - `client`: [`RemoteStore`], one connection per call.

mod client;
mod server;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use client::RemoteStore;
pub use server::StoreServer;

use crate::{SledStore, Store, StoreError};

/// The socket file an agent serves its store on, inside the data dir.
pub const SOCKET_FILE: &str = "calico.sock";

/// The sled database directory inside the data dir.
pub const DATABASE_DIR: &str = "datastore";

/// `<data_dir>/calico.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// `<data_dir>/datastore` (the path calicoctl has always used).
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DATABASE_DIR)
}

/// This machine's store: the running agent's, through its socket, when one serves it;
/// otherwise the sled database opened directly.
///
/// # Errors
/// `Unavailable` when neither works (e.g. the database is held by a process that does not
/// serve it).
pub async fn open_local_store(data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let socket = socket_path(data_dir);
    if socket.exists() {
        if let Ok(remote) = RemoteStore::connect(&socket).await {
            return Ok(Arc::new(remote));
        }
    }
    match SledStore::open(database_path(data_dir)) {
        Ok(store) => Ok(Arc::new(store)),
        // An agent may have taken the database between our two attempts.
        Err(e) => match RemoteStore::connect(&socket).await {
            Ok(remote) => Ok(Arc::new(remote)),
            Err(_) => Err(e),
        },
    }
}
