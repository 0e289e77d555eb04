//! Which endpoints a change can affect, from what the agents' incremental calculators
//! changed in their kernels (the `Change`s each step applied: chains, ipsets, routes,
//! neighbours, sysctls, BIRD), what BGP moved, and what the command plumbed.
//!
//! A flow's verdict depends only on the kernels it crosses: its source's host and its
//! destination's host (and their routes to each other). Every part of a host's kernel that
//! a flow reads is either an endpoint's own chains, sysctls and routes, a profile's chains or
//! a tag's ipset (both consulted only from the chains of endpoints using the profile), or
//! shared by the whole host (dispatch chains, hooks, BIRD). So an endpoint none of whose own
//! pieces, profiles' chains, tag sets or routes changed keeps every verdict, and the flows to
//! re-evaluate are those with an affected source or destination.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::compute::names::{
    from_wl_chain, profile_inbound_chain, profile_outbound_chain, tag_set, to_wl_chain,
};
use calico_core::iptables::IpFamily;
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

/// An index of both states' endpoints by host, interface, profile, tag set and address.
struct Index<'a> {
    by_host: BTreeMap<&'a str, BTreeSet<&'a EndpointId>>,
    by_iface: BTreeMap<(&'a str, &'a str), BTreeSet<&'a EndpointId>>,
    by_profile: BTreeMap<(&'a str, &'a str), BTreeSet<&'a EndpointId>>,
    /// Tag set name → profiles whose rules name the tag.
    profiles_of_set: BTreeMap<String, BTreeSet<&'a str>>,
    addrs: Vec<(IpAddr, &'a EndpointId)>,
}

impl<'a> Index<'a> {
    fn new(states: [&'a ClusterState; 2]) -> Self {
        let mut index = Index {
            by_host: BTreeMap::new(),
            by_iface: BTreeMap::new(),
            by_profile: BTreeMap::new(),
            profiles_of_set: BTreeMap::new(),
            addrs: Vec::new(),
        };
        for state in states {
            for (id, ep) in &state.endpoints {
                let id: &EndpointId = id;
                index.by_host.entry(&id.host).or_default().insert(id);
                index
                    .by_iface
                    .entry((&id.host, &ep.name))
                    .or_default()
                    .insert(id);
                for profile in &ep.profile_ids {
                    index
                        .by_profile
                        .entry((&id.host, profile))
                        .or_default()
                        .insert(id);
                }
                index
                    .addrs
                    .extend(addresses(ep).into_iter().map(|a| (a, id)));
            }
            for (name, profile) in &state.profiles {
                let Some(rules) = &profile.rules else {
                    continue;
                };
                let rules = rules.inbound_rules.iter().chain(&rules.outbound_rules);
                for tag in rules.flat_map(|r| r.src_tag.iter().chain(&r.dst_tag)) {
                    for family in [IpFamily::V4, IpFamily::V6] {
                        index
                            .profiles_of_set
                            .entry(tag_set(tag, family))
                            .or_default()
                            .insert(name);
                    }
                }
            }
        }
        index
    }

    fn on_host(&self, host: &str, out: &mut BTreeSet<EndpointId>) {
        if let Some(ids) = self.by_host.get(host) {
            out.extend(ids.iter().map(|id| (*id).clone()));
        }
    }

    /// Adds the endpoints of `host` whose interface is `iface`; whether there were any.
    fn with_iface(&self, host: &str, iface: &str, out: &mut BTreeSet<EndpointId>) -> bool {
        match self.by_iface.get(&(host, iface)) {
            Some(ids) => {
                out.extend(ids.iter().map(|id| (*id).clone()));
                true
            }
            None => false,
        }
    }

    fn inside(&self, net: &IpNet, out: &mut BTreeSet<EndpointId>) {
        out.extend(
            self.addrs
                .iter()
                .filter(|(a, _)| net.contains(a))
                .map(|(_, id)| (*id).clone()),
        );
    }

    /// The endpoints of `host` a chain named `chain` is consulted for; every endpoint of the
    /// host for a chain that is not an endpoint's or a profile's (dispatch, global).
    fn chain_users(&self, host: &str, chain: &str, out: &mut BTreeSet<EndpointId>) {
        let ifaces = self
            .by_iface
            .range((host, "")..)
            .take_while(|((h, _), _)| *h == host);
        for ((_, iface), ids) in ifaces {
            if chain == to_wl_chain(iface) || chain == from_wl_chain(iface) {
                out.extend(ids.iter().map(|id| (*id).clone()));
                return;
            }
        }
        let profiles = self
            .by_profile
            .range((host, "")..)
            .take_while(|((h, _), _)| *h == host);
        let mut matched = false;
        for ((_, profile), ids) in profiles {
            if chain == profile_inbound_chain(profile) || chain == profile_outbound_chain(profile) {
                out.extend(ids.iter().map(|id| (*id).clone()));
                matched = true;
            }
        }
        if !matched {
            self.on_host(host, out);
        }
    }

    fn set_users(&self, host: &str, set: &str, out: &mut BTreeSet<EndpointId>) {
        let Some(profiles) = self.profiles_of_set.get(set) else {
            return self.on_host(host, out);
        };
        for profile in profiles {
            if let Some(ids) = self.by_profile.get(&(host, *profile)) {
                out.extend(ids.iter().map(|id| (*id).clone()));
            }
        }
    }
}

/// The endpoints whose flows may have changed: those whose record changed, and those the
/// observed kernel changes touch (see the module doc).
pub fn endpoints(
    before: &ClusterState,
    after: &ClusterState,
    observed: &Observed,
    namespaces: &BTreeMap<(String, String), String>,
) -> BTreeSet<EndpointId> {
    let index = Index::new([before, after]);
    let mut out = BTreeSet::new();
    if observed.everything {
        for state in [before, after] {
            out.extend(state.endpoints.keys().map(|id| (**id).clone()));
        }
        return out;
    }
    for (id, ep) in &before.endpoints {
        if after.endpoints.get(id) != Some(ep) {
            out.insert((**id).clone());
        }
    }
    for id in after.endpoints.keys() {
        if !before.endpoints.contains_key(id) {
            out.insert((**id).clone());
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
                out.extend(
                    state
                        .endpoints
                        .keys()
                        .filter(|id| id.host == *host && id.workload == *workload)
                        .map(|id| (**id).clone()),
                );
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

/// The endpoints one applied change on `host` touches.
fn touched(index: &Index<'_>, host: &str, change: &Change, out: &mut BTreeSet<EndpointId>) {
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
