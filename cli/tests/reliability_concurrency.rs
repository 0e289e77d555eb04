//! Concurrency on the real datastores, with calicoctl's own command code, each "process" on
//! a connection of its own (etcd, and sled served on the agent's socket):
//! - 30 hosts race `container add` of one IP: exactly one wins, the others fail naming the
//!   address and leave no veth, the address is assigned once;
//! - 50 concurrent auto-assigns (`container add <C> ipv4`): 50 distinct addresses;
//! - 20 concurrent `profile P rule add` to one profile: no rule lost.
//!
//! The figures RELIABILITY.md reports are the constants here (each test prints its own).

mod calicoctl_support;
mod reliability_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use calico_backends::Store;
use calicoctl_support::{dump, Host};
use futures::future::join_all;
use reliability_support::{etcd_cluster::EtcdCluster, etcd_store, SledServer};

const RACERS: usize = 30;
const AUTO_ASSIGNS: usize = 50;
const RULE_WRITERS: usize = 20;

/// One connection per simulated calicoctl process.
type Connect<'a> = Box<dyn Fn() -> futures::future::BoxFuture<'a, Arc<dyn Store>> + 'a>;

async fn hosts(connect: &Connect<'_>, n: usize, prefix: &str) -> Vec<Host> {
    let mut hosts = Vec::new();
    for i in 0..n {
        let host = Host::new(connect().await, &format!("{prefix}{i}"));
        host.ok(&format!("node --ip=172.31.250.{}", i + 1)).await;
        host.workload(&format!("w{i}"));
        hosts.push(host);
    }
    hosts
}

async fn racing_adds_of_one_ip(connect: &Connect<'_>, label: &str) {
    let setup = Host::new(connect().await, "setup");
    setup.ok("pool add 192.168.0.0/16").await;
    let hosts = hosts(connect, RACERS, "race").await;
    let results = join_all(
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| h.try_run_owned(format!("container add w{i} 192.168.1.1"))),
    )
    .await;
    let winners: Vec<usize> = (0..RACERS).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{label}: winners {winners:?}");
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert!(
                e.to_string().contains("192.168.1.1"),
                "{label}: loser {i}'s error does not name the address: {e}"
            );
            assert_eq!(hosts[i].veth_count(), 0, "{label}: loser {i} left a veth");
        }
    }
    let store = connect().await;
    let records = dump(&store).await;
    let endpoints: Vec<_> = records
        .iter()
        .filter(|(k, v)| k.contains("/endpoint/") && v.contains("192.168.1.1/32"))
        .collect();
    assert_eq!(
        endpoints.len(),
        1,
        "{label}: endpoints with the IP: {endpoints:?}"
    );
    let winner = winners[0];
    assert!(
        endpoints[0].0.contains(&format!("/host/race{winner}/")),
        "{label}: the endpoint is not the winner's: {endpoints:?}"
    );
    println!(
        "{label}: {RACERS} racing container adds of 192.168.1.1: 1 winner, {} clean failures",
        RACERS - 1
    );
}

async fn concurrent_auto_assigns(connect: &Connect<'_>, label: &str) {
    let setup = Host::new(connect().await, "setup");
    setup.ok("pool add 192.168.0.0/16").await;
    // Ten hosts with five workloads each: hosts compete for blocks, workloads for addresses.
    let mut hosts = Vec::new();
    for h in 0..10 {
        let host = Host::new(connect().await, &format!("auto{h}"));
        host.ok(&format!("node --ip=172.31.250.{}", h + 1)).await;
        for w in 0..AUTO_ASSIGNS / 10 {
            host.workload(&format!("w{h}_{w}"));
        }
        hosts.push(host);
    }
    let mut runs = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for w in 0..AUTO_ASSIGNS / 10 {
            runs.push(host.try_run_owned(format!("container add w{h}_{w} ipv4")));
        }
    }
    let results = join_all(runs).await;
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failures.is_empty(),
        "{label}: failed auto-assigns: {failures:?}"
    );
    let store = connect().await;
    let ips: Vec<String> = dump(&store)
        .await
        .into_iter()
        .filter(|(k, _)| k.contains("/endpoint/"))
        .map(|(_, v)| {
            let ep: serde_json::Value = serde_json::from_str(&v).unwrap();
            ep["ipv4_nets"][0].as_str().unwrap().to_owned()
        })
        .collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        (ips.len(), distinct.len()),
        (AUTO_ASSIGNS, AUTO_ASSIGNS),
        "{label}: {ips:?}"
    );
    println!("{label}: {AUTO_ASSIGNS} concurrent auto-assigns: {AUTO_ASSIGNS} distinct addresses");
}

async fn concurrent_rule_adds(connect: &Connect<'_>, label: &str) {
    let setup = Host::new(connect().await, "setup");
    setup.ok("profile add SHARED").await;
    let mut hosts = Vec::new();
    for i in 0..RULE_WRITERS {
        hosts.push(Host::new(connect().await, &format!("rules{i}")));
    }
    let results = join_all(hosts.iter().enumerate().map(|(i, h)| {
        h.try_run_owned(format!(
            "profile SHARED rule add inbound allow from tag T{i}"
        ))
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            panic!("{label}: rule add {i} failed: {e}");
        }
    }
    let shown = setup.ok("profile SHARED rule show").await;
    let lost: Vec<usize> = (0..RULE_WRITERS)
        .filter(|i| {
            !shown.contains(&format!("from tag T{i}\n"))
                && !shown.ends_with(&format!("from tag T{i}"))
        })
        .collect();
    assert!(lost.is_empty(), "{label}: rules lost {lost:?}:\n{shown}");
    println!("{label}: {RULE_WRITERS} concurrent rule adds to one profile: 0 lost");
}

fn etcd_connect(cluster: &EtcdCluster) -> Connect<'_> {
    Box::new(move || Box::pin(etcd_store(cluster.endpoints())))
}

fn sled_connect(server: &SledServer) -> Connect<'_> {
    Box::new(move || Box::pin(server.client()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_container_adds_of_one_ip_have_one_winner() {
    if let Some(cluster) = EtcdCluster::start(1).await {
        racing_adds_of_one_ip(&etcd_connect(&cluster), "etcd").await;
    }
    let server = SledServer::start().await;
    racing_adds_of_one_ip(&sled_connect(&server), "sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_auto_assigns_give_distinct_addresses() {
    if let Some(cluster) = EtcdCluster::start(1).await {
        concurrent_auto_assigns(&etcd_connect(&cluster), "etcd").await;
    }
    let server = SledServer::start().await;
    concurrent_auto_assigns(&sled_connect(&server), "sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rule_adds_to_one_profile_lose_none() {
    if let Some(cluster) = EtcdCluster::start(1).await {
        concurrent_rule_adds(&etcd_connect(&cluster), "etcd").await;
    }
    let server = SledServer::start().await;
    concurrent_rule_adds(&sled_connect(&server), "sled").await;
}
