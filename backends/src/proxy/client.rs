//! `RemoteStore`: a [`Store`] whose every call goes to a [`super::StoreServer`] over its Unix
//! socket, one connection per call (a watch keeps its connection for the stream).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::wire::{Reply, Request, Response};
use crate::{Compare, KeyValue, Revision, Store, StoreError, TxnOp, WatchEvent, WatchStream};

/// A client of a store served on a Unix socket.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    path: PathBuf,
}

/// The response lines of one connection.
type ReplyLines = Lines<BufReader<OwnedReadHalf>>;

impl RemoteStore {
    /// Connects once to check a server answers on `path`.
    ///
    /// # Errors
    /// `Unavailable` naming the socket when nothing listens on it.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let store = Self {
            path: path.as_ref().to_path_buf(),
        };
        store.open().await?;
        Ok(store)
    }

    /// The socket this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unavailable(&self, reason: String) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.path.display().to_string(),
            reason,
        }
    }

    async fn open(&self) -> Result<UnixStream, StoreError> {
        UnixStream::connect(&self.path)
            .await
            .map_err(|e| self.unavailable(format!("connecting: {e}")))
    }

    /// Sends `request` on a new connection and reads the first response line. Returns the
    /// connection too: a watch keeps both halves (the server reads EOF as "client gone").
    async fn exchange(
        &self,
        request: &Request,
    ) -> Result<(Reply, ReplyLines, OwnedWriteHalf), StoreError> {
        let (read, mut write) = self.open().await?.into_split();
        let mut line = serde_json::to_vec(request)
            .map_err(|e| self.unavailable(format!("encoding request: {e}")))?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .map_err(|e| self.unavailable(format!("sending request: {e}")))?;
        let mut lines = BufReader::new(read).lines();
        let reply = read_response(&mut lines, &self.endpoint()).await?;
        Ok((reply, lines, write))
    }

    fn endpoint(&self) -> String {
        self.path.display().to_string()
    }

    async fn call(&self, request: Request) -> Result<Reply, StoreError> {
        self.exchange(&request).await.map(|(reply, _, _)| reply)
    }

    async fn call_revision(&self, request: Request) -> Result<Revision, StoreError> {
        match self.call(request).await? {
            Reply::Revision(revision) => Ok(revision),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, reply: &Reply) -> StoreError {
        self.unavailable(format!("unexpected reply {reply:?}"))
    }
}

/// Reads one response line; a closed connection or garbage is `Unavailable`.
async fn read_response(lines: &mut ReplyLines, endpoint: &str) -> Result<Reply, StoreError> {
    let unavailable = |reason: String| StoreError::Unavailable {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let line = lines
        .next_line()
        .await
        .map_err(|e| unavailable(format!("reading reply: {e}")))?
        .ok_or_else(|| unavailable("connection closed".into()))?;
    let response: Response =
        serde_json::from_str(&line).map_err(|e| unavailable(format!("malformed reply: {e}")))?;
    response.map_err(|e| e.into_store_error(endpoint))
}

/// The state of a watch stream: the open connection, or nothing once it has ended.
struct WatchConn {
    lines: ReplyLines,
    /// Held only to keep the connection open.
    _write: OwnedWriteHalf,
    endpoint: String,
}

#[async_trait]
impl Store for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self
            .call(Request::Get {
                key: key.to_owned(),
            })
            .await?
        {
            Reply::Value(kv) => Ok(kv.map(Into::into)),
            other => Err(self.unexpected(&other)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        match self
            .call(Request::List {
                prefix: prefix.to_owned(),
            })
            .await?
        {
            Reply::List { kvs, revision } => {
                Ok((kvs.into_iter().map(Into::into).collect(), revision))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.call_revision(Request::Create {
            key: key.to_owned(),
            value: value.into(),
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.call_revision(Request::Update {
            key: key.to_owned(),
            value: value.into(),
            expected,
        })
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.call_revision(Request::Put {
            key: key.to_owned(),
            value: value.into(),
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.call_revision(Request::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError> {
        self.call_revision(Request::Txn {
            compares: compares.into_iter().map(Into::into).collect(),
            ops: ops.into_iter().map(Into::into).collect(),
        })
        .await
    }

    /// The server's watch, streamed over a dedicated connection. A connection that closes
    /// before the server ended the watch yields one `Unavailable` error, then nothing: the
    /// caller resyncs, as after any broken watch.
    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let (reply, lines, write) = self
            .exchange(&Request::Watch {
                prefix: prefix.to_owned(),
                from_revision,
            })
            .await?;
        if !matches!(reply, Reply::Watching) {
            return Err(self.unexpected(&reply));
        }
        let conn = WatchConn {
            lines,
            _write: write,
            endpoint: self.endpoint(),
        };
        let stream = futures::stream::unfold(Some(conn), |state| async move {
            let mut conn = state?;
            match read_response(&mut conn.lines, &conn.endpoint).await {
                Ok(Reply::Event(event)) => Some((Ok(WatchEvent::from(event)), Some(conn))),
                Ok(other) => {
                    let reason = format!("unexpected watch reply {other:?}");
                    let endpoint = conn.endpoint.clone();
                    Some((Err(StoreError::Unavailable { endpoint, reason }), None))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(stream.boxed())
    }
}
