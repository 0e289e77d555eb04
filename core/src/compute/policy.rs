//! Selector policies (reference 4.2, "Resulting semantics"), in the profile chains' mark
//! protocol:
//!
//! - A policy applies to an endpoint when its selector matches the endpoint's labels (its own,
//!   then its profiles' labels and tags); applicable policies run in `order`, then name.
//! - `cali-pi-<policy>` / `cali-po-<policy>` hold its inbound / outbound rules: the first rule
//!   that matches decides (allow RETURNs with the accept mark set, deny DROPs); no match
//!   clears the mark and the next policy runs.
//! - When at least one policy applied in a direction and none decided, the endpoint chain
//!   drops; profiles decide only in a direction no policy governs for the endpoint.
//! - Rule selectors become `hash:ip` sets of the addresses of every matching endpoint of the
//!   cluster (workloads' nets, host endpoints' expected IPs).

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::names::{policy_inbound_chain, policy_outbound_chain};
use super::profile::{chain_rules, CompiledProfile};
use crate::cluster::ClusterState;
use crate::iptables::{Chain, IpFamily};
use crate::model::{
    policy_order, EndpointState, HostEndpoint, LabelMap, Policy, PolicyType, WorkloadEndpoint,
};
use crate::selector::{Labels, Selector};

/// The policies applying to one endpoint, in the order they run, per direction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointPolicies {
    /// Governing traffic to the endpoint (`cali-pi-` chains).
    pub inbound: Vec<String>,
    /// Governing traffic from the endpoint (`cali-po-` chains).
    pub outbound: Vec<String>,
}

impl EndpointPolicies {
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty() && self.outbound.is_empty()
    }

    /// Every policy named, in either direction.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inbound
            .iter()
            .chain(&self.outbound)
            .map(String::as_str)
    }
}

/// Every policy of the state, in the order they run.
pub fn ordered_policies(state: &ClusterState) -> Vec<(&str, &Policy)> {
    let mut list: Vec<(&str, &Policy)> = state
        .policies
        .iter()
        .map(|(name, p)| (name.as_str(), &**p))
        .collect();
    list.sort_by(|a, b| policy_order(*a, *b));
    list
}

/// The labels selectors see for an endpoint (reference 3): its own, then per profile in
/// order that profile's labels and then its tags (value `""`). Looked up in place, so
/// matching a selector against every endpoint of the cluster allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct EndpointLabels<'a> {
    state: &'a ClusterState,
    own: &'a LabelMap,
    profiles: &'a [String],
}

impl Labels for EndpointLabels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.own.get(key) {
            return Some(v);
        }
        for p in self
            .profiles
            .iter()
            .filter_map(|p| self.state.profiles.get(p))
        {
            if let Some(v) = p.labels.as_ref().and_then(|l| l.get(key)) {
                return Some(v);
            }
            if p.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == key)) {
                return Some("");
            }
        }
        None
    }
}

/// Calls `f` with the labels selectors see for an endpoint with `own` labels and `profiles`.
pub fn with_labels<R>(
    state: &ClusterState,
    own: &LabelMap,
    profiles: &[String],
    f: impl FnOnce(&EndpointLabels<'_>) -> R,
) -> R {
    f(&EndpointLabels {
        state,
        own,
        profiles,
    })
}

/// The policies applying to a workload endpoint; none for an inactive one (it only drops).
pub fn endpoint_policies(
    state: &ClusterState,
    ordered: &[(&str, &Policy)],
    ep: &WorkloadEndpoint,
) -> EndpointPolicies {
    if ep.state != EndpointState::Active || ordered.is_empty() {
        return EndpointPolicies::default();
    }
    with_labels(state, &ep.labels, &ep.profile_ids, |labels| {
        let mut out = EndpointPolicies::default();
        for (name, policy) in ordered {
            if policy.selector.matches(labels) {
                if policy.governs(PolicyType::Ingress) {
                    out.inbound.push(name.to_string());
                }
                if policy.governs(PolicyType::Egress) {
                    out.outbound.push(name.to_string());
                }
            }
        }
        out
    })
}

/// A policy's `cali-pi-` and `cali-po-` chains in `family` and the tags and selectors its
/// rules reference. Every rule is commented `policy <name> rule <n>`.
pub fn policy_chains(name: &str, policy: &Policy, family: IpFamily) -> CompiledProfile {
    let mut out = CompiledProfile::default();
    let label = format!("policy {name}");
    out.chains = vec![
        Chain {
            name: policy_inbound_chain(name),
            rules: chain_rules(&policy.inbound_rules, family, &mut out, Some(&label)),
        },
        Chain {
            name: policy_outbound_chain(name),
            rules: chain_rules(&policy.outbound_rules, family, &mut out, Some(&label)),
        },
    ];
    out
}

/// The addresses a workload endpoint contributes to a selector's set: its nets when it is
/// active and the selector matches.
pub fn endpoint_matches(state: &ClusterState, sel: &Selector, ep: &WorkloadEndpoint) -> bool {
    ep.state == EndpointState::Active
        && with_labels(state, &ep.labels, &ep.profile_ids, |l| sel.matches(l))
}

/// Whether a host endpoint's labels (with its profiles') satisfy `sel`.
pub fn host_endpoint_matches(state: &ClusterState, sel: &Selector, hep: &HostEndpoint) -> bool {
    with_labels(state, &hep.labels, &hep.profile_ids, |l| sel.matches(l))
}

/// A host endpoint's expected IPs as set members.
pub fn host_endpoint_nets(hep: &HostEndpoint) -> impl Iterator<Item = IpNet> + '_ {
    hep.expected_ips().map(IpNet::from)
}

/// Members (both families) of a selector's set, scanning the whole cluster.
pub fn selector_members(state: &ClusterState, sel: &Selector) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for ep in state.endpoints.values() {
        if endpoint_matches(state, sel, ep) {
            out.extend(ep.nets());
        }
    }
    for hep in state.host_endpoints.values() {
        if host_endpoint_matches(state, sel, hep) {
            out.extend(host_endpoint_nets(hep));
        }
    }
    out
}
