//! The agent and calicoctl when etcd fails, as users run them: in-process agents (their own
//! reconcile loop, `Agent::run`) over a simulated kernel each, and the `calicoctl` binary,
//! all on real etcd.
//! - Outage: the only etcd member is SIGKILLed for [`OUTAGE`] right after a change; the
//!   dataplane stays as it was meanwhile, calicoctl fails naming the endpoint, and after
//!   etcd returns a further change reaches the dataplane.
//! - Cluster: 3 members, `ETCD_ENDPOINTS` naming all three; the leader is SIGKILLed during a
//!   stream of calicoctl writes while two agents watch; the member comes back and another
//!   leader is killed. No acknowledged write is lost, calicoctl fails at most one command
//!   per kill, the agents never re-snapshot, and both dataplanes converge.

mod agent_support;
mod reliability_support;

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::{add_endpoint, add_profile, iface, seed, set_ready};
use calico_backends::{EtcdConfig, EtcdStore, Store};
use calico_cli::agent::{Agent, AgentConfig, Metrics};
use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::DesiredState;
use calico_dataplane::sim::{SimDataplane, WireConfig};
use calico_dataplane::{VethSpec, WorkloadPlumbing};
use reliability_support::etcd_cluster::EtcdCluster;
use tokio::sync::oneshot;

/// How long etcd stays down in the outage test.
const OUTAGE: Duration = Duration::from_secs(10);
/// calicoctl writes in the cluster test, and the two writes before which a leader dies.
const WRITES: usize = 45;
const KILLS_AT: [usize; 2] = [15, 30];
/// How long anything may take to converge before the test gives up (a hang guard).
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// A running agent: its simulated kernel, metrics, etcd connection and stop switch.
struct RunningAgent {
    host: String,
    sim: SimDataplane,
    metrics: Arc<Metrics>,
    etcd: Arc<EtcdStore>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    async fn start(
        endpoints: Vec<String>,
        host: &str,
        host_ip: &str,
        workload: &str,
        ip: &str,
    ) -> Self {
        let etcd = Arc::new(
            EtcdStore::connect(EtcdConfig::new(endpoints))
                .await
                .unwrap(),
        );
        let sim = SimDataplane::new(
            host,
            WireConfig::eth0([format!("{host_ip}/24").parse().unwrap()]),
        );
        sim.add_namespace(workload).unwrap();
        sim.add_veth(&VethSpec {
            netns: workload.to_owned(),
            host_iface: iface(workload),
            temp_iface: format!("tmp{workload}"),
            workload_iface: "eth0".to_owned(),
            addrs: vec![format!("{ip}/32").parse().unwrap()],
            gateway_v4: Some(host_ip.parse().unwrap()),
            gateway_v6: None,
        })
        .await
        .unwrap();
        let config = AgentConfig {
            // Only watch resumption may bring the agent up to date: no periodic resync.
            resync_interval: Duration::from_secs(3600),
            ..AgentConfig::default()
        };
        let store: Arc<dyn Store> = etcd.clone();
        let mut agent = Agent::new(store, sim.clone(), host.to_owned(), config);
        let metrics = agent.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            agent
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        RunningAgent {
            host: host.to_owned(),
            sim,
            metrics,
            etcd,
            stop,
            task,
        }
    }

