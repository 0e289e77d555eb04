//! Exhaustion: a pool with no free address left, a host that finds no free block (it
//! borrows, then fails clearly when nothing is left), and 4,096 endpoints on one host. Clear
//! errors naming the pool, nothing half-written, no panic.

mod agent_support;
mod calicoctl_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use calico_backends::MemStore;
use calicoctl_support::{store, Host};

/// Endpoints on one host in the scale case.
const ENDPOINTS: usize = 4096;

/// Adds workloads `prefix0..` on `host` with auto-assigned addresses until one fails;
/// returns the addresses given and the failure.
async fn fill(host: &Host, prefix: &str, limit: usize) -> (Vec<String>, String) {
    let mut given = Vec::new();
    for i in 0..limit {
        let name = format!("{prefix}{i}");
        host.workload(&name);
        match host.try_run(&format!("container add {name} ipv4")).await {
            Ok(out) => given.push(
                out.split_whitespace()
                    .nth(1)
                    .unwrap_or_else(|| panic!("no address in {out:?}"))
                    .to_owned(),
            ),
            Err(_) => {
                // The same command again, checked: a clear error, nothing written, no veth.
                let err = host
                    .fails(&["container", "add", &name, "ipv4"], "10.9.0.0/")
                    .await;
                return (given, err.to_string());
            }
        }
    }
    panic!("{limit} workloads fit: the pool never ran out");
}

#[tokio::test]
async fn a_full_pool_fails_clearly_and_writes_nothing() {
    let shared = store();
    let h1 = Host::new(shared.clone(), "host1");
    h1.ok("node --ip=172.31.250.1").await;
    h1.ok("pool add 10.9.0.0/26").await;
    // `calicoctl node` made the default pool: only the small one may serve.
    h1.ok("pool remove 192.168.0.0/16").await;
    let (given, error) = fill(&h1, "w", 100).await;
    let distinct: BTreeSet<&String> = given.iter().collect();
    assert_eq!(distinct.len(), given.len(), "an address was given twice");
    assert_eq!(given.len(), 64, "a /26 holds 64 addresses: {given:?}");
    assert!(error.contains("10.9.0.0/26"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    println!("full pool: {} addresses given, then: {error}", given.len());
}

#[tokio::test]
async fn a_host_without_a_free_block_borrows_then_fails_clearly() {
    let shared = store();
    let hosts: Vec<Host> = ["host1", "host2", "host3"]
        .iter()
        .map(|h| Host::new(shared.clone(), h))
        .collect();
    for (i, h) in hosts.iter().enumerate() {
        h.ok(&format!("node --ip=172.31.250.{}", i + 1)).await;
    }
    hosts[0].ok("pool add 10.9.0.0/25").await;
    hosts[0].ok("pool remove 192.168.0.0/16").await;
    // host1 and host2 each claim one of the pool's two blocks.
    let (a, _) = (fill_one(&hosts[0], "a").await, ());
    let (b, _) = (fill_one(&hosts[1], "b").await, ());
    assert_ne!(block_of(&a), block_of(&b), "{a} and {b} share a block");
    // host3 finds no free block: it borrows an address from one of theirs.
    let c = fill_one(&hosts[2], "c").await;
    assert!(c.starts_with("10.9.0."), "{c}");
    // Everyone fills the pool; whoever runs out gets a clear error.
    let (rest, error) = fill(&hosts[2], "more", 200).await;
    assert_eq!(rest.len() + 3, 128, "a /25 holds 128 addresses");
    assert!(error.contains("10.9.0.0/25"), "{error}");
    println!(
        "no free block: host3 borrowed {c}, {} more addresses, then: {error}",
        rest.len()
    );
}

async fn fill_one(host: &Host, name: &str) -> String {
    host.workload(name);
    let out = host.ok(&format!("container add {name} ipv4")).await;
    out.split_whitespace().nth(1).unwrap().to_owned()
}

fn block_of(ip: &str) -> u8 {
    ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() / 64
}

#[tokio::test]
async fn four_thousand_endpoints_on_one_host_are_all_programmed() {
    use agent_support::*;
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    add_profile(store.as_ref(), "PROF").await;
    // Records only: plumbing 4,096 simulated veths would cost minutes in a debug build, and
    // an endpoint's chains are installed whether or not its interface exists yet.
    for i in 0..ENDPOINTS {
        let ip = format!("192.168.{}.{}", 16 + i / 256, i % 256);
        add_endpoint(store.as_ref(), HOST, &format!("w{i}"), &ip, &["PROF"]).await;
    }
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    assert_eq!(agent.waiting_interfaces().len(), ENDPOINTS);
    let observed = sim.observe_now();
    assert_eq!(observed.tables, expected(store.as_ref()).await.tables);
    let chains: usize = observed.tables.values().map(|t| t.chains.len()).sum();
    assert!(chains >= 2 * ENDPOINTS, "{chains} chains");
    let m = agent.metrics().snapshot();
    assert_eq!((m.errors, m.endpoints), (0, ENDPOINTS as u64));
    println!("{ENDPOINTS} endpoints on one host: {chains} chains installed, 0 errors");
}
