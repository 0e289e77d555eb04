//! Which endpoints a change can affect, and in which direction, from what the agents'
//! incremental calculators changed in their kernels (the `Change`s each step applied: chains,
//! ipsets, routes, neighbours, sysctls, BIRD), what BGP moved, and what the command plumbed.
//!
//! A flow's verdict depends only on the kernels it crosses: its source's host and its
//! destination's host (and their routes to each other). Every part of a host's kernel that
//! a flow reads is either an endpoint's own chains, sysctls and routes, a profile's or a
//! policy's chains, a tag's or a selector's ipset (consulted only from the chains of the
//! endpoints using that profile or policy), or shared by the whole host (dispatch chains,
//! hooks, BIRD). So an endpoint none of whose own pieces, profiles', policies' or sets'
//! chains or routes changed keeps every verdict, and the flows to re-evaluate are those with
//! an affected source or destination.
//!
//! Profile and policy chains are directional: `cali-FORWARD` returns established packets
//! before any endpoint chain, so an inbound chain (`cali-pri-`, `cali-pi-`) and the sets its
//! rules match decide only new packets *to* the endpoints using it, and an outbound one only
//! packets *from* them. A change there affects one side of those endpoints' flows; anything
//! else (the endpoint's own chains, routes, records) affects both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::compute::names::{
    from_wl_chain, policy_inbound_chain, policy_outbound_chain, profile_inbound_chain,
    profile_outbound_chain, to_wl_chain,
};
use calico_core::compute::policy::{endpoint_policies, ordered_policies, policy_chains};
use calico_core::compute::profile::profile_chains;
use calico_core::iptables::{Chain, IpFamily, Match};
use calico_core::model::EndpointId;
use calico_core::plan::Change;
use ipnet::IpNet;

use super::build::addresses;

/// Everything a what-if observed while the change settled.
#[derive(Debug, Default)]
pub struct Observed {
    /// Each host's agent changes, in the order applied.
    pub changes: BTreeMap<String, Vec<Change>>,
    /// Destinations whose BGP-learnt route changed on some host.
    pub bgp_destinations: BTreeSet<IpNet>,
    /// Hosts whose agent was started or stopped, or whose kernel changed in a way the agent
    /// did not report (the command's own plumbing): every endpoint on them.
    pub whole_hosts: BTreeSet<String>,
    /// Workload namespaces (host, namespace) whose links the command changed.
    pub namespaces: BTreeSet<(String, String)>,
    /// When something changed that is not tied to endpoints (BIRD configs): every endpoint.
    pub everything: bool,
}

/// Which of an endpoint's flows a change may alter: those to it, those from it, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sides {
    pub inbound: bool,
    pub outbound: bool,
}

impl Sides {
    pub const BOTH: Sides = Sides {
        inbound: true,
        outbound: true,
    };
    pub const INBOUND: Sides = Sides {
        inbound: true,
        outbound: false,
    };
    pub const OUTBOUND: Sides = Sides {
        inbound: false,
        outbound: true,
    };

    /// Whether any flow of the endpoint may change.
    pub fn any(self) -> bool {
        self.inbound || self.outbound
    }
}

/// The affected endpoints, each with the sides of its flows that may change.
pub type Affected = BTreeMap<EndpointId, Sides>;

fn mark<'a>(out: &mut Affected, ids: impl IntoIterator<Item = &'a EndpointId>, sides: Sides) {
    for id in ids {
        let entry = out.entry(id.clone()).or_default();
        entry.inbound |= sides.inbound;
        entry.outbound |= sides.outbound;
    }
}

/// An index of both states' endpoints by host, interface and address, and of the profile and
/// policy chains (and the sets their rules match) each endpoint's chains consult.
struct Index<'a> {
    by_host: BTreeMap<&'a str, BTreeSet<&'a EndpointId>>,
    by_iface: BTreeMap<(&'a str, &'a str), BTreeSet<&'a EndpointId>>,
    /// (host, profile or policy chain) → the side it decides and the endpoints of that host
    /// whose own chains jump to it.
    chain_users: BTreeMap<(&'a str, String), (Sides, BTreeSet<&'a EndpointId>)>,
    /// Set name → the profile and policy chains whose rules match it.
    set_chains: BTreeMap<String, BTreeSet<String>>,
    addrs: Vec<(IpAddr, &'a EndpointId)>,
}

