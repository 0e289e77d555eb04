//! `calicoctl node stop`, `node remove` and `status` through calicoctl's own command code on
//! a `MemStore` (the recording node control stands in for the agent process; the real one
//! is in `node_linux.rs`).

mod calicoctl_support;

use std::sync::Arc;

use async_trait::async_trait;
use calico_cli::ctl::{run, BgpPeerStatus, Ctl, NodeControl, NodeStartOptions, NodeStatus};
use calicoctl_support::{keys, store, value, Host};

/// Host 1 with its agent started and two workloads.
async fn host1_with_workloads(store: Arc<dyn calico_backends::Store>) -> Host {
    let h1 = Host::new(store, "host1");
    h1.ok("node --ip=172.31.250.1").await;
    for w in ["workload_A", "workload_C"] {
        h1.workload(w);
    }
    h1.ok("container add workload_A 192.168.1.1").await;
    h1.ok("container add workload_C 192.168.2.1").await;
    h1
}

#[tokio::test]
async fn node_stop_refuses_while_endpoints_exist_and_names_force() {
    let h1 = host1_with_workloads(store()).await;
    let err = h1.fails(&["node", "stop"], "--force").await;
    let message = err.to_string();
    assert!(message.contains("workload_A"), "{message}");
    assert!(
        !message.contains("--remove-endpoints"),
        "names the flag node stop has: {message}"
    );
    assert_eq!(
        h1.node.calls.lock().unwrap().last().map(String::as_str),
        Some("start host1 172.31.250.1"),
        "the agent was not stopped"
    );
    h1.ok("node stop --force").await;
    assert_eq!(
        h1.node.calls.lock().unwrap().last().map(String::as_str),
        Some("stop")
    );
}

#[tokio::test]
async fn node_remove_releases_addresses_and_the_hosts_blocks() {
    let store = store();
    let h1 = host1_with_workloads(store.clone()).await;
    // host2 borrows an address from host1's block 192.168.1.0/26.
    let h2 = Host::new(store.clone(), "host2");
    h2.ok("node --ip=172.31.250.2").await;
    h2.workload("workload_B");
    h2.ok("container add workload_B 192.168.1.2").await;
    store
        .put(
            "/calico/felix/v1/host/host1/status",
            br#"{"time":"2026-01-01T00:00:00Z","uptime":1.0,"first_update":true}"#.to_vec(),
        )
        .await
        .unwrap();
    let block1 = "/calico/ipam/v2/assignment/ipv4/block/192.168.1.0-26";
    let block2 = "/calico/ipam/v2/assignment/ipv4/block/192.168.2.0-26";
    assert!(value(&store, block1).await.unwrap().contains("host:host1"));

    // Refused while endpoints exist, then while the agent runs.
    let err = h1.fails(&["node", "remove"], "--remove-endpoints").await;
    assert!(err.to_string().contains("workload_A"), "{err}");
    let err = h1
        .fails(&["node", "remove", "--remove-endpoints"], "node stop")
        .await;
    assert!(err.to_string().contains("running"), "{err}");
    h1.ok("node stop --force").await;

    h1.ok("node remove --remove-endpoints").await;
    for prefix in [
        "/calico/v1/host/host1/",
        "/calico/bgp/v1/host/host1/",
        "/calico/felix/v1/host/host1/",
        "/calico/ipam/v2/host/host1/",
    ] {
        assert_eq!(keys(&store, prefix).await, Vec::<String>::new(), "{prefix}");
    }
    assert_eq!(h1.veth_count(), 0, "host1's veths are gone");
    // The block with host2's borrowed address stays, without affinity; the other is gone.
    let kept = value(&store, block1)
        .await
        .expect("block 192.168.1.0/26 kept");
    assert!(!kept.contains("host1"), "{kept}");
    assert_eq!(value(&store, block2).await, None);
    let info = h2.ok("ipam info 192.168.1.1").await;
    assert!(info.contains("not currently assigned"), "{info}");
    let info = h2.ok("ipam info 192.168.1.2").await;
    assert!(!info.contains("not currently assigned"), "{info}");
    // host2 is untouched.
    assert!(!keys(&store, "/calico/v1/host/host2/").await.is_empty());
}

#[tokio::test]
async fn runtime_none_does_not_start_the_agent() {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    let out = h1.ok("node --ip=172.31.250.1 --runtime=none").await;
    assert!(out.contains("calico-node was not started"), "{out}");
    assert!(h1.node.calls.lock().unwrap().is_empty(), "nothing started");
    assert_eq!(
        value(&store, "/calico/v1/host/host1/bird_ip")
            .await
            .as_deref(),
        Some("172.31.250.1")
    );
}

/// An agent whose BIRD has one session per family.
struct PeeredNode;

#[async_trait]
impl NodeControl for PeeredNode {
    async fn start(&self, _opts: &NodeStartOptions) -> anyhow::Result<()> {
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn status(&self) -> anyhow::Result<NodeStatus> {
        let peer = |ip: &str, name: &str| BgpPeerStatus {
            protocol: name.into(),
            peer: ip.into(),
            peer_type: "global".into(),
            state: "up".into(),
            since: "12:00:00".into(),
            info: "Established".into(),
        };
        Ok(NodeStatus {
            running: true,
            detail: "pid 1".into(),
            bgp_peers: vec![
                peer("172.31.250.9", "Global_172_31_250_9"),
                peer("fd10::9", "Global_fd10__9"),
            ],
        })
    }

    async fn version(&self) -> Option<String> {
        Some("calico-node 9.8.7".into())
    }
}

#[tokio::test]
async fn status_shows_the_version_and_one_table_per_family() {
    let h = Host::new(store(), "host1");
    let ctl = Ctl {
        node: Arc::new(PeeredNode),
        ..h.ctl.clone()
    };
    let out = run(&ctl, &["status".to_string()]).await.unwrap();
    assert!(out.contains("Running calico-node version 9.8.7"), "{out}");
    let (v4, v6) = out.split_once("IPv6 BGP status").expect(&out);
    assert!(v4.contains("IPv4 BGP status"), "{out}");
    assert!(
        v4.contains("172.31.250.9") && !v4.contains("fd10::9"),
        "{out}"
    );
    assert!(
        v6.contains("fd10::9") && !v6.contains("172.31.250.9"),
        "{out}"
    );

    // Without sessions each family says so.
    let out = h.ok("status").await;
    assert!(
        out.contains("No IPv4 peers found.") && out.contains("No IPv6 peers found."),
        "{out}"
    );
}
