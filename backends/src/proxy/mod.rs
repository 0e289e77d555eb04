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
//! - `local`: [`LocalStore`], what calicoctl holds: either of the two, released on demand
//!   so an agent it starts can take the database.

mod client;
mod local;
mod server;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use client::RemoteStore;
pub use local::{release_local, LocalStore};
pub use server::StoreServer;

use crate::sled_store::LOCKED;
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

/// How long [`open_local_store`] waits while another process holds the database without
/// serving it (an agent between opening the database and binding its socket, another
/// calicoctl command).
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
const LOCK_POLL: Duration = Duration::from_millis(25);

/// This machine's store: the running agent's, through its socket, when one serves it;
/// otherwise the sled database opened directly. While another process holds the database
/// without serving it, it retries for up to [`LOCK_WAIT`].
///
/// # Errors
/// `Unavailable` when neither works; when the database stayed locked, the reason says so
/// and what to do.
pub async fn open_local_store(data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let store = open_store(data_dir).await?;
    Ok(LocalStore::register(data_dir, store))
}

/// The store [`open_local_store`] wraps: the socket's or the database's.
async fn open_store(data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let socket = socket_path(data_dir);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if socket.exists() {
            if let Ok(remote) = RemoteStore::connect(&socket).await {
                return Ok(Arc::new(remote));
            }
        }
        let db = database_path(data_dir);
        match SledStore::open(&db) {
            Ok(store) => return Ok(Arc::new(store)),
            Err(StoreError::Unavailable { reason, .. }) if reason.starts_with(LOCKED) => {
                // An agent may have taken the database between our two attempts.
                if let Ok(remote) = RemoteStore::connect(&socket).await {
                    return Ok(Arc::new(remote));
                }
                if Instant::now() >= deadline {
                    return Err(StoreError::Unavailable {
                        endpoint: db.display().to_string(),
                        reason: format!(
                            "{LOCKED} for {LOCK_WAIT:?} without serving it on {} (a calico-node \
                             still starting, or another calicoctl); try again, or see \
                             `calicoctl status`",
                            socket.display()
                        ),
                    });
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}