impl<'a> Index<'a> {
    fn new(states: [&'a ClusterState; 2]) -> Self {
        let mut index = Index {
            by_host: BTreeMap::new(),
            by_iface: BTreeMap::new(),
            chain_users: BTreeMap::new(),
            set_chains: BTreeMap::new(),
            addrs: Vec::new(),
        };
        for state in states {
            let ordered = ordered_policies(state);
            for (id, ep) in state.endpoints.iter() {
                let id: &EndpointId = id;
                index.by_host.entry(&id.host).or_default().insert(id);
                index
                    .by_iface
                    .entry((&id.host, &ep.name))
                    .or_default()
                    .insert(id);
                let policies = endpoint_policies(state, &ordered, ep);
                let consulted = ep
                    .profile_ids
                    .iter()
                    .map(|p| (profile_inbound_chain(p), Sides::INBOUND))
                    .chain(
                        ep.profile_ids
                            .iter()
                            .map(|p| (profile_outbound_chain(p), Sides::OUTBOUND)),
                    )
                    .chain(
                        policies
                            .inbound
                            .iter()
                            .map(|p| (policy_inbound_chain(p), Sides::INBOUND)),
                    )
                    .chain(
                        policies
                            .outbound
                            .iter()
                            .map(|p| (policy_outbound_chain(p), Sides::OUTBOUND)),
                    );
                for (chain, sides) in consulted {
                    let users = index
                        .chain_users
                        .entry((&id.host, chain))
                        .or_insert_with(|| (sides, BTreeSet::new()));
                    users.1.insert(id);
                }
                index
                    .addrs
                    .extend(addresses(ep).into_iter().map(|a| (a, id)));
            }
            for family in [IpFamily::V4, IpFamily::V6] {
                let compiled = state
                    .profiles
                    .iter()
                    .map(|(name, p)| profile_chains(name, Some(p), family))
                    .chain(
                        state
                            .policies
                            .iter()
                            .map(|(name, p)| policy_chains(name, p, family)),
                    );
                for chain in compiled.flat_map(|c| c.chains) {
                    index.add_set_matches(&chain);
                }
            }
        }
        index
    }

    fn add_set_matches(&mut self, chain: &Chain) {
        for m in chain.rules.iter().flat_map(|r| &r.matches) {
            if let Match::Set { name, .. } = m {
                self.set_chains
                    .entry(name.clone())
                    .or_default()
                    .insert(chain.name.clone());
            }
        }
    }

    fn on_host(&self, host: &str, out: &mut Affected) {
        if let Some(ids) = self.by_host.get(host) {
            mark(out, ids.iter().copied(), Sides::BOTH);
        }
    }

    /// Marks the endpoints of `host` whose interface is `iface`; whether there were any.
    fn with_iface(&self, host: &str, iface: &str, out: &mut Affected) -> bool {
        match self.by_iface.get(&(host, iface)) {
            Some(ids) => {
                mark(out, ids.iter().copied(), Sides::BOTH);
                true
            }
            None => false,
        }
    }

    fn inside(&self, net: &IpNet, out: &mut Affected) {
        let ids = self
            .addrs
            .iter()
            .filter(|(a, _)| net.contains(a))
            .map(|(_, id)| *id);
        mark(out, ids, Sides::BOTH);
    }

    /// The endpoints of `host` a chain named `chain` is consulted for, on the side it
    /// decides; every endpoint of the host for a chain that is not an endpoint's, a profile's
    /// or a policy's (dispatch, global).
    fn chain_users(&self, host: &str, chain: &str, out: &mut Affected) {
        let ifaces = self
            .by_iface
            .range((host, "")..)
            .take_while(|((h, _), _)| *h == host);
        for ((_, iface), ids) in ifaces {
            if chain == to_wl_chain(iface) || chain == from_wl_chain(iface) {
                mark(out, ids.iter().copied(), Sides::BOTH);
                return;
            }
        }
        match self.chain_users.get(&(host, chain.to_string())) {
            Some((sides, ids)) => mark(out, ids.iter().copied(), *sides),
            None => self.on_host(host, out),
        }
    }

    /// The endpoints of `host` whose profile or policy chains match set `set`; every
    /// endpoint of the host for a set no such chain names (the pools, the hosts).
    fn set_users(&self, host: &str, set: &str, out: &mut Affected) {
        let Some(chains) = self.set_chains.get(set) else {
            return self.on_host(host, out);
        };
        for chain in chains {
            if let Some((sides, ids)) = self.chain_users.get(&(host, chain.clone())) {
                mark(out, ids.iter().copied(), *sides);
            }
        }
    }
}

/// The endpoints whose flows may have changed, with the sides that may: those whose record
/// changed (both), and those the observed kernel changes touch (see the module doc).
pub fn endpoints(
    before: &ClusterState,
    after: &ClusterState,
    observed: &Observed,
    namespaces: &BTreeMap<(String, String), String>,
) -> Affected {
    let mut out = Affected::new();
    if observed.everything {
        for state in [before, after] {
            mark(
                &mut out,
                state.endpoints.keys().map(|id| &**id),
                Sides::BOTH,
            );
        }
        return out;
    }
    let index = Index::new([before, after]);
    for (id, ep) in before.endpoints.iter() {
        if after.endpoints.get(id) != Some(ep) {
            mark(&mut out, [&**id], Sides::BOTH);
        }
    }
    for id in after.endpoints.keys() {
        if !before.endpoints.contains_key(id) {
            mark(&mut out, [&**id], Sides::BOTH);
        }
    }
    for host in &observed.whole_hosts {
        index.on_host(host, &mut out);
    }
    for net in &observed.bgp_destinations {
        index.inside(net, &mut out);
    }
    for ((host, workload), ns) in namespaces {
        if observed.namespaces.contains(&(host.clone(), ns.clone())) {
            for state in [before, after] {
                let ids = state
                    .endpoints
                    .keys()
                    .filter(|id| id.host == *host && id.workload == *workload)
                    .map(|id| &**id);
                mark(&mut out, ids, Sides::BOTH);
            }
        }
    }
    for (host, changes) in &observed.changes {
        for change in changes {
            touched(&index, host, change, &mut out);
        }
    }
    out
}

/// The hosts whose own flows (as ends, when they have host endpoints) may have changed:
/// every host whose kernel the change touched at all (its agent's changes, its workloads'
/// plumbing, a BGP route to its address), or whose registration or host endpoints changed.
/// Coarser than the endpoints' index, and as sound: a host's flows cross only its own
/// kernel and the other end's, which the other end's sides cover.
pub fn hosts(before: &ClusterState, after: &ClusterState, observed: &Observed) -> BTreeSet<String> {
    let all = || {
        [before, after]
            .into_iter()
            .flat_map(|s| s.hosts.keys().cloned())
    };
    if observed.everything {
        return all().collect();
    }
    let mut out: BTreeSet<String> = observed.whole_hosts.clone();
    out.extend(
        observed
            .changes
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(h, _)| h.clone()),
    );
    out.extend(observed.namespaces.iter().map(|(h, _)| h.clone()));
    for host in all() {
        let record = (before.hosts.get(&host), after.hosts.get(&host));
        let addrs = [record.0, record.1].into_iter().flatten().flat_map(|h| {
            let v4 = h.ip_v4.into_iter().chain(h.bird_ip).map(IpAddr::V4);
            v4.chain(h.ip_v6.map(IpAddr::V6)).collect::<Vec<_>>()
        });
        let routed = addrs
            .into_iter()
            .any(|a| observed.bgp_destinations.iter().any(|n| n.contains(&a)));
        if routed || record.0 != record.1 {
            out.insert(host);
        }
    }
    let heps = |s: &ClusterState, host: &str| -> Vec<_> {
        s.host_endpoints
            .iter()
            .filter(|(id, _)| id.host == host)
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect()
    };
    for host in all() {
        if heps(before, &host) != heps(after, &host) {
            out.insert(host);
        }
    }
    out
}

/// The endpoints one applied change on `host` touches.
fn touched(index: &Index<'_>, host: &str, change: &Change, out: &mut Affected) {
    match change {
        Change::CreateChain { chain, .. } | Change::RewriteChain { chain, .. } => {
            index.chain_users(host, &chain.name, out);
        }
        Change::DeleteChain { name, .. } => index.chain_users(host, name, out),
        Change::CreateIpSet(set) | Change::UpdateIpSet(set) => {
            index.set_users(host, &set.name, out);
        }
        Change::DeleteIpSet { name } => index.set_users(host, name, out),
        Change::AddRoute(route) | Change::DelRoute(route) => index.inside(&route.dst, out),
        Change::AddNeighbour(n) | Change::DelNeighbour(n) => {
            index.inside(&IpNet::from(n.ip), out);
        }
        Change::SetSysctl { key, .. } => {
            // Per-interface keys name the interface between dots; others are host-wide.
            if !key.split('.').any(|part| index.with_iface(host, part, out)) {
                index.on_host(host, out);
            }
        }
        // Hooks, BIRD, and whatever the dataplane vocabulary grows: the whole host.
        _ => index.on_host(host, out),
    }
}
