//! Undecodable datastore records: the agent says which key and why, counts it in
//! `calico_node_invalid_records_total`, and treats the record as absent (Felix's rule), so a
//! local endpoint whose record breaks drops all its traffic while its neighbours carry on.
//! MemStore + SimDataplane, stepped.

mod agent_support;

use std::net::IpAddr;
use std::sync::Arc;

use agent_support::*;
use calico_backends::{MemStore, Store};
use calico_dataplane::sim::trace::HostOutcome;
use calico_dataplane::sim::{Packet, SimDataplane};

const A: &str = "192.168.1.1";
const C: &str = "192.168.1.3";
const D: &str = "192.168.1.4";

/// host1 with local workloads A, C and D sharing a profile, and remote B.
async fn seeded() -> (Arc<MemStore>, SimDataplane) {
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    add_profile(store.as_ref(), "PROF").await;
    add_local_endpoint(store.as_ref(), &sim, "A", A, &["PROF"]).await;
    add_local_endpoint(store.as_ref(), &sim, "C", C, &["PROF"]).await;
    add_local_endpoint(store.as_ref(), &sim, "D", D, &["PROF"]).await;
    add_endpoint(store.as_ref(), "host2", "B", "192.168.1.2", &["PROF"]).await;
    // The workloads send with the MAC their endpoints declare, so the source MAC check passes.
    for workload in ["A", "C", "D"] {
        let mac = "ee:ee:ee:ee:ee:01".parse().unwrap();
        sim.set_link_mac(workload, "eth0", mac).unwrap();
    }
    (store, sim)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether a ping from workload `from` (its namespace) reaches `to`'s namespace.
fn ping_delivered(sim: &SimDataplane, from: &str, src: &str, to: &str, dst: &str) -> bool {
    match sim.send_from_namespace(from, Packet::ping(ip(src), ip(dst), 7)) {
        HostOutcome::Delivered { ns, .. } => ns == to,
        other => {
            eprintln!("{from} -> {to}: {other:?}");
            false
        }
    }
}

#[tokio::test]
async fn a_garbage_endpoint_record_is_reported_counted_and_its_traffic_dropped() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    agent.poll_once().await.unwrap();
    assert!(ping_delivered(&sim, "A", A, "C", C), "A reaches C before");
    assert!(ping_delivered(&sim, "C", C, "A", A), "C reaches A before");
    assert_eq!(agent.metrics().snapshot().invalid_records, 0);

    store
        .put(&endpoint_key(HOST, "A"), b"garbage".to_vec())
        .await
        .unwrap();
    let outcome = agent.poll_once().await.unwrap();
    assert!(outcome.changed(), "A's record counts as absent");

    let m = agent.metrics().snapshot();
    assert_eq!((m.invalid_records, m.errors, m.endpoints), (1, 0, 2));
    assert!(
        agent
            .metrics()
            .render()
            .lines()
            .any(|l| l == "calico_node_invalid_records_total 1"),
        "{}",
        agent.metrics().render()
    );
    // A's traffic is dropped both ways; C and D are unaffected.
    assert!(!ping_delivered(&sim, "A", A, "C", C), "A is cut off");
    assert!(!ping_delivered(&sim, "C", C, "A", A), "nothing reaches A");
    assert!(ping_delivered(&sim, "C", C, "D", D), "C still reaches D");
    assert!(ping_delivered(&sim, "D", D, "C", C), "D still reaches C");
    // What is programmed is what compute makes of the store (A absent).
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    // A fresh snapshot (a restart) reports it again and programs the same.
    let mut restarted = agent_support::agent(store.clone(), sim.clone());
    let again = restarted.start().await.unwrap();
    assert!(!again.changed(), "{:?}", again.changes);
    assert_eq!(restarted.metrics().snapshot().invalid_records, 1);

    // A valid record again restores A.
    add_endpoint(store.as_ref(), HOST, "A", A, &["PROF"]).await;
    agent.poll_once().await.unwrap();
    assert!(
        ping_delivered(&sim, "A", A, "C", C),
        "A reaches C after repair"
    );
    assert_eq!(agent.metrics().snapshot().invalid_records, 1);
}

#[tokio::test]
async fn broken_rules_tags_and_pools_are_counted_and_rules_drop_their_endpoints() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    agent.poll_once().await.unwrap();
    assert!(ping_delivered(&sim, "A", A, "C", C));

    for (key, value) in [
        (
            "/calico/v1/policy/profile/PROF/rules",
            &b"{\"inbound_rules\": 3"[..],
        ),
        ("/calico/v1/policy/profile/PROF/tags", b"[1, 2]"),
        ("/calico/v1/ipam/v4/pool/192.168.0.0-16", b"\xff\xfe"),
    ] {
        store.put(key, value.to_vec()).await.unwrap();
    }
    agent.poll_once().await.unwrap();
    assert_eq!(agent.metrics().snapshot().invalid_records, 3);
    // A profile without valid rules is a DROP stub for every endpoint using it.
    assert!(!ping_delivered(&sim, "A", A, "C", C));
    assert!(!ping_delivered(&sim, "C", C, "D", D));
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
}

#[tokio::test]
async fn a_bad_failsafe_list_is_counted_and_the_default_ports_stay() {
    let (store, sim) = seeded().await;
    store
        .put(
            &format!("/calico/v1/host/{HOST}/endpoint/eth0"),
            br#"{"name": "eth0"}"#.to_vec(),
        )
        .await
        .unwrap();
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    agent.poll_once().await.unwrap();
    let failsafe_out = |sim: &SimDataplane| {
        let observed = sim.observe_now();
        let filter = &observed.tables
            [&calico_core::compute::filter_table(calico_core::iptables::IpFamily::V4)];
        filter.chains["cali-failsafe-out"].rules.len()
    };
    let defaults = calico_core::compute::config::DEFAULT_FAILSAFE_OUTBOUND.len();
    assert_eq!(failsafe_out(&sim), defaults);

    store
        .put(
            "/calico/v1/config/FailsafeOutboundHostPorts",
            b"tcp:2379,udp:dns".to_vec(),
        )
        .await
        .unwrap();
    agent.poll_once().await.unwrap();
    assert_eq!(agent.metrics().snapshot().invalid_records, 1);
    assert_eq!(failsafe_out(&sim), defaults, "the default list stays");

    store
        .put(
            "/calico/v1/config/FailsafeOutboundHostPorts",
            b"tcp:2379".to_vec(),
        )
        .await
        .unwrap();
    agent.poll_once().await.unwrap();
    assert_eq!(failsafe_out(&sim), 1, "a valid list replaces the default");
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
}
