//! `World`: N simulated hosts on one wire sharing one datastore. Each host is a
//! [`SimDataplane`] (its kernel, and the `WorkloadPlumbing` calicoctl uses on it) plus an
//! optional running agent — calico-node's own reconcile loop ([`HostAgent`]) over that kernel;
//! [`World::settle`] steps agents and BGP until nothing changes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use calico_backends::{MemStore, Store};
use calico_cli::agent::{SharedSnapshots, StepOutcome};
use calico_core::shared::SharedDecodes;
use calico_dataplane::sim::{Kernel, RouteProto, SimDataplane, WireConfig, ROOT_NS};
use calico_dataplane::WorkloadPlumbing;
use ipnet::IpNet;

use crate::agent::{self, HostAgent};
use crate::bgp::{self, BgpFabric, LearnedRoutes, PeerStatus, Speaker};
use crate::SimError;

/// Rounds `settle` runs before it gives up.
pub const MAX_SETTLE_ROUNDS: usize = 50;

/// Default prefix length of every host's wire address (all hosts share one /24 subnet).
pub const WIRE_PREFIX_LEN: u8 = 24;

/// Prefix length of every IPv6 wire address (all hosts share one /64).
pub const WIRE_PREFIX_LEN_V6: u8 = 64;

/// One host of the world.
#[derive(Debug)]
pub struct SimHost {
    name: String,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    /// An `external` machine: on the wire, but no Calico host (it never runs an agent).
    external: bool,
    dataplane: SimDataplane,
    agent: Option<HostAgent>,
}

impl SimHost {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of its `eth0` (and its BGP address once registered).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The IPv6 address of its `eth0`, if it has one.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.ip6
    }

    /// Whether this is an `external` machine rather than a Calico host.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Its kernel.
    pub fn dataplane(&self) -> &SimDataplane {
        &self.dataplane
    }

    /// What `calicoctl container add` on this host plumbs workloads with.
    pub fn plumbing(&self) -> &dyn WorkloadPlumbing {
        &self.dataplane
    }

    pub fn agent_running(&self) -> bool {
        self.agent.is_some()
    }

    /// The running agent, if any.
    pub fn agent(&self) -> Option<&HostAgent> {
        self.agent.as_ref()
    }
}

/// What a settle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Rounds run, the last one being the quiet one.
    pub rounds: usize,
    /// Datastore events the agents consumed (watch events, including in-sync markers).
    pub events: usize,
    /// Snapshots the agents loaded (first steps, broken watches).
    pub snapshots: usize,
    /// Changes the agents made to dataplanes.
    pub dataplane_changes: usize,
    /// BGP routes installed or withdrawn.
    pub bgp_changes: usize,
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    store: Arc<dyn Store>,
    hosts: BTreeMap<String, SimHost>,
    /// Wire address → host.
    by_ip: BTreeMap<IpAddr, String>,
    /// Workload (namespace) name → host.
    workloads: BTreeMap<String, String>,
    bgp: BgpFabric,
    wire_prefix_len: u8,
    /// Probes sent so far: each takes the next echo identifier and ephemeral port, so that
    /// probes are separate flows to conntrack (see [`World::send`]).
    probes: AtomicU64,
    /// Endpoint records decoded once for every agent of the world.
    shared: SharedDecodes,
    /// Snapshots listed once for every agent starting at the same revision (worlds over a
    /// `MemStore` only: other stores are listed by each agent).
    snapshots: Option<SharedSnapshots>,
}

