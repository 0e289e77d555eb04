//! Agent and store-proxy timings (a bench binary: `cargo bench -p calico-cli --bench agent`).
//!
//! - snapshot: `Agent::start` over a cluster of N local endpoints (plus remote ones) on a
//!   fresh `SimDataplane`: list, compute, first apply;
//! - restart: a second agent's `start` on the converged kernel (must change nothing);
//! - event: one endpoint write followed by `poll_once` (watch → calculator → apply);
//! - profile change: one local endpoint switches profile, write to `poll_once` (watch →
//!   calculator → apply), against the snapshot + first apply (full recompute + full apply);
//! - resync with no drift: `observe` + `plan`;
//! - memory: the peak RSS (`VmHWM`) of a child process holding an agent converged over 10,000
//!   and 100,000 endpoints; the child reads the store through the proxy socket (the store
//!   itself lives in this process, as etcd lives outside calico-node), so its RSS is the
//!   agent's: decoded state, calculator, desired and simulated dataplane;
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
    endpoint_with(workload, ip, "P")
}

fn endpoint_with(workload: &str, ip: &str, profile: &str) -> Vec<u8> {
    serde_json::json!({
        "state": "active",
        "name": format!("cali{workload}"),
        "mac": "ee:ee:ee:ee:ee:01",
        "profile_ids": [profile],
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
        ("/calico/v1/policy/profile/Q/tags", r#"["Q"]"#),
        (
            "/calico/v1/policy/profile/Q/rules",
            r#"{"inbound_rules": [{"src_tag": "Q", "protocol": "tcp", "dst_ports": [80]}], "outbound_rules": [{}]}"#,
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

    // One local endpoint switches between profiles P and Q.
    let changes = 100;
    let before = agent.metrics().snapshot();
    let t = Instant::now();
    for n in 0..changes {
        let profile = if n % 2 == 0 { "Q" } else { "P" };
        let key = format!("/calico/v1/host/{HOST}/workload/docker/w0/endpoint/e0");
        store
            .put(&key, endpoint_with("w0", &ip(0), profile))
            .await
            .unwrap();
        let out = agent.poll_once().await.unwrap();
        assert!(out.changed(), "profile change {n}: {out:?}");
    }
    let change_time = t.elapsed();
    let after = agent.metrics().snapshot();
    let change_apply = Duration::from_nanos(after.apply_nanos - before.apply_nanos);

    let t = Instant::now();
    let resyncs = 20;
    for _ in 0..resyncs {
        assert!(!agent.resync().await.unwrap().changed());
    }
    let resync_time = t.elapsed();
    println!(
        "agent local={local} remote={remote}: snapshot+first apply {snapshot:?} ({} changes), \
         restart start {restart_time:?} (0 changes), endpoint add event {} each (dataplane apply {} of it), \
         profile change event {} each (dataplane apply {} of it), resync without drift {} each",
        first.changes.len(),
        per(event_time, events),
        per(apply_time, events),
        per(change_time, changes),
        per(change_apply, changes),
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

/// Local endpoints of the memory bench's host; the rest of the cluster is remote.
const RSS_LOCAL: usize = 100;
/// Set in the child process of [`bench_rss`] to the proxy socket it reads.
const RSS_CHILD_ENV: &str = "CALICO_BENCH_RSS_SOCKET";

/// `VmHWM` (peak RSS) or `VmRSS` of this process in KiB, from `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The child of [`bench_rss`]: an agent over the proxy at `socket`, started once (list,
/// compute, first apply) and stepped once; prints its RSS before and its peak after.
async fn rss_child(socket: &str) {
    let floor = status_kib("VmHWM:");
    let store = Arc::new(RemoteStore::connect(socket).await.unwrap());
    let sim = SimDataplane::new(HOST, WireConfig::eth0(["172.31.250.1/24".parse().unwrap()]));
    for i in 0..RSS_LOCAL {
        plumb(&sim, &format!("w{i}"), &ip(i)).await;
    }
    let mut agent = Agent::new(store, sim, HOST.into(), AgentConfig::default());
    let first = agent.start().await.unwrap();
    agent.poll_once().await.unwrap();
    println!(
        "child: {} changes, RSS before the agent {} KiB, peak {} KiB, now {} KiB",
        first.changes.len(),
        floor,
        status_kib("VmHWM:"),
        status_kib("VmRSS:")
    );
}

async fn bench_rss(endpoints: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calico.sock");
    let (store, _sim) = cluster(0, 0).await;
    for i in 0..RSS_LOCAL {
        let w = format!("w{i}");
        let key = format!("/calico/v1/host/{HOST}/workload/docker/{w}/endpoint/e{i}");
        store.put(&key, endpoint(&w, &ip(i))).await.unwrap();
    }
    for i in RSS_LOCAL..endpoints {
        // 100 endpoints per remote host, as in the compute bench.
        let key = format!(
            "/calico/v1/host/host{}/workload/docker/r{i}/endpoint/e{i}",
            2 + i / 100
        );
        store
            .put(&key, endpoint(&format!("r{i}"), &ip(i)))
            .await
            .unwrap();
    }
    let server = StoreServer::bind(&path, store as Arc<dyn Store>)
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stop_rx.await;
    }));
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .env(RSS_CHILD_ENV, &path)
        .output()
        .await
        .unwrap();
    let _ = stop_tx.send(());
    let _ = serving.await;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("child:"));
    match line {
        Some(l) if out.status.success() => {
            let kib = |field: &str| {
                l.split(&format!("{field} "))
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            println!(
                "agent RSS holding {endpoints} endpoints ({RSS_LOCAL} local): peak {} MiB (process before the agent {} MiB; {})",
                kib("peak") / 1024,
                kib("agent") / 1024,
                l.trim_start_matches("child: ")
            );
        }
        _ => println!(
            "agent RSS holding {endpoints} endpoints: failed ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
        ),
    }
}

#[tokio::main]
async fn main() {
    if let Some(socket) = std::env::var_os(RSS_CHILD_ENV) {
        rss_child(&socket.to_string_lossy()).await;
        return;
    }
    for (local, remote) in [(10, 100), (200, 2000), (1000, 9000)] {
        bench_agent(local, remote).await;
    }
    for endpoints in [10_000, 100_000] {
        bench_rss(endpoints).await;
    }
    bench_proxy().await;
}
