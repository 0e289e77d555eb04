//! Every failing case ends with an error naming the offending thing, and leaves the datastore
//! exactly as it was and no veth behind.

mod calicoctl_support;

use std::sync::atomic::Ordering;

use calico_cli::ctl::CtlError;
use calicoctl_support::{dump, keys, store, Host};

async fn seeded() -> (Host, Host) {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    let h2 = Host::new(store, "host2");
    h1.ok("node --ip=172.31.250.1").await;
    h2.ok("node --ip=172.31.250.2").await;
    h1.workload("workload_A");
    h1.workload("workload_C");
    h2.workload("workload_B");
    (h1, h2)
}

#[tokio::test]
async fn container_add_failures_leave_nothing_behind() {
    let (h1, h2) = seeded().await;
    let err = h1
        .fails(&["container", "add", "workload_A", "10.0.0.1"], "10.0.0.1")
        .await;
    assert!(matches!(err, CtlError::IpNotInPool { .. }), "{err:?}");
    h1.fails(&["container", "add", "nope", "192.168.1.5"], "nope")
        .await;
    h1.fails(
        &["container", "add", "workload_A", "not-an-ip"],
        "not-an-ip",
    )
    .await;
    h1.fails(
        &["container", "add", "workload_A", "10.0.0.0/8"],
        "10.0.0.0/8",
    )
    .await;
    h1.fails(
        &[
            "container",
            "add",
            "workload_A",
            "192.168.1.1",
            "--interface=a;b",
        ],
        "a;b",
    )
    .await;

    h1.ok("container add workload_A 192.168.1.1").await;
    let err = h1
        .fails(
            &["container", "add", "workload_A", "192.168.1.9"],
            "workload_A",
        )
        .await;
    assert!(
        matches!(err, CtlError::AlreadyHasEndpoint { .. }),
        "{err:?}"
    );
    let err = h1
        .fails(
            &["container", "add", "workload_C", "192.168.1.1"],
            "192.168.1.1",
        )
        .await;
    assert!(matches!(err, CtlError::IpInUse { .. }), "{err:?}");
    let err = h2
        .fails(
            &["container", "add", "workload_B", "192.168.1.1"],
            "192.168.1.1",
        )
        .await;
    assert!(matches!(err, CtlError::IpInUse { .. }), "{err:?}");

    // The host has no IPv6 address registered.
    let err = h1
        .fails(&["container", "add", "workload_C", "ipv6"], "host1")
        .await;
    assert!(
        matches!(err, CtlError::NoHostIp { version: 6, .. }),
        "{err:?}"
    );

    // Plumbing fails after IPAM planned the address: nothing is reserved, nothing written.
    h1.plumbing.fail_add.store(true, Ordering::SeqCst);
    let err = h1
        .fails(
            &["container", "add", "workload_C", "192.168.1.3"],
            "injected failure",
        )
        .await;
    assert!(matches!(err, CtlError::Dataplane { .. }), "{err:?}");
    h1.ok("container add workload_C 192.168.1.3").await;
}

