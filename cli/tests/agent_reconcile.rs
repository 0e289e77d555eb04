//! The reconcile loop, stepped: snapshot, watch batches, broken watches, drift repair,
//! restart without disruption, dry run. MemStore + SimDataplane; no clock involved.

mod agent_support;

use std::sync::Arc;

use agent_support::*;
use calico_backends::{MemStore, Store};
use calico_cli::agent::{Agent, AgentConfig};
use calico_core::desired::Route;
use calico_core::iptables::{IpFamily, Table};
use calico_dataplane::sim::SimDataplane;
use calico_dataplane::{Change, Dataplane};

/// A registered host1 with local workload A and remote workload B sharing a profile.
async fn seeded() -> (Arc<MemStore>, SimDataplane) {
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    add_profile(store.as_ref(), "PROF_A_B").await;
    add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &["PROF_A_B"]).await;
    add_endpoint(store.as_ref(), "host2", "B", "192.168.1.2", &["PROF_A_B"]).await;
    (store, sim)
}

fn route_to(ip: &str, workload: &str) -> Route {
    Route {
        dst: format!("{ip}/32").parse().unwrap(),
        dev: iface(workload),
    }
}

#[tokio::test]
async fn snapshot_converges_to_compute() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    let outcome = agent.start().await.unwrap();
    assert!(outcome.resnapshot);
    assert!(outcome.changed(), "the first apply installs something");
    let expected = expected(store.as_ref()).await;
    assert!(expected.routes.contains(&route_to("192.168.1.1", "A")));
    assert_eq!(agent.desired(), Some(&expected));
    assert_eq!(sim.observe_now(), expected);
    assert_eq!(agent.revision(), store.revision());
    // Nothing more is pending: a poll consumes only the in-sync marker and changes nothing.
    let idle = agent.poll_once().await.unwrap();
    assert_eq!((idle.events, idle.changed()), (1, false));
    let m = agent.metrics().snapshot();
    assert_eq!((m.applies, m.endpoints, m.errors), (1, 1, 0));
}

#[tokio::test]
async fn watch_events_are_applied_in_batches() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    agent.poll_once().await.unwrap();

    add_local_endpoint(store.as_ref(), &sim, "C", "192.168.1.3", &["PROF_A_B"]).await;
    add_local_endpoint(store.as_ref(), &sim, "D", "192.168.1.4", &[]).await;
    let outcome = agent.poll_once().await.unwrap();
    assert_eq!(outcome.events, 2, "both writes land in one batch");
    assert!(outcome.changed());
    let routes = sim.observe_now().routes;
    assert!(routes.contains(&route_to("192.168.1.3", "C")), "{routes:?}");
    assert!(routes.contains(&route_to("192.168.1.4", "D")), "{routes:?}");
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
    assert_eq!(agent.metrics().snapshot().endpoints, 3);

    // A remote endpoint changes the tag ipset, not this host's routes.
    add_endpoint(store.as_ref(), "host2", "E", "192.168.1.5", &["PROF_A_B"]).await;
    assert!(agent.poll_once().await.unwrap().changed());
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    // Deleting an endpoint removes its route.
    store.delete(&endpoint_key(HOST, "C"), None).await.unwrap();
    assert!(agent.poll_once().await.unwrap().changed());
    assert!(!sim
        .observe_now()
        .routes
        .contains(&route_to("192.168.1.3", "C")));
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    // A write the policy does not depend on (an IPAM handle) changes nothing. (A block
    // affinity does: BIRD announces the host's blocks.)
    store
        .put(
            "/calico/ipam/v2/handle/h1",
            br#"{"id":"h1","block":{}}"#.to_vec(),
        )
        .await
        .unwrap();
    let outcome = agent.poll_once().await.unwrap();
    assert_eq!((outcome.events, outcome.changed()), (1, false));
}

#[tokio::test]
async fn a_compacted_watch_triggers_a_fresh_snapshot_that_converges() {
    let store = Arc::new(BreakableStore::default());
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    add_profile(store.as_ref(), "P").await;
    let sim = sim();
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();

    // Writes happen, then the history is compacted and the agent's watch fails with them
    // still queued: the agent must not rely on them but re-list.
    add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &["P"]).await;
    store
        .delete("/calico/v1/policy/profile/P/rules", None)
        .await
        .unwrap();
    store.break_watches();
    let outcome = agent.poll_once().await.unwrap();
    assert!(outcome.resnapshot, "{outcome:?}");
    assert_eq!(agent.revision(), store.inner.revision());
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
    assert_eq!(agent.metrics().snapshot().resyncs, 1);

    // The new watch follows later writes.
    add_local_endpoint(store.as_ref(), &sim, "B", "192.168.1.2", &["P"]).await;
    let outcome = agent.poll_once().await.unwrap();
    assert!(!outcome.resnapshot && outcome.changed(), "{outcome:?}");
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
}

