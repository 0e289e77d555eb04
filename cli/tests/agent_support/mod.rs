//! Shared fixtures of the agent tests: a seeded `MemStore`, endpoint and profile writers, a
//! simulated host, and a store whose watches can be broken on demand.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use calico_backends::{
    Compare, KeyValue, MemStore, Revision, Store, StoreError, TxnOp, WatchStream,
};
use calico_cli::agent::{Agent, AgentConfig};
use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::DesiredState;
use calico_dataplane::sim::{SimDataplane, WireConfig};
use calico_dataplane::{VethSpec, WorkloadPlumbing};
use futures::StreamExt;

pub const HOST: &str = "host1";

/// The global defaults and this host's registration, as `calicoctl node` writes them.
pub async fn seed(store: &dyn Store) {
    for (key, value) in [
        ("/calico/v1/config/InterfacePrefix", "cali"),
        ("/calico/v1/config/ReportingIntervalSecs", "30"),
        ("/calico/v1/host/host1/bird_ip", "172.31.250.1"),
        ("/calico/v1/host/host1/config/marker", "created"),
        (
            "/calico/v1/host/host1/config/DefaultEndpointToHostAction",
            "RETURN",
        ),
        ("/calico/bgp/v1/host/host1/ip_addr_v4", "172.31.250.1"),
        ("/calico/bgp/v1/host/host1/ip_addr_v6", ""),
        ("/calico/bgp/v1/host/host2/ip_addr_v4", "172.31.250.2"),
        (
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            r#"{"cidr": "192.168.0.0/16"}"#,
        ),
    ] {
        store.put(key, value.as_bytes().to_vec()).await.unwrap();
    }
}

pub async fn set_ready(store: &dyn Store) {
    store
        .put("/calico/v1/Ready", b"true".to_vec())
        .await
        .unwrap();
}

/// Writes a profile as `calicoctl profile add` does.
pub async fn add_profile(store: &dyn Store, name: &str) {
    let dir = format!("/calico/v1/policy/profile/{name}");
    store
        .put(
            &format!("{dir}/tags"),
            format!(r#"["{name}"]"#).into_bytes(),
        )
        .await
        .unwrap();
    let rules = format!(
        r#"{{"inbound_rules": [{{"action": "allow", "src_tag": "{name}"}}], "outbound_rules": [{{"action": "allow"}}]}}"#
    );
    store
        .put(&format!("{dir}/rules"), rules.into_bytes())
        .await
        .unwrap();
}

pub fn endpoint_key(host: &str, workload: &str) -> String {
    format!("/calico/v1/host/{host}/workload/docker/{workload}/endpoint/ep{workload}")
}

/// The interface name calicoctl gives a workload's endpoint.
pub fn iface(workload: &str) -> String {
    format!("cali{workload}")
}

/// Writes an active endpoint with one IPv4 address and the given profiles.
pub async fn add_endpoint(
    store: &dyn Store,
    host: &str,
    workload: &str,
    ip: &str,
    profiles: &[&str],
) {
    let value = serde_json::json!({
        "state": "active",
        "name": iface(workload),
        "mac": "ee:ee:ee:ee:ee:01",
        "profile_ids": profiles,
        "ipv4_nets": [format!("{ip}/32")],
        "ipv6_nets": [],
    });
    store
        .put(
            &endpoint_key(host, workload),
            value.to_string().into_bytes(),
        )
        .await
        .unwrap();
}

/// Plumbs a workload on the simulated host (namespace + veth `cali<workload>`), as
/// `calicoctl container add` does, then writes its endpoint.
pub async fn add_local_endpoint(
    store: &dyn Store,
    sim: &SimDataplane,
    workload: &str,
    ip: &str,
    profiles: &[&str],
) {
    plumb(sim, workload, ip).await;
    add_endpoint(store, HOST, workload, ip, profiles).await;
}

/// Creates the workload's namespace and veth pair (`cali<workload>` on the host side).
pub async fn plumb(sim: &SimDataplane, workload: &str, ip: &str) {
    sim.add_namespace(workload).unwrap();
    let spec = VethSpec {
        netns: workload.to_owned(),
        host_iface: iface(workload),
        temp_iface: format!("tmp{workload}"),
        workload_iface: "eth0".to_owned(),
        addrs: vec![format!("{ip}/32").parse().unwrap()],
        gateway_v4: Some("172.31.250.1".parse().unwrap()),
        gateway_v6: None,
    };
    sim.add_veth(&spec).await.unwrap();
}

/// A simulated host1 with its wire addressed.
pub fn sim() -> SimDataplane {
    SimDataplane::new(HOST, WireConfig::eth0(["172.31.250.1/24".parse().unwrap()]))
}

/// What `compute` says host1 should hold, from the store's current content.
pub async fn expected(store: &dyn Store) -> DesiredState {
    let (kvs, _) = store.list("/calico/").await.unwrap();
    let mut state = ClusterState::default();
    for kv in kvs {
        state.apply(&kv.key, Some(&kv.value));
    }
    compute(&state, HOST)
}

/// An agent for host1 with default pacing.
pub fn agent(store: Arc<dyn Store>, dataplane: SimDataplane) -> Agent<SimDataplane> {
    Agent::new(store, dataplane, HOST.to_owned(), AgentConfig::default())
}

/// A `MemStore` whose live watches fail with `Compacted` once [`BreakableStore::break_watches`]
/// is called (MemStore's own compaction leaves live watches alone, like etcd's only fails a
/// watch that falls behind).
#[derive(Debug, Clone, Default)]
pub struct BreakableStore {
    pub inner: MemStore,
    broken: Arc<AtomicBool>,
}

impl BreakableStore {
    /// Compacts the history up to now and fails every watch opened so far.
    pub fn break_watches(&self) {
        self.inner.compact(self.inner.revision());
        self.broken.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for BreakableStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.inner.update(key, value, expected).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.inner.delete(key, expected).await
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError> {
        self.inner.txn(compares, ops).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        // A new watch starts healthy.
        let flag = Arc::new(AtomicBool::new(false));
        self.broken.store(false, Ordering::SeqCst);
        let broken = Arc::clone(&self.broken);
        let mut inner = self.inner.watch(prefix, from).await?;
        let oldest = self.inner.revision();
        Ok(futures::stream::poll_fn(move |cx| {
            if flag.load(Ordering::SeqCst) {
                return Poll::Ready(None);
            }
            if broken.load(Ordering::SeqCst) {
                flag.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err(StoreError::Compacted {
                    requested: from,
                    oldest,
                })));
            }
            inner.poll_next_unpin(cx)
        })
        .boxed())
    }
}
