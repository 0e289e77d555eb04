//! Agent and store-proxy timings (a bench binary: `cargo bench -p calico-cli --bench agent`).
//!
//! - snapshot: `Agent::start` over a cluster of N local endpoints (plus remote ones) on a
//!   fresh `SimDataplane`: list, compute, first apply;
//! - restart: a second agent's `start` on the converged kernel (must change nothing);
//! - event: one endpoint write followed by `poll_once` (watch → calculator → apply);
//! - resync with no drift: `observe` + `plan`;
//! - proxy: `put` and `get` round trips through `RemoteStore` → `StoreServer` → `MemStore`
//!   against `MemStore` directly, and a 10k-key list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_backends::proxy::{RemoteStore, StoreServer};
use calico_backends::{MemStore, Store};
use calico_cli::agent::{Agent, AgentConfig};
use calico_dataplane::sim::{SimDataplane, WireConfig};
use calico_dataplane::{VethSpec, WorkloadPlumbing};

const HOST: &str = "host1";

fn endpoint(workload: &str, ip: &str) -> Vec<u8> {
    serde_json::json!({
        "state": "active",
        "name": format!("cali{workload}"),
        "mac": "ee:ee:ee:ee:ee:01",
        "profile_ids": ["P"],
        "ipv4_nets": [format!("{ip}/32")],
        "ipv6_nets": [],
    })
    .to_string()
    .into_bytes()
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

async fn plumb(sim: &SimDataplane, workload: &str, ip: &str) {
    sim.add_namespace(workload).unwrap();
    sim.add_veth(&VethSpec {
        netns: workload.to_owned(),
        host_iface: format!("cali{workload}"),
        temp_iface: format!("tmp{workload}"),
        workload_iface: "eth0".to_owned(),
        addrs: vec![format!("{ip}/32").parse().unwrap()],
        gateway_v4: None,
        gateway_v6: None,
    })
    .await
    .unwrap();
}

async fn cluster(local: usize, remote: usize) -> (Arc<MemStore>, SimDataplane) {
    let store = Arc::new(MemStore::new());
    let sim = SimDataplane::new(HOST, WireConfig::eth0(["172.31.250.1/24".parse().unwrap()]));
    for (k, v) in [
        ("/calico/v1/Ready", "true"),
        ("/calico/v1/config/InterfacePrefix", "cali"),
        ("/calico/v1/host/host1/bird_ip", "172.31.250.1"),
        ("/calico/bgp/v1/host/host1/ip_addr_v4", "172.31.250.1"),
        ("/calico/v1/policy/profile/P/tags", r#"["P"]"#),
        (
            "/calico/v1/policy/profile/P/rules",
            r#"{"inbound_rules": [{"src_tag": "P"}], "outbound_rules": [{}]}"#,
        ),
    ] {
        store.put(k, v.as_bytes().to_vec()).await.unwrap();
    }
    for i in 0..local {
        let w = format!("w{i}");
        plumb(&sim, &w, &ip(i)).await;
        let key = format!("/calico/v1/host/{HOST}/workload/docker/{w}/endpoint/e{i}");
        store.put(&key, endpoint(&w, &ip(i))).await.unwrap();
    }
    for i in 0..remote {
        let w = format!("r{i}");
        let key = format!("/calico/v1/host/host2/workload/docker/{w}/endpoint/e{i}");
        store
            .put(&key, endpoint(&w, &ip(100_000 + i)))
            .await
            .unwrap();
    }
    (store, sim)
}

fn per(total: Duration, n: usize) -> String {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    format!("{:?}", total / n)
}

async fn bench_agent(local: usize, remote: usize) {
    let (store, sim) = cluster(local, remote).await;
    let mut agent = Agent::new(
        store.clone(),
        sim.clone(),
        HOST.into(),
        AgentConfig::default(),
    );
    let t = Instant::now();
    let first = agent.start().await.unwrap();
    let snapshot = t.elapsed();

    let mut again = Agent::new(
        store.clone(),
        sim.clone(),
        HOST.into(),
        AgentConfig::default(),
    );
    let t = Instant::now();
    let restart = again.start().await.unwrap();
    let restart_time = t.elapsed();
    assert!(
        restart.changes.is_empty(),
        "restart rewrote {:?}",
        restart.changes
    );
    agent.poll_once().await.unwrap();

    let events = 200;
    for i in 0..events {
        plumb(&sim, &format!("n{i}"), &ip(200_000 + i)).await;
    }
    let before = agent.metrics().snapshot();
    let t = Instant::now();
    for i in 0..events {
        let w = format!("n{i}");
        let key = format!("/calico/v1/host/{HOST}/workload/docker/{w}/endpoint/n{i}");
        store
            .put(&key, endpoint(&w, &ip(200_000 + i)))
            .await
            .unwrap();
        let out = agent.poll_once().await.unwrap();
        assert!(out.changed(), "event {i}: {out:?}");
    }
    let event_time = t.elapsed();
    let after = agent.metrics().snapshot();
    let apply_time = Duration::from_nanos(after.apply_nanos - before.apply_nanos);

    let t = Instant::now();
    let resyncs = 20;
    for _ in 0..resyncs {
        assert!(!agent.resync().await.unwrap().changed());
    }
    let resync_time = t.elapsed();
    println!(
        "agent local={local} remote={remote}: snapshot+first apply {snapshot:?} ({} changes), \
         restart start {restart_time:?} (0 changes), endpoint add event {} each (dataplane apply {} of it), \
         resync without drift {} each",
        first.changes.len(),
        per(event_time, events),
        per(apply_time, events),
        per(resync_time, resyncs),
    );
}

async fn bench_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calico.sock");
    let backing = MemStore::new();
    let server = StoreServer::bind(&path, Arc::new(backing.clone()))
        .await
        .unwrap();
    tokio::spawn(server.serve(std::future::pending()));
    let remote = RemoteStore::connect(&path).await.unwrap();
    let n = 2000;
    for (name, store) in [
        ("memstore", &backing as &dyn Store),
        ("remote", &remote as &dyn Store),
    ] {
        let t = Instant::now();
        for i in 0..n {
            store
                .put(&format!("/b/{name}/{i}"), vec![b'x'; 200])
                .await
                .unwrap();
        }
        let put = t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            store.get(&format!("/b/{name}/{i}")).await.unwrap();
        }
        let get = t.elapsed();
        println!(
            "proxy {name}: put {} each, get {} each",
            per(put, n),
            per(get, n)
        );
    }
    for i in 0..10_000 {
        backing
            .put(&format!("/l/{i:05}"), vec![b'y'; 200])
            .await
            .unwrap();
    }
    let t = Instant::now();
    let (kvs, _) = remote.list("/l/").await.unwrap();
    println!(
        "proxy remote: list of {} keys (200 B values) {:?}",
        kvs.len(),
        t.elapsed()
    );
}

#[tokio::main]
async fn main() {
    for (local, remote) in [(10, 100), (200, 2000), (1000, 5000)] {
        bench_agent(local, remote).await;
    }
    bench_proxy().await;
}