impl World {
    /// An empty world over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        World {
            store,
            hosts: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            workloads: BTreeMap::new(),
            bgp: BgpFabric::default(),
            wire_prefix_len: WIRE_PREFIX_LEN,
            probes: AtomicU64::new(0),
            shared: SharedDecodes::new(),
            snapshots: None,
        }
    }

    /// The sequence number of a new probe (0, 1, 2, ...).
    pub(crate) fn next_probe(&self) -> u64 {
        self.probes.fetch_add(1, Ordering::Relaxed)
    }

    /// Puts hosts added from now on in a wire subnet of this prefix length (e.g. 16 for worlds
    /// of more than 250 hosts, which must share one subnet to reach each other on-link).
    pub fn with_wire_prefix_len(mut self, len: u8) -> Self {
        self.wire_prefix_len = len;
        self
    }

    /// An empty world over a fresh `MemStore`.
    pub fn with_mem_store() -> Self {
        let store = MemStore::new();
        let mut world = World::new(Arc::new(store.clone()));
        world.snapshots = Some(SharedSnapshots::new(store, world.shared.clone()));
        world
    }

    /// The shared datastore.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Adds host `name` whose `eth0` holds `ip/24` (or the world's wire prefix) on the shared
    /// wire. Its agent is stopped.
    ///
    /// # Errors
    /// `HostExists`, `AddressInUse`.
    pub fn add_host(&mut self, name: &str, ip: Ipv4Addr) -> Result<&SimHost, SimError> {
        self.add_dual_stack_host(name, ip, None)
    }

    /// [`World::add_host`] whose `eth0` also holds `ip6/64` when given.
    ///
    /// # Errors
    /// `HostExists`, `AddressInUse`.
    pub fn add_dual_stack_host(
        &mut self,
        name: &str,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
    ) -> Result<&SimHost, SimError> {
        let addrs = std::iter::once(IpAddr::V4(ip)).chain(ip6.map(IpAddr::V6));
        self.add_machine(name, addrs.collect(), false)?;
        self.host(name)
    }

    /// Adds `external` machine `name` holding `ip` on the wire: no agent ever runs on it, its
    /// only route is the wire's connected one (so none to any pool), and it answers whatever
    /// reaches it (its kernel has no rules).
    ///
    /// # Errors
    /// `HostExists`, `AddressInUse`.
    pub fn add_external(&mut self, name: &str, ip: IpAddr) -> Result<&SimHost, SimError> {
        self.add_machine(name, vec![ip], true)?;
        self.host(name)
    }

    /// A machine on the wire whose `eth0` holds `addrs` (v4 with the wire prefix, v6 /64); its
    /// `ip` is the first IPv4 among them (unspecified for a v6-only external), `ip6` the first
    /// IPv6.
    fn add_machine(
        &mut self,
        name: &str,
        addrs: Vec<IpAddr>,
        external: bool,
    ) -> Result<(), SimError> {
        if self.hosts.contains_key(name) {
            return Err(SimError::HostExists {
                host: name.to_string(),
            });
        }
        for ip in &addrs {
            if let Some(owner) = self.by_ip.get(ip) {
                return Err(SimError::AddressInUse {
                    ip: *ip,
                    host: owner.clone(),
                });
            }
        }
        let nets = addrs
            .iter()
            .map(|ip| {
                let len = if ip.is_ipv4() {
                    self.wire_prefix_len
                } else {
                    WIRE_PREFIX_LEN_V6
                };
                IpNet::new(*ip, len).map_err(|_| SimError::NoAddress {
                    what: format!("host {name}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dataplane = SimDataplane::new(name, WireConfig::eth0(nets));
        for ip in &addrs {
            self.by_ip.insert(*ip, name.to_string());
        }
        let ip = addrs
            .iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let ip6 = addrs.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        let host = SimHost {
            name: name.to_string(),
            ip,
            ip6,
            external,
            dataplane,
            agent: None,
        };
        self.hosts.insert(name.to_string(), host);
        Ok(())
    }

    /// Adds a workload with no network on `host` (`docker run --net=none`): a namespace named
    /// after the workload.
    ///
    /// # Errors
    /// `UnknownHost`, `WorkloadExists`, or the dataplane refusing the namespace.
    pub fn add_workload(&mut self, host: &str, name: &str) -> Result<(), SimError> {
        if self.workloads.contains_key(name) {
            return Err(SimError::WorkloadExists {
                workload: name.to_string(),
            });
        }
        self.host(host)?
            .dataplane
            .add_namespace(name)
            .map_err(SimError::dataplane(
                host,
                format!("adding namespace {name}"),
            ))?;
        self.workloads.insert(name.to_string(), host.to_string());
        Ok(())
    }

    /// The host a workload runs on.
    pub fn workload_host(&self, workload: &str) -> Option<&str> {
        self.workloads.get(workload).map(String::as_str)
    }

    /// Workload names → host, sorted.
    pub fn workloads(&self) -> &BTreeMap<String, String> {
        &self.workloads
    }

    /// One host.
    ///
    /// # Errors
    /// `UnknownHost`.
    pub fn host(&self, name: &str) -> Result<&SimHost, SimError> {
        self.hosts.get(name).ok_or_else(|| SimError::UnknownHost {
            host: name.to_string(),
        })
    }

    fn host_mut(&mut self, name: &str) -> Result<&mut SimHost, SimError> {
        self.hosts
            .get_mut(name)
            .ok_or_else(|| SimError::UnknownHost {
                host: name.to_string(),
            })
    }

    /// Every host, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &SimHost> {
        self.hosts.values()
    }

    /// The host whose wire address is `ip`.
    pub fn host_by_ip(&self, ip: IpAddr) -> Option<&SimHost> {
        self.by_ip.get(&ip).and_then(|h| self.hosts.get(h))
    }

    /// Starts `host`'s agent (a fresh one over the same kernel and the world's store: its first
    /// step loads a snapshot once `/calico/v1/Ready` is true). A running agent is left alone.
    ///
    /// # Errors
    /// `UnknownHost`.
    pub fn start_agent(&mut self, host: &str) -> Result<(), SimError> {
        let store = Arc::clone(&self.store);
        let shared = self.shared.clone();
        let snapshots = self.snapshots.clone();
        let h = self.host_mut(host)?;
        if h.external {
            return Err(SimError::External {
                host: host.to_string(),
            });
        }
        if h.agent.is_none() {
            h.agent = Some(agent::host_agent(
                store,
                &h.dataplane,
                host,
                &shared,
                snapshots,
            ));
        }
        Ok(())
    }

    /// Runs one step of `host`'s agent ([`calico_cli::agent::Agent::poll_once`]) and returns
    /// what it did; the first step of a fresh agent is its snapshot and first apply. `None`
    /// when the agent is not running. BGP does not run: call [`World::settle`] for that.
    ///
    /// # Errors
    /// `UnknownHost`; the agent's error.
    pub async fn poll_agent(&mut self, host: &str) -> Result<Option<StepOutcome>, SimError> {
        match self.host_mut(host)?.agent.as_mut() {
            Some(running) => Ok(Some(agent::step(running).await?)),
            None => Ok(None),
        }
    }

    /// Stops `host`'s agent like `kill -9`: the agent and its watch go, its kernel keeps what
    /// was programmed (chains, ipsets, routes, conntrack).
    ///
    /// # Errors
    /// `UnknownHost`.
    pub fn stop_agent(&mut self, host: &str) -> Result<(), SimError> {
        self.host_mut(host)?.agent = None;
        Ok(())
    }

    /// Takes the BGP session between `a` and `b` down.
    pub fn cut_session(&mut self, a: &str, b: &str) {
        self.bgp.cut_session(a, b);
    }

    /// Lets the BGP session between `a` and `b` come back.
    pub fn heal_session(&mut self, a: &str, b: &str) {
        self.bgp.heal_session(a, b);
    }

    /// Steps every running agent once ([`calico_cli::agent::Agent::poll_once`]: a fresh one
    /// takes its snapshot, a running one its queued watch events), then BGP, round after round
    /// until a whole round consumes no event and changes nothing.
    ///
    /// # Errors
    /// `NotSettled` after [`MAX_SETTLE_ROUNDS`]; agent errors as they happen.
    pub async fn settle(&mut self) -> Result<SettleReport, SimError> {
        let mut report = SettleReport::default();
        // Whether the last exchange changed no route and no agent changed its kernel since.
        let mut bgp_settled = false;
        for round in 1..=MAX_SETTLE_ROUNDS {
            let mut changing = Vec::new();
            let mut kernels_changed = false;
            for (host, step) in step_agents(&mut self.hosts).await {
                let step = step?;
                report.events += step.events;
                report.snapshots += usize::from(step.resnapshot);
                report.dataplane_changes += step.changes.len();
                kernels_changed |= step.changed();
                if agent::busy(&step) {
                    changing.push(host);
                }
            }
            // BGP reads only the kernels, which agents run and the cuts (a settle changes
            // neither of the last two): over unchanged kernels, an exchange after one that
            // changed nothing changes nothing either, and costs a pass over every route of
            // every host.
            let bgp = if bgp_settled && !kernels_changed {
                0
            } else {
                self.run_bgp()?
            };
            bgp_settled = bgp == 0;
            report.bgp_changes += bgp;
            if bgp > 0 {
                changing.push("bgp".to_string());
            }
            report.rounds = round;
            if changing.is_empty() {
                return Ok(report);
            }
            if round == MAX_SETTLE_ROUNDS {
                return Err(SimError::NotSettled {
                    rounds: round,
                    changing: changing.join(", "),
                });
            }
        }
        Ok(report)
    }

    /// Every host's kernel, locked, with its name and whether its agent runs: what the BGP
    /// model reads (BIRD configs and exportable routes) without copying it.
    /// (Of the hosts only, so the BGP fabric can be borrowed apart.)
    fn bgp_inputs(hosts: &BTreeMap<String, SimHost>) -> Vec<BgpInput<'_>> {
        hosts
            .values()
            .map(|h| {
                let kernel = h.dataplane.lock();
                let exports = kernel.ns(ROOT_NS).map_or_else(
                    |_| Vec::new(),
                    |space| {
                        space
                            .routes
                            .iter()
                            .filter(|r| !matches!(r.proto, RouteProto::Bird | RouteProto::Kernel))
                            .map(|r| r.dst)
                            .collect()
                    },
                );
                BgpInput {
                    host: &h.name,
                    running: h.agent.is_some(),
                    kernel,
                    exports,
                }
            })
            .collect()
    }

    /// One BGP exchange: every running host's kernel gets exactly the routes its established
    /// peers advertise, and the blackholes of its own blocks. Returns the number of routes installed, replaced or withdrawn.
    fn run_bgp(&mut self) -> Result<usize, SimError> {
        let (learned, blackholes) = {
            let inputs = Self::bgp_inputs(&self.hosts);
            let speakers = speakers(&inputs);
            let blackholes: BTreeMap<String, _> = speakers
                .iter()
                .map(|s| (s.host.to_string(), bgp::blackholes(s)))
                .collect();
            (self.bgp.learned_memo(&speakers), blackholes)
        };
        let mut changes = 0;
        for host in self.hosts.values().filter(|h| h.agent.is_some()) {
            let empty = LearnedRoutes::new();
            let want = learned.get(&host.name).unwrap_or(&empty);
            let statics = blackholes.get(&host.name).cloned().unwrap_or_default();
            changes +=
                host.dataplane
                    .sync_bird_routes(want, &statics)
                    .map_err(SimError::dataplane(
                        &host.name,
                        "installing BGP routes".to_string(),
                    ))?;
        }
        Ok(changes)
    }

    /// `host`'s BGP sessions, as `calicoctl status` shows them.
    ///
    /// # Errors
    /// `UnknownHost`.
    pub fn bgp_peers(&self, host: &str) -> Result<Vec<PeerStatus>, SimError> {
        self.host(host)?;
        let inputs = Self::bgp_inputs(&self.hosts);
        Ok(self.bgp.peer_table(&speakers(&inputs), host))
    }
}

/// Worlds with at least this many running agents step them on several threads.
const PARALLEL_AGENTS: usize = 64;

/// Steps every running agent once, in host order, returning each step's outcome by host.
///
/// Stepping an agent only reads the store (its watch, or a snapshot) and writes its own
/// kernel, so agents do not see each other within a step and the outcome does not depend on
/// their order. Large worlds therefore step them on as many threads as there are cores, each
/// thread with its own single-threaded runtime; small ones (every test) stay on this thread.
async fn step_agents(
    hosts: &mut BTreeMap<String, SimHost>,
) -> Vec<(String, Result<StepOutcome, SimError>)> {
    let mut running: Vec<&mut SimHost> = hosts.values_mut().filter(|h| h.agent.is_some()).collect();
    if running.len() < PARALLEL_AGENTS || !crate::cores::several() {
        let mut out = Vec::with_capacity(running.len());
        for host in running {
            if let Some(agent) = host.agent.as_mut() {
                out.push((host.name.clone(), agent::step(agent).await));
            }
        }
        return out;
    }
    crate::cores::split_mut(&mut running, step_on_this_thread)
}

/// Steps `hosts`' agents one after another on a fresh single-threaded runtime.
fn step_on_this_thread(hosts: &mut [&mut SimHost]) -> Vec<(String, Result<StepOutcome, SimError>)> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(source) => {
            let host = hosts.first().map(|h| h.name.clone()).unwrap_or_default();
            let error = SimError::Runtime {
                host: host.clone(),
                source,
            };
            return vec![(host, Err(error))];
        }
    };
    hosts
        .iter_mut()
        .filter_map(|host| {
            let agent = host.agent.as_mut()?;
            Some((host.name.clone(), runtime.block_on(agent::step(agent))))
        })
        .collect()
}

