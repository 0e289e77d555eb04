//! The typed `Datastore` over `MemStore`: IPAM assignment, affinity, exhaustion and races,
//! plus the single-transaction guarantees of profiles and host registration.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use calico_backends::{AssignRequest, Datastore, DatastoreError, MemStore};
use calico_core::keys::IpVersion;
use calico_core::model::IpPool;

fn ds() -> Datastore {
    Datastore::new(Arc::new(MemStore::new()))
}

async fn dump(ds: &Datastore) -> Vec<(String, Vec<u8>)> {
    let (kvs, _) = ds.store().list("/").await.unwrap();
    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn with_pool(ds: &Datastore, cidr: &str) {
    ds.put_pool(&IpPool::new(cidr.parse().unwrap()))
        .await
        .unwrap();
}

#[tokio::test]
async fn explicit_assign_needs_a_pool_and_a_free_address() {
    let ds = ds();
    with_pool(&ds, "192.168.0.0/16").await;
    let err = ds
        .assign_ip(AssignRequest::Ip(ip("10.0.0.1")), "h1", "host1")
        .await
        .unwrap_err();
    assert!(matches!(err, DatastoreError::IpNotInPool { .. }));
    assert!(err.to_string().contains("10.0.0.1"), "{err}");

    let got = ds
        .assign_ip(AssignRequest::Ip(ip("192.168.1.1")), "h1", "host1")
        .await
        .unwrap();
    assert_eq!(got, ip("192.168.1.1"));
    let before = dump(&ds).await;
    let err = ds
        .assign_ip(AssignRequest::Ip(ip("192.168.1.1")), "h2", "host1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("192.168.1.1"), "{err}");
    assert_eq!(dump(&ds).await, before);

    let info = ds.ipam_info(ip("192.168.1.1")).await.unwrap().unwrap();
    assert_eq!(info.handle_id.as_deref(), Some("h1"));
    assert_eq!(info.block.to_string(), "192.168.1.0/26");
    assert_eq!(info.affinity.as_deref(), Some("host:host1"));
    let keys: Vec<String> = before.into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"/calico/ipam/v2/assignment/ipv4/block/192.168.1.0-26".to_string()));
    assert!(keys.contains(&"/calico/ipam/v2/host/host1/ipv4/block/192.168.1.0-26".to_string()));
    assert!(keys.contains(&"/calico/ipam/v2/handle/h1".to_string()));

    ds.release_ip(ip("192.168.1.1")).await.unwrap();
    assert_eq!(ds.ipam_info(ip("192.168.1.1")).await.unwrap(), None);
    let err = ds.release_ip(ip("192.168.1.1")).await.unwrap_err();
    assert!(matches!(err, DatastoreError::IpNotAssigned { .. }));
    // The handle is gone once it holds nothing.
    assert_eq!(
        ds.store().get("/calico/ipam/v2/handle/h1").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn auto_assign_fills_the_hosts_affine_block_first() {
    let ds = ds();
    with_pool(&ds, "10.1.0.0/16").await;
    let a1 = ds
        .assign_ip(AssignRequest::Auto(IpVersion::V4), "a1", "hostA")
        .await
        .unwrap();
    let b1 = ds
        .assign_ip(AssignRequest::Auto(IpVersion::V4), "b1", "hostB")
        .await
        .unwrap();
    let a2 = ds
        .assign_ip(AssignRequest::Auto(IpVersion::V4), "a2", "hostA")
        .await
        .unwrap();
    assert_eq!(a1, ip("10.1.0.0"));
    assert_eq!(b1, ip("10.1.0.64"), "hostB claims its own block");
    assert_eq!(a2, ip("10.1.0.1"), "hostA stays in its block");
    let info = ds.ipam_info(b1).await.unwrap().unwrap();
    assert_eq!(info.affinity.as_deref(), Some("host:hostB"));
}

#[tokio::test]
async fn auto_assign_by_pool_cidr_and_ipv6() {
    let ds = ds();
    with_pool(&ds, "10.1.0.0/16").await;
    with_pool(&ds, "10.2.0.0/16").await;
    with_pool(&ds, "fd00::/64").await;
    let got = ds
        .assign_ip(
            AssignRequest::Pool("10.2.0.0/16".parse().unwrap()),
            "p",
            "h",
        )
        .await
        .unwrap();
    assert_eq!(got, ip("10.2.0.0"));
    let v6 = ds
        .assign_ip(AssignRequest::Auto(IpVersion::V6), "v6", "h")
        .await
        .unwrap();
    assert_eq!(v6, ip("fd00::"));
    let err = ds
        .assign_ip(
            AssignRequest::Pool("10.3.0.0/16".parse().unwrap()),
            "q",
            "h",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("10.3.0.0/16"), "{err}");
}

#[tokio::test]
async fn a_small_pool_runs_out_and_borrows_across_hosts() {
    let ds = ds();
    with_pool(&ds, "10.9.0.0/29").await;
    let mut got = BTreeSet::new();
    for i in 0..8 {
        let host = if i % 2 == 0 { "h1" } else { "h2" };
        let a = ds
            .assign_ip(AssignRequest::Auto(IpVersion::V4), &format!("x{i}"), host)
            .await
            .unwrap();
        assert!(
            "10.9.0.0/29".parse::<ipnet::IpNet>().unwrap().contains(&a),
            "{a}"
        );
        got.insert(a);
    }
    assert_eq!(got.len(), 8);
    let before = dump(&ds).await;
    let err = ds
        .assign_ip(AssignRequest::Auto(IpVersion::V4), "x9", "h1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatastoreError::PoolsExhausted { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("10.9.0.0/29"), "{err}");
    assert_eq!(dump(&ds).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_auto_assigns_on_two_hosts_never_collide() {
    let ds = ds();
    with_pool(&ds, "10.5.0.0/26").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ds = ds.clone();
        tasks.push(tokio::spawn(async move {
            let host = if i % 2 == 0 { "h1" } else { "h2" };
            ds.assign_ip(AssignRequest::Auto(IpVersion::V4), &format!("c{i}"), host)
                .await
        }));
    }
    let mut seen = BTreeSet::new();
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert!(seen.insert(a), "{a} handed out twice");
    }
    assert_eq!(seen.len(), 40);
    for a in &seen {
        assert!(
            ds.ipam_info(*a).await.unwrap().is_some(),
            "{a} not recorded"
        );
    }
}

#[tokio::test]
async fn profile_create_is_one_transaction_and_refuses_duplicates() {
    let ds = ds();
    ds.create_profile("PROF_A_B").await.unwrap();
    let tags = ds
        .store()
        .get("/calico/v1/policy/profile/PROF_A_B/tags")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags.value, br#"["PROF_A_B"]"#);
    let rules = ds
        .store()
        .get("/calico/v1/policy/profile/PROF_A_B/rules")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags.mod_revision, rules.mod_revision, "written in one txn");
    let err = ds.create_profile("PROF_A_B").await.unwrap_err();
    assert!(matches!(err, DatastoreError::ProfileExists { .. }));
    let err = ds.create_profile("a b").await.unwrap_err();
    assert!(err.to_string().contains("a b"), "{err}");
    ds.remove_profile("PROF_A_B", true).await.unwrap();
    assert_eq!(dump(&ds).await, Vec::new());
}

#[tokio::test]
async fn global_defaults_are_written_only_when_absent() {
    let ds = ds();
    ds.set_default_as("65000".parse().unwrap()).await.unwrap();
    ds.ensure_global_config().await.unwrap();
    assert_eq!(ds.default_as().await.unwrap().0, 65000);
    assert!(ds.node_mesh().await.unwrap());
    assert_eq!(
        ds.felix_config("InterfacePrefix").await.unwrap().as_deref(),
        Some("cali")
    );
    let ready = ds.store().get("/calico/v1/Ready").await.unwrap().unwrap();
    assert_eq!(ready.value, b"true");
    let created = ds.ensure_default_pools().await.unwrap();
    assert_eq!(created.len(), 2);
    assert_eq!(ds.ensure_default_pools().await.unwrap(), Vec::new());
}
