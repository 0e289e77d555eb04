//! An endpoint whose interface does not exist (its container died without `container
//! remove`, or its veth is not there yet) holds up nothing else on the host: the rest is
//! programmed, the interface is reported as waiting (log, gauge), and the endpoint is
//! programmed at a later step once the interface appears. MemStore + SimDataplane, stepped.

mod agent_support;
mod calicoctl_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use agent_support::*;
use calico_backends::MemStore;
use calico_core::desired::Route;
use calico_dataplane::sim::SimDataplane;

fn route_to(ip: &str, workload: &str) -> Route {
    Route {
        dst: format!("{ip}/32").parse().unwrap(),
        dev: iface(workload),
    }
}

async fn seeded() -> (Arc<MemStore>, SimDataplane) {
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    add_profile(store.as_ref(), "PROF").await;
    add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &["PROF"]).await;
    // X's record is written, but its veth was never made.
    add_endpoint(store.as_ref(), HOST, "X", "192.168.1.9", &["PROF"]).await;
    (store, sim)
}

#[tokio::test]
async fn a_missing_interface_waits_while_the_rest_is_programmed() {
    let (store, sim) = seeded().await;
    let desired = expected(store.as_ref()).await;
    let report = sim.apply_now(&desired).unwrap();
    assert_eq!(report.waiting, BTreeSet::from([iface("X")]));
    let routes = sim.observe_now().routes;
    assert!(routes.contains(&route_to("192.168.1.1", "A")), "{routes:?}");
    assert!(
        !routes.contains(&route_to("192.168.1.9", "X")),
        "{routes:?}"
    );
    // X's chains are installed all the same: its traffic is policed the moment it appears.
    let chains = &sim.observe_now().tables;
    assert_eq!(chains, &desired.tables);
}

#[tokio::test]
async fn the_agent_reports_the_waiting_interface_and_programs_it_once_it_appears() {
    let (store, sim) = seeded().await;
    let mut agent = agent(store.clone(), sim.clone());
    let outcome = agent.start().await.unwrap();
    assert!(outcome.changed());
    assert_eq!(
        agent.waiting_interfaces(),
        &BTreeSet::from([iface("X")]),
        "X is waiting"
    );
    let m = agent.metrics().snapshot();
    assert_eq!((m.errors, m.waiting_interfaces), (0, 1));
    assert!(sim
        .observe_now()
        .routes
        .contains(&route_to("192.168.1.1", "A")));

    // Nothing changed in the datastore: a step retries and still waits.
    let idle = agent.poll_once().await.unwrap();
    assert!(!idle.changed(), "{:?}", idle.changes);
    assert_eq!(agent.metrics().snapshot().waiting_interfaces, 1);

    // The veth appears: the next step programs X without any datastore event.
    plumb(&sim, "X", "192.168.1.9").await;
    let outcome = agent.poll_once().await.unwrap();
    assert_eq!(outcome.events, 0);
    assert!(outcome.changed());
    assert!(agent.waiting_interfaces().is_empty());
    assert_eq!(agent.metrics().snapshot().waiting_interfaces, 0);
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    // Settled: nothing more to do.
    assert!(!agent.poll_once().await.unwrap().changed());
}

/// `calicoctl status` on host1 (same store), as text.
async fn calicoctl_status(store: Arc<MemStore>) -> String {
    let store: Arc<dyn calico_backends::Store> = store;
    let host = calicoctl_support::Host::new(store, HOST);
    host.ok("status").await
}

#[tokio::test(start_paused = true)]
async fn calicoctl_status_lists_the_waiting_interface_until_it_appears() {
    let (store, sim) = seeded().await;
    let agent = agent(store.clone(), sim.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut agent = agent;
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    // The paused clock runs the loop until it idles on its timers.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let text = calicoctl_status(store.clone()).await;
    assert!(
        text.contains("Waiting interfaces") && text.contains(&iface("X")),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.contains(&iface("X")))
        .unwrap_or_default();
    assert!(row.contains("epX") && row.contains('X'), "{text}");
    assert!(!text.contains(&iface("A")), "{text}");

    // The veth appears: the agent programs it and rewrites its record at once (the
    // reporting interval is 30 s; the next tick is far away).
    plumb(&sim, "X", "192.168.1.9").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let text = calicoctl_status(store.clone()).await;
    assert!(!text.contains("Waiting interfaces"), "{text}");
    stop.send(()).unwrap();
    task.await.unwrap();
}
