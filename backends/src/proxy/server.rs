//! `StoreServer`: serves any [`Store`] on a Unix socket, one task per connection.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::wire::{Reply, Request, Response, WireError};
use crate::{Store, StoreError};

/// A bound socket serving one store. `serve` runs until its shutdown future resolves.
#[derive(Debug)]
pub struct StoreServer {
    path: PathBuf,
    listener: UnixListener,
    store: Arc<dyn Store>,
}

impl StoreServer {
    /// Binds `path` (mode 0600), replacing a stale socket file left by a process that died.
    ///
    /// # Errors
    /// `Unavailable` naming the socket when another server answers on it, or when it cannot
    /// be bound.
    pub async fn bind(path: impl AsRef<Path>, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let unavailable = |reason: String| StoreError::Unavailable {
            endpoint: path.display().to_string(),
            reason,
        };
        if path.exists() {
            if UnixStream::connect(&path).await.is_ok() {
                return Err(unavailable("another server is already listening".into()));
            }
            std::fs::remove_file(&path)
                .map_err(|e| unavailable(format!("removing stale socket: {e}")))?;
        }
        let listener =
            UnixListener::bind(&path).map_err(|e| unavailable(format!("binding socket: {e}")))?;
        // Whoever can connect can rewrite the datastore: owner only (calicoctl runs as the
        // same user as the agent, root on a real host).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| unavailable(format!("restricting socket permissions: {e}")))?;
        Ok(Self {
            path,
            listener,
            store,
        })
    }

    /// The socket this server listens on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts and serves connections until `shutdown` resolves, then closes every
    /// connection (ending their watches) and removes the socket file.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(stream, Arc::clone(&self.store)));
                    }
                    Err(e) => tracing::warn!(socket = %self.path.display(), error = %e, "accepting a store proxy connection"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(socket = %self.path.display(), error = %e, "removing the store proxy socket");
        }
    }
}

/// Answers requests on one connection until the client hangs up or starts a watch.
async fn serve_connection(stream: UnixStream, store: Arc<dyn Store>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request = match serde_json::from_str::<Request>(&line) {
            Ok(request) => request,
            Err(e) => {
                let reply: Response = Err(WireError::BadRequest {
                    reason: e.to_string(),
                });
                if send(&mut write, &reply).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Request::Watch {
            prefix,
            from_revision,
        } = request
        {
            serve_watch(&store, &prefix, from_revision, lines, write).await;
            return;
        }
        let reply = answer(store.as_ref(), request).await;
        if send(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

/// Runs one non-watch request against the store.
async fn answer(store: &dyn Store, request: Request) -> Response {
    let reply = match request {
        Request::Get { key } => store
            .get(&key)
            .await
            .map(|kv| Reply::Value(kv.map(Into::into))),
        Request::List { prefix } => store
            .list(&prefix)
            .await
            .map(|(kvs, revision)| Reply::List {
                kvs: kvs.into_iter().map(Into::into).collect(),
                revision,
            }),
        Request::Create { key, value } => {
            store.create(&key, value.into()).await.map(Reply::Revision)
        }
        Request::Update {
            key,
            value,
            expected,
        } => store
            .update(&key, value.into(), expected)
            .await
            .map(Reply::Revision),
        Request::Put { key, value } => store.put(&key, value.into()).await.map(Reply::Revision),
        Request::Delete { key, expected } => {
            store.delete(&key, expected).await.map(Reply::Revision)
        }
        Request::Txn { compares, ops } => store
            .txn(
                compares.into_iter().map(Into::into).collect(),
                ops.into_iter().map(Into::into).collect(),
            )
            .await
            .map(Reply::Revision),
        Request::Watch { .. } => {
            return Err(WireError::BadRequest {
                reason: "watch handled elsewhere".into(),
            })
        }
    };
    reply.map_err(Into::into)
}

/// Streams a watch until the store ends it or the client hangs up (any read from the client
/// ends it too: a watch connection carries nothing more from the client).
async fn serve_watch(
    store: &Arc<dyn Store>,
    prefix: &str,
    from_revision: i64,
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    mut write: OwnedWriteHalf,
) {
    let mut stream = match store.watch(prefix, from_revision).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = send(&mut write, &Err(e.into())).await;
            return;
        }
    };
    if send(&mut write, &Ok(Reply::Watching)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = lines.next_line() => return,
            event = stream.next() => {
                let line: Response = match event {
                    Some(Ok(event)) => Ok(Reply::Event(event.into())),
                    Some(Err(e)) => Err(e.into()),
                    None => return,
                };
                let last = line.is_err();
                if send(&mut write, &line).await.is_err() || last {
                    return;
                }
            }
        }
    }
}

/// Writes one response line.
async fn send(write: &mut OwnedWriteHalf, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}
