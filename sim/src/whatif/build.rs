//! The simulated cluster a what-if runs on: a [`World`] over an in-memory copy of the
//! snapshot, with every registered host running its agent and every endpoint plumbed as its
//! record says (interface, addresses, MAC, gateway), settled.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use calico_cli::ctl::{Workload, WorkloadResolver};
use calico_core::cluster::ClusterState;
use calico_core::model::{EndpointId, WorkloadEndpoint};
use calico_dataplane::sim::SimDataplane;
use calico_dataplane::{VethSpec, WorkloadPlumbing};
use ipnet::IpNet;

use super::WhatIfError;
use crate::{SimError, World};

/// Namespace of each workload: `(host, workload id)` → namespace name in that host's kernel.
/// Shared with the [`SnapshotResolver`], which adds the namespaces of new containers.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    inner: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl Namespaces {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), String>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The namespace of `id`'s workload, if the world has one.
    pub fn of(&self, id: &EndpointId) -> Option<String> {
        self.lock()
            .get(&(id.host.clone(), id.workload.clone()))
            .cloned()
    }

    /// Every `(host, workload)` → namespace.
    pub fn all(&self) -> BTreeMap<(String, String), String> {
        self.lock().clone()
    }

    fn insert(&self, host: &str, workload: &str, ns: String) {
        self.lock()
            .insert((host.to_string(), workload.to_string()), ns);
    }
}

/// The simulated copy of the cluster.
#[derive(Debug)]
pub struct Cluster {
    pub world: World,
    pub namespaces: Namespaces,
    /// What the snapshot held that the simulator cannot build (a host with no IPv4 address
    /// and its endpoints), one line each.
    pub skipped: Vec<String>,
    /// How long the agents and BGP took to settle it (the rest of the build is copying the
    /// snapshot into the store and plumbing the endpoints).
    pub settling: std::time::Duration,
}

/// Widest prefix length (at most `/24`) whose subnet holds every host address, so that all
/// simulated hosts share one wire, as they reach each other in the real cluster.
fn wire_prefix_len(ips: &[Ipv4Addr]) -> u8 {
    let Some(first) = ips.first().map(|ip| u32::from(*ip)) else {
        return crate::world::WIRE_PREFIX_LEN;
    };
    let differing = ips
        .iter()
        .fold(0u32, |acc, ip| acc | (u32::from(*ip) ^ first));
    let common = u8::try_from(differing.leading_zeros()).unwrap_or(32);
    common.min(crate::world::WIRE_PREFIX_LEN)
}

/// Builds and settles the cluster `snapshot` (every key under `/calico/` and its value)
/// describes, on a fresh in-memory store holding a copy of it.
///
/// # Errors
/// The simulator refusing a host, endpoint or namespace; the cluster not settling.
pub async fn build(snapshot: &[(String, String)]) -> Result<Cluster, WhatIfError> {
    let mut state = ClusterState::default();
    for (key, value) in snapshot {
        state.apply(key, Some(value.as_bytes()));
    }
    let mut skipped = Vec::new();
    let hosts: Vec<(String, Ipv4Addr, Option<std::net::Ipv6Addr>)> = state
        .hosts
        .iter()
        .filter_map(|(name, h)| match h.ip_v4.or(h.bird_ip) {
            Some(ip) => Some((name.clone(), ip, h.ip_v6)),
            None => {
                skipped.push(format!("host {name}: no IPv4 address registered"));
                None
            }
        })
        .collect();
    let ips: Vec<Ipv4Addr> = hosts.iter().map(|h| h.1).collect();
    let mut world = World::with_mem_store().with_wire_prefix_len(wire_prefix_len(&ips));
    let store = world.store().clone();
    for (key, value) in snapshot {
        store.put(key, value.clone().into_bytes()).await?;
    }
    for (name, ip, ip6) in &hosts {
        world.add_dual_stack_host(name, *ip, *ip6)?;
    }
    let namespaces = Namespaces::default();
    let mut per_workload: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (id, ep) in state.endpoints.iter() {
        if world.host(&id.host).is_err() {
            skipped.push(format!(
                "endpoint {}: its host is not simulated",
                id.endpoint
            ));
            continue;
        }
        let ns = match namespaces.of(id) {
            Some(ns) => ns,
            None => {
                let ns = free_namespace(&world, &id.workload, &id.host);
                world.add_workload(&id.host, &ns)?;
                namespaces.insert(&id.host, &id.workload, ns.clone());
                ns
            }
        };
        // A workload with several endpoints gets eth1, eth2, ... in its one namespace.
        let count = per_workload
            .entry((id.host.clone(), id.workload.clone()))
            .or_default();
        *count += 1;
        plumb(world.host(&id.host)?.dataplane(), id, ep, &ns, *count).await?;
    }
    for (name, _, _) in &hosts {
        world.start_agent(name)?;
    }
    let settling = std::time::Instant::now();
    world.settle().await?;
    Ok(Cluster {
        world,
        namespaces,
        skipped,
        settling: settling.elapsed(),
    })
}