#[tokio::test]
async fn profile_failures_name_the_profile() {
    let (h1, _) = seeded().await;
    h1.ok("container add workload_A 192.168.1.1").await;
    let err = h1
        .fails(
            &["container", "workload_A", "profile", "set", "NOPE"],
            "NOPE",
        )
        .await;
    assert!(matches!(err, CtlError::UnknownProfile { .. }), "{err:?}");
    h1.fails(&["container", "ghost", "profile", "set", "X"], "ghost")
        .await;
    for bad in ["a b", "x;rm -rf", "a\"b", "-j ACCEPT", "a'b", ""] {
        let err = h1.fails(&["profile", "add", bad], "").await;
        assert!(
            err.to_string().contains(&format!("{bad:?}")),
            "{bad}: {err}"
        );
        assert!(
            matches!(err, CtlError::InvalidName { .. }),
            "{bad}: {err:?}"
        );
    }
    // Adding it again, or appending it again, succeeds as in the original: see
    // calicoctl_idempotent.rs.
    h1.ok("profile add PROF_A_B").await;
    h1.ok("container workload_A profile set PROF_A_B").await;
    h1.fails(
        &[
            "container",
            "workload_A",
            "profile",
            "set",
            "PROF_A_B",
            "PROF_A_B",
        ],
        "repeated",
    )
    .await;
    let err = h1
        .fails(&["profile", "remove", "PROF_A_B"], "PROF_A_B")
        .await;
    assert!(matches!(err, CtlError::ProfileInUse { .. }), "{err:?}");
    assert!(err.to_string().contains("workload_A"), "{err}");
    h1.fails(&["profile", "PROF_A_B", "tag", "add", "bad tag"], "bad tag")
        .await;
    h1.fails(
        &["profile", "PROF_A_B", "tag", "remove", "missing"],
        "missing",
    )
    .await;
    h1.fails(
        &["profile", "PROF_A_B", "rule", "add", "sideways", "allow"],
        "sideways",
    )
    .await;
    h1.fails(
        &[
            "profile", "PROF_A_B", "rule", "add", "inbound", "allow", "from", "ports", "80",
        ],
        "ports",
    )
    .await;
    h1.fails(
        &["profile", "PROF_A_B", "rule", "remove", "inbound", "--at=9"],
        "#9",
    )
    .await;
    let before = dump(&h1.ctl.store).await;
    let err = h1
        .with_input(
            "profile PROF_A_B rule update",
            r#"{"id":"OTHER","inbound_rules":[],"outbound_rules":[]}"#,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("OTHER"), "{err}");
    let err = h1
        .with_input("profile PROF_A_B rule update", "{not json")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rules JSON"), "{err}");
    assert_eq!(dump(&h1.ctl.store).await, before);
}

#[tokio::test]
async fn usage_errors_name_the_argument() {
    let (h1, _) = seeded().await;
    h1.fails(&["frobnicate"], "frobnicate").await;
    h1.fails(&["pool", "add", "10.0.0.0/8", "--bogus"], "--bogus")
        .await;
    h1.fails(&["pool", "add", "fd00::/64", "--ipip"], "fd00::/64")
        .await;
    h1.fails(
        &["pool", "range", "add", "10.0.0.9", "10.0.0.1"],
        "10.0.0.9",
    )
    .await;
    h1.fails(
        &["pool", "range", "add", "192.168.5.0", "192.168.5.255"],
        "192.168.0.0/16",
    )
    .await;
    h1.fails(&["node", "--ip=300.1.1.1"], "300.1.1.1").await;
    h1.fails(
        &["node", "--ip=10.0.0.1", "--as=99999999999"],
        "99999999999",
    )
    .await;
    h1.fails(&["bgp", "peer", "add", "10.0.0.1", "as", "x"], "x")
        .await;
    h1.fails(&["bgp", "peer", "remove", "10.0.0.77"], "10.0.0.77")
        .await;
    h1.fails(&["bgp", "node-mesh", "maybe"], "maybe").await;
    h1.fails(&["config", "felix", "loglevel", "loud"], "loud")
        .await;
    h1.fails(&["config", "felix", "Unknown", "1"], "Unknown")
        .await;
    h1.fails(&["config", "bgp", "loglevel", "verbose"], "verbose")
        .await;
    h1.fails(&["endpoint", "deadbeef", "profile", "show"], "deadbeef")
        .await;
    h1.fails(&["container", "remove", "ghost"], "ghost").await;
    h1.fails(&["node", "show", "-o", "yaml"], "yaml").await;
}

#[tokio::test]
async fn node_remove_refuses_while_endpoints_exist() {
    let (h1, _) = seeded().await;
    h1.ok("container add workload_A 192.168.1.1").await;
    let err = h1.fails(&["node", "remove"], "host1").await;
    assert!(err.to_string().contains("--remove-endpoints"), "{err}");
    h1.fails(&["node", "stop"], "workload_A").await;
    h1.ok("node stop --force").await;
    h1.ok("node remove --remove-endpoints").await;
    assert_eq!(
        keys(&h1.ctl.store, "/calico/v1/host/host1/").await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys(&h1.ctl.store, "/calico/bgp/v1/host/host1/").await,
        Vec::<String>::new()
    );
    assert_eq!(h1.veth_count(), 0);
    let out = h1.ok("ipam info 192.168.1.1").await;
    assert!(out.contains("not currently assigned"), "{out}");
}

#[tokio::test]
async fn ip_add_rolls_back_when_the_interface_is_missing() {
    let (h1, _) = seeded().await;
    h1.ok("container add workload_A 192.168.1.1").await;
    h1.plumbing.fail_addr.store(true, Ordering::SeqCst);
    h1.fails(
        &["container", "workload_A", "ip", "add", "192.168.1.7"],
        "192.168.1.7",
    )
    .await;
    let out = h1.ok("ipam info 192.168.1.7").await;
    assert!(out.contains("not currently assigned"), "{out}");
    h1.fails(
        &["container", "workload_A", "ip", "remove", "192.168.1.8"],
        "192.168.1.8",
    )
    .await;
}