/// One host's BGP-relevant state: its locked kernel (for the BIRD configs) and its exportable
/// destinations, so [`Speaker`]s can borrow them.
struct BgpInput<'a> {
    host: &'a str,
    running: bool,
    kernel: MutexGuard<'a, Kernel>,
    exports: Vec<IpNet>,
}

fn speakers<'a>(inputs: &'a [BgpInput<'a>]) -> Vec<Speaker<'a>> {
    inputs
        .iter()
        .map(|i| Speaker {
            host: i.host,
            running: i.running,
            bird: [i.kernel.bird_v4.as_ref(), i.kernel.bird_v6.as_ref()],
            exports: &i.exports,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops;

    const IP1: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 2);
    const IP2: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 3);

    async fn two_hosts_one_workload_each() -> World {
        let mut world = World::with_mem_store();
        let store = world.store().clone();
        for (host, ip, workload, addr) in [
            ("host1", IP1, "a", Ipv4Addr::new(192, 168, 0, 1)),
            ("host2", IP2, "b", Ipv4Addr::new(192, 168, 0, 2)),
        ] {
            world.add_host(host, ip).unwrap();
            ops::node_start(store.as_ref(), host, ip).await.unwrap();
            world.start_agent(host).unwrap();
            world.add_workload(host, workload).unwrap();
            let plumbing = world.host(host).unwrap().plumbing();
            ops::container_add(store.as_ref(), plumbing, host, ip, workload, addr)
                .await
                .unwrap();
        }
        world.settle().await.unwrap();
        world
    }

    #[tokio::test]
    async fn duplicate_hosts_addresses_and_workloads_are_refused() {
        let mut world = World::with_mem_store();
        world.add_host("host1", IP1).unwrap();
        assert!(matches!(
            world.add_host("host1", IP2),
            Err(SimError::HostExists { .. })
        ));
        assert!(matches!(
            world.add_host("host2", IP1),
            Err(SimError::AddressInUse { .. })
        ));
        world.add_workload("host1", "w").unwrap();
        assert!(matches!(
            world.add_workload("host1", "w"),
            Err(SimError::WorkloadExists { .. })
        ));
        assert!(matches!(
            world.add_workload("nohost", "x"),
            Err(SimError::UnknownHost { .. })
        ));
    }

    #[tokio::test]
    async fn a_stopped_agent_loses_its_peers_routes_and_a_restarted_one_converges() {
        let mut world = two_hosts_one_workload_each().await;
        let learned =
            |world: &World, host: &str| world.host(host).unwrap().dataplane().bgp_routes().len();
        assert_eq!((learned(&world, "host1"), learned(&world, "host2")), (1, 1));

        world.stop_agent("host2").unwrap();
        let report = world.settle().await.unwrap();
        assert_eq!(report.bgp_changes, 1, "{report:?}");
        // host1 withdrew host2's route; host2's kernel keeps what BIRD wrote (persist).
        assert_eq!((learned(&world, "host1"), learned(&world, "host2")), (0, 1));
        let peers = world.bgp_peers("host1").unwrap();
        assert_eq!(peers[0].info(), "Active (agent on host2 stopped)");

        world.start_agent("host2").unwrap();
        world.settle().await.unwrap();
        assert_eq!((learned(&world, "host1"), learned(&world, "host2")), (1, 1));
        // A settled world stays settled.
        let again = world.settle().await.unwrap();
        assert_eq!(again.rounds, 1, "{again:?}");
        assert_eq!(again.dataplane_changes + again.bgp_changes, 0);
    }

    #[tokio::test]
    async fn mesh_off_removes_learned_routes() {
        let mut world = two_hosts_one_workload_each().await;
        ops::set_node_mesh(world.store().as_ref(), false)
            .await
            .unwrap();
        world.settle().await.unwrap();
        for host in ["host1", "host2"] {
            let h = world.host(host).unwrap();
            assert!(h.dataplane().bgp_routes().is_empty());
            assert!(world.bgp_peers(host).unwrap().is_empty());
        }
    }
}
