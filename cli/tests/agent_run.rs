//! The long-running loop on tokio's paused clock: it waits for Ready, follows writes,
//! reports status, repairs drift on its resync timer and stops on shutdown leaving the
//! dataplane as it is. Sleeps here advance the paused clock, not wall time.

mod agent_support;

use std::sync::Arc;
use std::time::Duration;

use agent_support::*;
use calico_backends::{MemStore, Store};
use calico_cli::agent::{Agent, AgentConfig};
use calico_core::iptables::{IpFamily, Table};
use calico_dataplane::sim::SimDataplane;
use tokio::sync::oneshot;

/// Spawns `agent.run` until the returned sender fires; the task hands the agent back.
fn spawn_run(
    mut agent: Agent<SimDataplane>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Agent<SimDataplane>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await;
        agent
    });
    (stop, task)
}

async fn status_of(store: &dyn Store, record: &str) -> serde_json::Value {
    let kv = store
        .get(&format!("/calico/felix/v1/host/{HOST}/{record}"))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {record} record"));
    serde_json::from_slice(&kv.value).unwrap()
}

#[tokio::test(start_paused = true)]
async fn run_waits_for_ready_follows_writes_reports_and_repairs_drift() {
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    add_profile(store.as_ref(), "P").await;
    add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &["P"]).await;
    let untouched = sim.observe_now();
    let config = AgentConfig {
        resync_interval: Duration::from_secs(60),
        ..AgentConfig::default()
    };
    let agent = Agent::new(store.clone(), sim.clone(), HOST.to_owned(), config);
    let (stop, task) = spawn_run(agent);

    // Not Ready: nothing is read or applied, however long we wait.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(sim.observe_now(), untouched);

    set_ready(store.as_ref()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
    let first = status_of(store.as_ref(), "status").await;
    assert_eq!(first["first_update"], true);

    // Writes are followed without waiting for a resync.
    add_local_endpoint(store.as_ref(), &sim, "B", "192.168.1.2", &["P"]).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    // Drift is repaired at the next resync tick (60 s after start).
    assert!(sim.flush_chain(IpFamily::V4, Table::Filter, "cali-FORWARD"));
    assert_ne!(sim.observe_now(), expected(store.as_ref()).await);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    // Status was reported again (every 30 s) and is no longer the first.
    let later = status_of(store.as_ref(), "last_reported_status").await;
    assert_eq!(later["first_update"], false);
    assert!(later["uptime"].as_f64().unwrap() >= 30.0, "{later}");

    stop.send(()).unwrap();
    let agent = task.await.unwrap();
    let m = agent.metrics().snapshot();
    assert_eq!((m.errors, m.endpoints), (0, 2));
    assert!(m.resyncs >= 1, "{m:?}");
    // Shutdown leaves the dataplane as it is.
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);
}

#[tokio::test(start_paused = true)]
async fn run_recovers_from_a_broken_watch() {
    let store = Arc::new(BreakableStore::default());
    let sim = sim();
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    let agent = Agent::new(
        store.clone(),
        sim.clone(),
        HOST.to_owned(),
        AgentConfig::default(),
    );
    let (stop, task) = spawn_run(agent);
    tokio::time::sleep(Duration::from_secs(1)).await;

    add_local_endpoint(store.as_ref(), &sim, "A", "192.168.1.1", &[]).await;
    store.break_watches();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    stop.send(()).unwrap();
    let agent = task.await.unwrap();
    assert_eq!(agent.metrics().snapshot().errors, 0);
}

#[tokio::test(start_paused = true)]
async fn status_reports_can_be_disabled() {
    let store = Arc::new(MemStore::new());
    seed(store.as_ref()).await;
    store
        .put("/calico/v1/config/ReportingIntervalSecs", b"0".to_vec())
        .await
        .unwrap();
    set_ready(store.as_ref()).await;
    let agent = Agent::new(
        store.clone(),
        sim(),
        HOST.to_owned(),
        AgentConfig::default(),
    );
    let (stop, task) = spawn_run(agent);
    tokio::time::sleep(Duration::from_secs(100)).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    let status = store
        .get(&format!("/calico/felix/v1/host/{HOST}/status"))
        .await
        .unwrap();
    assert_eq!(status, None);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_waiting_for_its_interface_is_retried_until_it_appears() {
    let store = Arc::new(MemStore::new());
    let sim = sim();
    seed(store.as_ref()).await;
    set_ready(store.as_ref()).await;
    // The endpoint's interface does not exist yet: it waits, the rest is programmed.
    add_endpoint(store.as_ref(), HOST, "A", "192.168.1.1", &[]).await;
    let agent = Agent::new(
        store.clone(),
        sim.clone(),
        HOST.to_owned(),
        AgentConfig::default(),
    );
    let metrics = agent.metrics();
    let (stop, task) = spawn_run(agent);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_ne!(sim.observe_now(), expected(store.as_ref()).await);
    let m = metrics.snapshot();
    assert_eq!((m.errors, m.waiting_interfaces), (0, 1));
    // Retried about once a second: a handful of applies, not a busy loop (plus one for the
    // agent's own status record, rewritten when the interface starts waiting).
    assert!((2..=8).contains(&m.applies), "applies = {}", m.applies);

    // The interface appears (no datastore write): a retry programs it on its own.
    plumb(&sim, "A", "192.168.1.1").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sim.observe_now(), expected(store.as_ref()).await);

    stop.send(()).unwrap();
    let agent = task.await.unwrap();
    let m = agent.metrics().snapshot();
    assert_eq!((m.errors, m.waiting_interfaces), (0, 0));
}
