//! The conformance suite against `RemoteStore` → `StoreServer` → `MemStore` over a Unix
//! socket in a temp dir, plus the proxy's own paths: a broken watch, a stale socket and
//! `open_local_store`.

mod conformance;

use std::sync::Arc;

use calico_backends::proxy::{open_local_store, socket_path, RemoteStore, StoreServer};
use calico_backends::{MemStore, Store, StoreError, WatchEvent};
use conformance::unique_prefix;
use futures::StreamExt;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A server over a fresh `MemStore`, the client, and what keeps them alive.
struct Served {
    _dir: TempDir,
    backing: MemStore,
    client: RemoteStore,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backing = MemStore::new();
        let path = dir.path().join("calico.sock");
        let server = StoreServer::bind(&path, Arc::new(backing.clone()))
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let client = RemoteStore::connect(&path).await.unwrap();
        Self {
            _dir: dir,
            backing,
            client,
            stop: Some(stop),
            server,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.unwrap();
    }
}

#[tokio::test]
async fn crud() {
    let s = Served::start().await;
    conformance::crud(&s.client, &unique_prefix("crud")).await;
}

#[tokio::test]
async fn revisions() {
    let s = Served::start().await;
    conformance::revisions(&s.client, &unique_prefix("revisions")).await;
}

#[tokio::test]
async fn list_prefix() {
    let s = Served::start().await;
    conformance::list_prefix(&s.client, &unique_prefix("list")).await;
}

#[tokio::test]
async fn txn_atomic() {
    let s = Served::start().await;
    conformance::txn_atomic(&s.client, &unique_prefix("txn")).await;
}

#[tokio::test]
async fn watch_replay() {
    let s = Served::start().await;
    conformance::watch_replay(&s.client, &unique_prefix("replay")).await;
}

#[tokio::test]
async fn watch_live() {
    let s = Served::start().await;
    conformance::watch_live(&s.client, &unique_prefix("live")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_during_writes() {
    let s = Served::start().await;
    conformance::watch_during_writes(Arc::new(s.client.clone()), &unique_prefix("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_update() {
    let s = Served::start().await;
    conformance::concurrent_update(Arc::new(s.client.clone()), &unique_prefix("cas")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create() {
    let s = Served::start().await;
    conformance::concurrent_create(Arc::new(s.client.clone()), &unique_prefix("create")).await;
}

#[test]
fn model_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calico.sock");
    conformance::model_check(
        || async move {
            let server = StoreServer::bind(&path, Arc::new(MemStore::new()))
                .await
                .unwrap();
            // Runs on model_check's runtime until the runtime is dropped.
            tokio::spawn(server.serve(std::future::pending()));
            RemoteStore::connect(&path).await.unwrap()
        },
        32,
    );
}

#[tokio::test]
async fn binary_values_survive_the_wire() {
    let s = Served::start().await;
    let value = vec![0u8, 0xff, 0x80, b'\n'];
    s.client.put("/bin", value.clone()).await.unwrap();
    assert_eq!(s.backing.get("/bin").await.unwrap().unwrap().value, value);
    assert_eq!(s.client.get("/bin").await.unwrap().unwrap().value, value);
}

#[tokio::test]
async fn compacted_watch_is_reported_as_compacted() {
    let s = Served::start().await;
    for i in 0..3u8 {
        s.client.put(&format!("/k{i}"), vec![i]).await.unwrap();
    }
    s.backing.compact(3);
    match s.client.watch("/", 1).await {
        Err(StoreError::Compacted { requested, oldest }) => assert_eq!((requested, oldest), (1, 3)),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
}

#[tokio::test]
async fn server_shutdown_breaks_the_watch_with_an_error() {
    let s = Served::start().await;
    let mut stream = s.client.watch("/", 0).await.unwrap();
    assert_eq!(
        conformance::next_event(&mut stream).await,
        WatchEvent::InSync { revision: 0 }
    );
    s.shutdown().await;
    match stream.next().await {
        Some(Err(StoreError::Unavailable { .. })) => {}
        other => panic!("expected Unavailable after shutdown, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
}

#[tokio::test]
async fn dropping_a_remote_watch_releases_the_server_side_watch() {
    let s = Served::start().await;
    let stream = s.client.watch("/", 0).await.unwrap();
    assert_eq!(s.backing.watcher_count(), 1);
    drop(stream);
    // The server notices the hang-up on its own; wait for it (bounded by the test runner).
    while s.backing.watcher_count() != 0 {
        s.backing.put("/poke", b"x".to_vec()).await.unwrap();
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_second_server_on_a_live_socket_is_refused_and_a_stale_one_replaced() {
    let s = Served::start().await;
    let path = s.client.path().to_path_buf();
    match StoreServer::bind(&path, Arc::new(MemStore::new())).await {
        Err(StoreError::Unavailable { endpoint, .. }) => {
            assert_eq!(endpoint, path.display().to_string())
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("a second server bound a live socket"),
    }
    // A socket file nobody listens on (the old server died) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");
    let server = StoreServer::bind(&stale, Arc::new(MemStore::new()))
        .await
        .unwrap();
    assert_eq!(server.path(), stale);
}

#[tokio::test]
async fn open_local_store_uses_the_socket_when_served_and_sled_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody serves: the sled database is opened directly.
    let direct = open_local_store(dir.path()).await.unwrap();
    direct
        .put("/calico/v1/Ready", b"true".to_vec())
        .await
        .unwrap();
    assert!(format!("{direct:?}").contains("SledStore"), "{direct:?}");
    drop(direct);

    // An agent holds the database and serves it: the socket is used.
    // sled releases its file lock from a background thread after the drop: retry briefly
    // (a hang guard, not a timing assertion).
    let db = calico_backends::proxy::database_path(dir.path());
    let mut attempts = 0;
    let held: Arc<dyn Store> = loop {
        match calico_backends::SledStore::open(&db) {
            Ok(store) => break Arc::new(store),
            Err(e) if attempts < 100 => {
                attempts += 1;
                pause_after(e).await;
            }
            Err(e) => panic!("reopening {}: {e}", db.display()),
        }
    };
    let server = StoreServer::bind(socket_path(dir.path()), Arc::clone(&held))
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let remote = open_local_store(dir.path()).await.unwrap();
    assert!(format!("{remote:?}").contains("RemoteStore"), "{remote:?}");
    let ready = remote.get("/calico/v1/Ready").await.unwrap().unwrap();
    assert_eq!(ready.value, b"true");
    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(
        !socket_path(dir.path()).exists(),
        "the socket is removed on shutdown"
    );
}

/// Waits a little after a failed open.
async fn pause_after(_cause: StoreError) {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}
