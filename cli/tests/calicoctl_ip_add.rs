//! `container <C> ip add ipv4|ipv6|<pool CIDR>` assigns like `container add` (calico-containers
//! v0.20 test_manage_pools), and `container <C> endpoint-id show` prints the bare id. Every
//! failure leaves the whole store listing as it was.

mod calicoctl_support;

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use calico_cli::ctl::CtlError;
use calicoctl_support::{dump, store, Host};
use ipnet::IpNet;

async fn one_workload() -> Host {
    let h1 = Host::new(store(), "host1");
    h1.ok("node --ip=172.31.250.1 --ip6=fd10::1").await;
    h1.workload("workload_A");
    h1.ok("container add workload_A 192.168.1.1").await;
    h1
}

/// The address `ip add` reported.
fn added(out: &str) -> IpAddr {
    let ip = out
        .strip_prefix("IP ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    ip.parse().unwrap()
}

#[tokio::test]
async fn ip_add_ipv4_takes_an_address_from_a_new_pool() {
    let h1 = one_workload().await;
    // test_manage_pools: remove the only pool, add a new one, ip add ipv4 uses it.
    h1.ok("pool remove 192.168.0.0/16").await;
    h1.ok("pool add 10.7.0.0/24").await;
    let ip = added(&h1.ok("container workload_A ip add ipv4").await);
    let pool: IpNet = "10.7.0.0/24".parse().unwrap();
    assert!(pool.contains(&ip), "{ip} is not in {pool}");
    let net = IpNet::from(ip);
    assert!(h1.plumbing.addrs("workload_A", "eth1").contains(&net));
    let shown = h1.ok("container workload_A endpoint show").await;
    assert!(shown.contains(&format!("192.168.1.1/32,{net}")), "{shown}");
    let info = h1.ok(&format!("ipam info {ip}")).await;
    assert!(info.contains("is assigned"), "{info}");

    // A pool CIDR asks for an address of exactly that pool.
    h1.ok("pool add 10.8.0.0/24").await;
    let ip = added(&h1.ok("container workload_A ip add 10.8.0.0/24").await);
    assert!(
        "10.8.0.0/24".parse::<IpNet>().unwrap().contains(&ip),
        "{ip}"
    );

    // IPv6 from the default v6 pool the node created.
    let ip = added(&h1.ok("container workload_A ip add ipv6").await);
    assert!(ip.is_ipv6(), "{ip}");
    assert!(h1
        .plumbing
        .addrs("workload_A", "eth1")
        .contains(&IpNet::from(ip)));
}

#[tokio::test]
async fn ip_add_failures_leave_the_store_as_it_was() {
    let h1 = one_workload().await;
    h1.ok("pool remove 192.168.0.0/16").await;
    // No IPv4 pool at all.
    let err = h1
        .fails(&["container", "workload_A", "ip", "add", "ipv4"], "IPv4")
        .await;
    assert!(
        matches!(&err, CtlError::Datastore(_)),
        "{err:?}: expected the datastore's no-pool error"
    );
    // A CIDR that is no pool.
    h1.fails(
        &["container", "workload_A", "ip", "add", "10.9.0.0/24"],
        "10.9.0.0/24",
    )
    .await;
    // A container without an endpoint, and one that does not exist.
    h1.workload("workload_C");
    h1.fails(
        &["container", "workload_C", "ip", "add", "ipv4"],
        "workload_C",
    )
    .await;
    h1.fails(&["container", "ghost", "ip", "add", "ipv4"], "ghost")
        .await;
    h1.fails(&["container", "workload_A", "ip", "add", "ipv5"], "ipv5")
        .await;

    // The kernel refuses the address: reservation and endpoint change are undone. The pool
    // already has this host's block, so the undo leaves exactly the listing before.
    h1.ok("pool add 10.7.0.0/24").await;
    h1.ok("container workload_A ip add ipv4").await;
    h1.plumbing.fail_addr.store(true, Ordering::SeqCst);
    let before = dump(&h1.ctl.store).await;
    h1.fails(&["container", "workload_A", "ip", "add", "ipv4"], "eth1")
        .await;
    assert_eq!(dump(&h1.ctl.store).await, before);
}

#[tokio::test]
async fn endpoint_id_show_prints_the_bare_id() {
    let h1 = one_workload().await;
    let shown = h1.ok("container workload_A endpoint show -o json").await;
    let list: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let id = list[0]["endpoint_id"].as_str().unwrap().to_string();
    assert_eq!(
        h1.ok("container workload_A endpoint-id show").await,
        format!("{id}\n")
    );
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(
        h1.ok("container workload_A endpoint-id show -o json").await,
        format!("[\n  \"{id}\"\n]\n")
    );
    h1.workload("workload_C");
    let err = h1
        .fails(
            &["container", "workload_C", "endpoint-id", "show"],
            "workload_C",
        )
        .await;
    assert!(matches!(err, CtlError::NoEndpoint { .. }), "{err:?}");
}

/// The workload's default route of `v6`'s family, as (next hop, device).
fn default_route(h: &Host, ns: &str, v6: bool) -> Option<(IpAddr, String)> {
    let default: IpNet = if v6 { "::/0" } else { "0.0.0.0/0" }.parse().unwrap();
    h.plumbing
        .sim
        .routes(ns)
        .into_iter()
        .find(|r| r.dst == default)
        .map(|r| (r.via.unwrap(), r.dev.unwrap()))
}

#[tokio::test]
async fn a_first_address_of_a_family_brings_its_default_route() {
    // Our departure from the original, whose `ip add` added no route (a TODO there): a
    // dual-stack workload made with `ip add` must be able to answer on its second family.
    let h1 = one_workload().await;
    let v4_before = default_route(&h1, "workload_A", false);
    assert_eq!(
        v4_before,
        Some(("172.31.250.1".parse().unwrap(), "eth1".to_string()))
    );
    assert_eq!(default_route(&h1, "workload_A", true), None);
    h1.ok("container workload_A ip add fd80:24e2:f998:72d6::7")
        .await;
    assert_eq!(
        default_route(&h1, "workload_A", true),
        Some(("fd10::1".parse().unwrap(), "eth1".to_string())),
        "the endpoint's ipv6_gateway becomes the v6 default route"
    );
    assert_eq!(default_route(&h1, "workload_A", false), v4_before);
    let endpoint = dump(&h1.ctl.store)
        .await
        .into_iter()
        .find(|(k, _)| k.contains("/endpoint/"))
        .map(|(_, v)| v)
        .unwrap();
    assert!(
        endpoint.contains(r#""ipv6_gateway":"fd10::1""#),
        "the proxy-NDP target is recorded: {endpoint}"
    );
}
