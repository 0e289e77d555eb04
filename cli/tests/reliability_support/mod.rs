//! Shared parts of the `reliability_*` tests: the real datastores they run on (an etcd
//! cluster from `backends/tests/support/etcd_cluster.rs`, or sled served on a unix socket
//! as calico-node serves it to calicoctl) and connections to them.

#![allow(dead_code)]

#[path = "../../../backends/tests/support/etcd_cluster.rs"]
pub mod etcd_cluster;

use std::sync::Arc;
use std::time::Duration;

use calico_backends::proxy::{RemoteStore, StoreServer};
use calico_backends::{EtcdConfig, EtcdStore, SledStore, Store};

/// A connection of its own to etcd at `endpoints`, as each calicoctl process opens one.
pub async fn etcd_store(endpoints: Vec<String>) -> Arc<dyn Store> {
    let mut config = EtcdConfig::new(endpoints);
    config.request_timeout = Duration::from_secs(5);
    Arc::new(EtcdStore::connect(config).await.unwrap())
}

/// A sled database served on a socket, as a running calico-node serves it; dropped with
/// its temp dir (the server task ends when the sender drops).
pub struct SledServer {
    pub dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SledServer {
    pub async fn start() -> SledServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(dir.path().join("datastore")).unwrap());
        let server = StoreServer::bind(dir.path().join("calico.sock"), store)
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        SledServer { dir, _stop: stop }
    }

    /// A client connection of its own, as each calicoctl process opens one.
    pub async fn client(&self) -> Arc<dyn Store> {
        Arc::new(
            RemoteStore::connect(self.dir.path().join("calico.sock"))
                .await
                .unwrap(),
        )
    }
}
