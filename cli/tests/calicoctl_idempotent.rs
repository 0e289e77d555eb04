//! The original's idempotent cases: asking for a state that already holds prints a message,
//! changes nothing and succeeds (scripts written for it under `set -e` rely on exit 0). The
//! refusals next to them still fail.

mod calicoctl_support;

use calicoctl_support::{dump, store, value, Host};

async fn seeded() -> Host {
    let h1 = Host::new(store(), "host1");
    h1.ok("node --ip=172.31.250.1").await;
    h1.workload("workload_A");
    h1.ok("container add workload_A 192.168.1.1").await;
    h1.ok("profile add PROF_A").await;
    h1.ok("container workload_A profile set PROF_A").await;
    h1
}

/// Runs `line`, which must succeed with exactly `expected` and leave the store as it was.
async fn no_op(h: &Host, line: &str, expected: &str) {
    let before = dump(&h.ctl.store).await;
    assert_eq!(h.ok(line).await, expected, "output of {line}");
    assert_eq!(dump(&h.ctl.store).await, before, "{line} changed the store");
}

#[tokio::test]
async fn repeated_adds_and_removes_of_what_is_gone_exit_zero() {
    let h1 = seeded().await;
    no_op(
        &h1,
        "profile add PROF_A",
        "Profile PROF_A already exists.\n",
    )
    .await;
    no_op(
        &h1,
        "profile PROF_A tag add PROF_A",
        "Tag PROF_A is already on profile PROF_A\n",
    )
    .await;
    no_op(&h1, "profile remove NOPE", "Profile NOPE not found.\n").await;
    no_op(
        &h1,
        "pool remove 10.9.0.0/16",
        "10.9.0.0/16 is not a configured pool.\n",
    )
    .await;
    no_op(
        &h1,
        "ipam release 192.168.7.7",
        "IP address 192.168.7.7 is not currently assigned; nothing to release\n",
    )
    .await;
    no_op(
        &h1,
        "container workload_A profile append PROF_A",
        "Profile PROF_A is already in endpoint profile list\n",
    )
    .await;
    h1.ok("profile add PROF_B").await;
    no_op(
        &h1,
        "container workload_A profile remove PROF_B",
        "Profile PROF_B is not in endpoint profile list\n",
    )
    .await;
    h1.workload("workload_C");
    no_op(
        &h1,
        "container remove workload_C",
        "Failed to find Calico data for workload_C\n",
    )
    .await;
    // `node` wrote LogSeverityScreen; the second removal finds nothing.
    h1.ok("config felix loglevel --remove").await;
    no_op(
        &h1,
        "config felix loglevel --remove",
        "No value configured\n",
    )
    .await;
    no_op(&h1, "config bgp loglevel --remove", "No value configured\n").await;
    no_op(
        &h1,
        "config node bgp loglevel --remove",
        "No value configured\n",
    )
    .await;
}

#[tokio::test]
async fn pool_remove_reports_unknown_cidrs_and_removes_the_rest() {
    let h1 = seeded().await;
    h1.ok("pool add 10.8.0.0/16").await;
    let out = h1.ok("pool remove 10.9.0.0/16 10.8.0.0/16").await;
    assert_eq!(
        out,
        "10.9.0.0/16 is not a configured pool.\nRemoved pool 10.8.0.0/16\n"
    );
    assert_eq!(
        value(&h1.ctl.store, "/calico/v1/ipam/v4/pool/10.8.0.0-16").await,
        None
    );
}

#[tokio::test]
async fn refusals_still_fail() {
    let h1 = seeded().await;
    // Not idempotent in the original either: each names what is wrong and exits 1.
    h1.fails(&["profile", "PROF_A", "tag", "remove", "nope"], "nope")
        .await;
    h1.fails(&["profile", "remove", "PROF_A"], "workload_A")
        .await;
    h1.fails(&["bgp", "peer", "remove", "10.0.0.77"], "10.0.0.77")
        .await;
    h1.fails(
        &["container", "workload_A", "profile", "append", "NOPE"],
        "NOPE",
    )
    .await;
    h1.fails(&["profile", "add", "bad name"], "bad name").await;
}

#[tokio::test]
async fn config_bgp_shows_sets_and_removes() {
    let store = store();
    let h1 = Host::new(store.clone(), "host1");
    assert_eq!(h1.ok("config bgp loglevel").await, "No value configured\n");
    h1.ok("config bgp loglevel debug").await;
    assert_eq!(h1.ok("config bgp loglevel").await, "debug\n");
    assert_eq!(
        h1.ok("config bgp loglevel -o json").await,
        "{\n  \"loglevel\": \"debug\"\n}\n"
    );
    h1.ok("config node bgp loglevel none").await;
    assert_eq!(h1.ok("config node bgp loglevel").await, "none\n");
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/loglevel")
            .await
            .as_deref(),
        Some("none")
    );
    assert_eq!(
        h1.ok("config node bgp loglevel --remove").await,
        "Value removed\n"
    );
    assert_eq!(
        value(&store, "/calico/bgp/v1/host/host1/loglevel").await,
        None
    );
    // The global value is untouched by the node's removal.
    assert_eq!(h1.ok("config bgp loglevel").await, "debug\n");
    assert_eq!(
        h1.ok("config bgp loglevel --remove").await,
        "Value removed\n"
    );
    assert_eq!(value(&store, "/calico/bgp/v1/global/loglevel").await, None);

    h1.fails(&["config", "bgp", "loglevel", "loud"], "loud")
        .await;
    h1.fails(&["config", "bgp", "colour"], "colour").await;
    h1.fails(
        &["config", "node", "bgp", "loglevel", "debug", "--remove"],
        "debug",
    )
    .await;
    assert_eq!(
        h1.ok("config felix loglevel").await,
        "No value configured\n"
    );
}