/// A namespace name for `workload` no other host's workload uses: the workload id itself
/// when free, else `<workload>@<host>`.
fn free_namespace(world: &World, workload: &str, host: &str) -> String {
    if world.workload_host(workload).is_none() {
        workload.to_string()
    } else {
        format!("{workload}@{host}")
    }
}

/// Wires endpoint `ep` into namespace `ns` as `calicoctl container add` did: its host-side
/// interface, addresses, default route via its gateway, and its recorded MAC.
async fn plumb(
    dataplane: &SimDataplane,
    id: &EndpointId,
    ep: &WorkloadEndpoint,
    ns: &str,
    nth: usize,
) -> Result<(), WhatIfError> {
    let addrs: Vec<IpNet> = ep
        .ipv4_nets
        .iter()
        .map(|n| IpNet::V4(*n))
        .chain(ep.ipv6_nets.iter().map(|n| IpNet::V6(*n)))
        .collect();
    let suffix: String = id.endpoint.chars().take(11).collect();
    let workload_iface = format!("eth{nth}");
    let spec = VethSpec {
        netns: ns.to_string(),
        host_iface: ep.name.clone(),
        temp_iface: format!("tmp{suffix}"),
        workload_iface: workload_iface.clone(),
        addrs,
        gateway_v4: ep.ipv4_gateway,
        gateway_v6: ep.ipv6_gateway,
    };
    let failed = |action: &str| {
        SimError::dataplane(
            &id.host,
            format!("{action} of endpoint {} into {ns}", id.endpoint),
        )
    };
    dataplane
        .add_veth(&spec)
        .await
        .map_err(failed("plumbing"))?;
    dataplane
        .set_link_mac(ns, &workload_iface, ep.mac)
        .map_err(failed("setting the MAC"))?;
    Ok(())
}

/// Resolves `<CONTAINER>` on one simulated host: a workload of the snapshot whose id is the
/// container (or starts with it, as a short Docker id does) keeps its orchestrator and
/// namespace; any other name is a new container, given a fresh namespace (as if the user had
/// just started it), so `container add` can be tried too.
#[derive(Debug, Clone)]
pub struct SnapshotResolver {
    pub host: String,
    pub dataplane: SimDataplane,
    pub namespaces: Namespaces,
    /// Orchestrator of each workload id on this host, from the snapshot.
    pub orchestrators: BTreeMap<String, String>,
}

#[async_trait]
impl WorkloadResolver for SnapshotResolver {
    async fn resolve(&self, container: &str) -> Option<Workload> {
        let known = self
            .orchestrators
            .iter()
            .find(|(workload, _)| *workload == container)
            .or_else(|| {
                self.orchestrators
                    .iter()
                    .find(|(workload, _)| workload.starts_with(container))
            });
        if let Some((workload, orchestrator)) = known {
            let id = EndpointId {
                host: self.host.clone(),
                orchestrator: orchestrator.clone(),
                workload: workload.clone(),
                endpoint: String::new(),
            };
            let netns = self.namespaces.of(&id)?;
            return Some(Workload {
                netns,
                orchestrator: orchestrator.clone(),
                workload_id: workload.clone(),
            });
        }
        let id = EndpointId {
            host: self.host.clone(),
            orchestrator: String::new(),
            workload: container.to_string(),
            endpoint: String::new(),
        };
        let netns = match self.namespaces.of(&id) {
            Some(ns) => ns,
            None => {
                let taken = self.dataplane.namespaces();
                let ns = if taken.iter().any(|n| n == container) {
                    format!("{container}@{}", self.host)
                } else {
                    container.to_string()
                };
                self.dataplane.add_namespace(&ns).ok()?;
                self.namespaces.insert(&self.host, container, ns.clone());
                ns
            }
        };
        Some(Workload {
            netns,
            orchestrator: "netns".into(),
            workload_id: container.to_string(),
        })
    }
}

/// Addresses of an endpoint record, v4 then v6.
pub fn addresses(ep: &WorkloadEndpoint) -> Vec<IpAddr> {
    ep.ipv4_nets
        .iter()
        .map(|n| IpAddr::V4(n.addr()))
        .chain(ep.ipv6_nets.iter().map(|n| IpAddr::V6(n.addr())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_prefix_holds_every_host() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            wire_prefix_len(&[ip("172.31.250.1"), ip("172.31.250.9")]),
            24
        );
        assert_eq!(wire_prefix_len(&[ip("10.0.0.1"), ip("10.0.3.1")]), 22);
        assert_eq!(wire_prefix_len(&[]), 24);
    }
}