    /// Waits until the kernel holds what `compute` derives from `store` now.
    async fn converge(&self, store: &dyn Store) {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        loop {
            let want = expected(store, &self.host).await;
            if self.sim.observe_now() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s dataplane did not converge within {CONVERGE_WITHIN:?}",
                self.host
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

async fn expected(store: &dyn Store, host: &str) -> DesiredState {
    let (kvs, _) = store.list("/calico/").await.unwrap();
    let mut state = ClusterState::default();
    for kv in kvs {
        state.apply(&kv.key, Some(&kv.value));
    }
    compute(&state, host)
}

/// Two hosts, an endpoint on each in profile PROF, Ready.
async fn seed_two_hosts(store: &dyn Store) {
    seed(store).await;
    store
        .put("/calico/v1/host/host2/bird_ip", b"172.31.250.2".to_vec())
        .await
        .unwrap();
    add_profile(store, "PROF").await;
    add_endpoint(store, "host1", "A", "192.168.1.1", &["PROF"]).await;
    add_endpoint(store, "host2", "B", "192.168.1.2", &["PROF"]).await;
    set_ready(store).await;
}

/// Runs the calicoctl binary against etcd at `endpoints` (comma-separated).
fn calicoctl(endpoints: &str, line: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calicoctl"))
        .args(line.split_whitespace())
        .env("ETCD_ENDPOINTS", endpoints)
        .env_remove("ETCD_AUTHORITY")
        .env_remove("CALICO_DATASTORE")
        .output()
        .expect("running calicoctl")
}

fn rule_line(i: usize) -> String {
    format!("profile PROF rule add inbound allow from tag T{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_leaves_the_dataplane_alone_and_the_agent_reconverges() {
    let Some(mut etcd) = EtcdCluster::start(1).await else {
        return;
    };
    let endpoints = etcd.endpoints_env();
    let store = reliability_support::etcd_store(etcd.endpoints()).await;
    seed_two_hosts(store.as_ref()).await;
    let agent = RunningAgent::start(
        etcd.endpoints(),
        "host1",
        "172.31.250.1",
        "A",
        "192.168.1.1",
    )
    .await;
    agent.converge(store.as_ref()).await;

    // A change just before the outage, then etcd dies.
    let before = calicoctl(&endpoints, &rule_line(0));
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    etcd.kill(0);
    let outage_started = Instant::now();

    // calicoctl fails cleanly, naming the endpoint, within its own timeouts.
    let started = Instant::now();
    let failed = calicoctl(&endpoints, &rule_line(1));
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&etcd.endpoint(0)),
        "the error does not name the endpoint: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    // A hang guard, not a speed check: connect (3 s) plus request (10 s) timeouts.
    assert!(took < Duration::from_secs(20), "calicoctl took {took:?}");

    // The dataplane stays as the agent last programmed it, the whole outage.
    let programmed = agent.sim.observe_now();
    let mut samples = 0;
    while outage_started.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            agent.sim.observe_now(),
            programmed,
            "the dataplane changed during the outage"
        );
        samples += 1;
    }
    etcd.restart(0).await;

    // The change before the outage is there, the one after it arrives too.
    let after = calicoctl(&endpoints, &rule_line(2));
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    let store = reliability_support::etcd_store(etcd.endpoints()).await;
    agent.converge(store.as_ref()).await;
    let rules = String::from_utf8_lossy(&calicoctl(&endpoints, "profile PROF rule show").stdout)
        .into_owned();
    assert!(
        rules.contains("tag T0") && rules.contains("tag T2") && !rules.contains("tag T1"),
        "{rules}"
    );
    let chains = format!("{:?}", agent.sim.observe_now().tables);
    assert!(
        chains.contains("T2"),
        "the change after the outage is not programmed"
    );
    let m = agent.metrics.snapshot();
    println!(
        "etcd outage: {OUTAGE:?}, {samples} dataplane samples unchanged, calicoctl failed in {took:?}, \
         agent errors {} resyncs {}, watch interruptions {}",
        m.errors,
        m.resyncs,
        agent.etcd.watch_interruptions()
    );
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_leader_kills_lose_no_acknowledged_write() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let endpoints = cluster.endpoints_env();
    let store = reliability_support::etcd_store(cluster.endpoints()).await;
    seed_two_hosts(store.as_ref()).await;
    drop(store);
    // The agents list the leader first, so they watch on it and the first kill breaks
    // their watches: they must resume on another member.
    let first_leader = cluster.wait_leader().await;
    let mut agent_endpoints = cluster.endpoints();
    agent_endpoints.rotate_left(first_leader);
    let agents = [
        RunningAgent::start(
            agent_endpoints.clone(),
            "host1",
            "172.31.250.1",
            "A",
            "192.168.1.1",
        )
        .await,
        RunningAgent::start(
            agent_endpoints.clone(),
            "host2",
            "172.31.250.2",
            "B",
            "192.168.1.2",
        )
        .await,
    ];

    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    let mut killed = Vec::new();
    for i in 0..WRITES {
        if let Some(k) = KILLS_AT.iter().position(|&at| at == i) {
            if k > 0 {
                // Bring the last victim back before killing another.
                let last = killed[k - 1];
                cluster.restart(last).await;
            }
            let leader = cluster.wait_leader().await;
            // SIGKILL while this write is in flight.
            let child = Command::new(env!("CARGO_BIN_EXE_calicoctl"))
                .args(rule_line(i).split_whitespace())
                .env("ETCD_ENDPOINTS", &endpoints)
                .env_remove("ETCD_AUTHORITY")
                .env_remove("CALICO_DATASTORE")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            cluster.kill(leader);
            killed.push(leader);
            let out = child.wait_with_output().unwrap();
            record(i, &out, &mut acknowledged, &mut failed);
            continue;
        }
        let out = calicoctl(&endpoints, &rule_line(i));
        record(i, &out, &mut acknowledged, &mut failed);
    }

    // At most one failed command per kill, never two in a row.
    assert!(
        failed.len() <= KILLS_AT.len(),
        "failed commands: {failed:#?}"
    );
    for pair in failed.windows(2) {
        assert!(
            pair[1].0 > pair[0].0 + 1,
            "two failures in a row: {failed:#?}"
        );
    }
    // Every acknowledged write is there, read from a member that never died.
    let survivor = (0..cluster.len()).find(|i| !killed.contains(i)).unwrap();
    let store = reliability_support::etcd_store(vec![cluster.endpoint(survivor)]).await;
    let rules = String::from_utf8_lossy(
        &store
            .get("/calico/v1/policy/profile/PROF/rules")
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .into_owned();
    let lost: Vec<usize> = acknowledged
        .iter()
        .copied()
        .filter(|i| !rules.contains(&format!("\"T{i}\"")))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for agent in &agents {
        agent.converge(store.as_ref()).await;
    }
    let mut interruptions = Vec::new();
    for agent in &agents {
        let m = agent.metrics.snapshot();
        assert_eq!(
            m.resyncs, 0,
            "{} re-snapshotted instead of resuming its watch",
            agent.host
        );
        interruptions.push(agent.etcd.watch_interruptions());
        if killed[0] == first_leader {
            assert!(
                agent.etcd.watch_interruptions() >= 1,
                "{}'s watch was on the killed member yet never resumed",
                agent.host
            );
        }
    }
    println!(
        "etcd cluster: {WRITES} calicoctl writes, leaders killed {killed:?}, {} acknowledged, \
         {} failed {:?}, 0 lost, watch interruptions per agent {interruptions:?}, resyncs 0",
        acknowledged.len(),
        failed.len(),
        failed
    );
    for agent in agents {
        agent.shut_down().await;
    }
}

fn record(
    i: usize,
    out: &Output,
    acknowledged: &mut Vec<usize>,
    failed: &mut Vec<(usize, String)>,
) {
    if out.status.success() {
        acknowledged.push(i);
    } else {
        failed.push((i, String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
}