#[tokio::test]
async fn resync_repairs_drift_made_behind_the_agents_back() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    let good = sim.observe_now();

    assert!(!agent.resync().await.unwrap().changed(), "no drift yet");

    assert!(sim.flush_chain(IpFamily::V4, Table::Filter, "cali-FORWARD"));
    assert!(sim.delete_route(
        calico_dataplane::sim::ROOT_NS,
        "192.168.1.1/32".parse().unwrap()
    ));
    assert_ne!(sim.observe_now(), good);
    let repaired = agent.resync().await.unwrap();
    assert!(repaired.changed(), "{repaired:?}");
    assert_eq!(sim.observe_now(), good);
    assert!(
        !agent.resync().await.unwrap().changed(),
        "repaired for good"
    );
    assert_eq!(agent.metrics().snapshot().resyncs, 3);
}

#[tokio::test]
async fn a_restarted_agent_changes_nothing_on_a_converged_host() {
    let (store, sim) = seeded().await;
    let mut first = agent(store.clone(), sim.clone());
    first.start().await.unwrap();
    let before = sim.observe_now();
    let saved_filter = sim.iptables_save(IpFamily::V4, Table::Filter);
    drop(first);

    // A new agent on the same kernel: its first apply must be empty — no flush, no
    // rewrite — so established flows keep their rules.
    let mut second = agent(store.clone(), sim.clone());
    let outcome = second.start().await.unwrap();
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
    assert_eq!(sim.observe_now(), before);
    assert_eq!(sim.iptables_save(IpFamily::V4, Table::Filter), saved_filter);

    // The handed-back dataplane is the same kernel, left as it was.
    let mut kept = second.into_dataplane();
    assert_eq!(kept.observe().await.unwrap(), before);
}

#[tokio::test]
async fn dry_run_plans_but_changes_nothing() {
    let (store, sim) = seeded().await;
    let untouched = sim.observe_now();
    let config = AgentConfig {
        dry_run: true,
        ..AgentConfig::default()
    };
    let mut agent = Agent::new(store.clone(), sim.clone(), HOST.to_owned(), config);
    let planned = agent.start().await.unwrap();
    assert!(planned.changed(), "the plan lists what a real run would do");
    assert!(
        planned
            .changes
            .iter()
            .any(|c| matches!(c, Change::AddRoute(_))),
        "{:?}",
        planned.changes
    );
    add_local_endpoint(store.as_ref(), &sim, "C", "192.168.1.3", &[]).await;
    agent.poll_once().await.unwrap();
    agent.resync().await.unwrap();
    assert_eq!(sim.observe_now(), untouched);
    assert_eq!(agent.metrics().snapshot().applies, 0);
}

#[tokio::test]
async fn deleting_ready_drops_the_watch_and_leaves_the_dataplane_alone() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    let installed = sim.observe_now();

    store.delete("/calico/v1/Ready", None).await.unwrap();
    store.delete(&endpoint_key(HOST, "A"), None).await.unwrap();
    let outcome = agent.poll_once().await.unwrap();
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
    assert_eq!(sim.observe_now(), installed, "nothing is torn down");

    // Until Ready is back, steps idle.
    let idle = agent.poll_once().await.unwrap();
    assert_eq!(idle, Default::default());

    // Then the next step snapshots again and converges on what the datastore now says.
    set_ready(store.as_ref()).await;
    let outcome = agent.poll_once().await.unwrap();
    assert!(outcome.resnapshot && outcome.changed(), "{outcome:?}");
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
    assert!(!sim
        .observe_now()
        .routes
        .contains(&route_to("192.168.1.1", "A")));
}

#[tokio::test]
async fn every_queued_event_is_seen_by_a_stepped_agent() {
    // Many steps in one task without yielding: tokio's cooperative budget must not make a
    // queued event look absent (the simulator steps agents exactly like this).
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    agent.start().await.unwrap();
    agent.poll_once().await.unwrap();
    for i in 0..300 {
        store
            .put(
                "/calico/v1/config/SomethingUnrelated",
                i.to_string().into_bytes(),
            )
            .await
            .unwrap();
        let outcome = agent.poll_once().await.unwrap();
        assert_eq!(outcome.events, 1, "step {i}");
    }
}

#[tokio::test]
async fn a_stepped_agent_idles_until_ready() {
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &[]).await;
    let untouched = sim.observe_now();
    let mut agent = agent(store.clone(), sim.clone());
    for _ in 0..3 {
        assert_eq!(agent.poll_once().await.unwrap(), Default::default());
    }
    assert_eq!(sim.observe_now(), untouched);
    set_ready(store.as_ref()).await;
    assert!(agent.poll_once().await.unwrap().resnapshot);
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
}
