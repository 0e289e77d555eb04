//! Host endpoints (reference `calico-v1-policy-and-routing.md` 4.4): policy on traffic to and
//! from this host itself. Forwarded traffic, traffic from local workloads and traffic from the
//! host to its workloads are left alone (they never reach these chains).
//!
//! - `cali-INPUT` sends packets from non-workload interfaces to `cali-from-host-endpoint`, and
//!   `cali-OUTPUT` packets to non-workload interfaces to `cali-to-host-endpoint` (only on a host
//!   with host endpoints, see [`super::config::HostConfig::host_endpoints`]).
//! - The dispatch chains pick the host endpoint by interface (`name`, `-i` inbound, `-o`
//!   outbound) or, for a host endpoint with only expected IPs, by this host's address (the
//!   destination inbound, the source outbound); several matches: the smallest id wins. A
//!   packet no host endpoint claims returns unpoliced (no final drop, as in Felix).
//! - `cali-fh-<id>` (inbound) and `cali-th-<id>` (outbound): established flows pass, invalid
//!   ones drop, then `cali-failsafe-in` / `cali-failsafe-out` (always open: ssh, BGP, DHCP in;
//!   etcd, BGP, DNS, DHCP out; see [`super::filter`]), then the policies applying to the host
//!   endpoint in that direction (same protocol as a workload's), else its profiles, else drop.

use std::collections::BTreeSet;

use super::names::{
    from_host_chain, policy_inbound_chain, policy_outbound_chain, profile_inbound_chain,
    profile_outbound_chain, to_host_chain, FAILSAFE_IN, FAILSAFE_OUT, FROM_HOST_ENDPOINT,
    TO_HOST_ENDPOINT,
};
use super::policy::with_labels;
use super::MARK_ACCEPT;
use crate::cluster::ClusterState;
use crate::iptables::{Chain, CtState, IpFamily, Match, Rule, Target};
use crate::model::{HostEndpoint, HostEndpointId, Policy, PolicyType};

/// The chains of this host's host endpoints in one family, and the policies and profiles
/// they jump to (whose chains must exist).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostEndpointChains {
    pub chains: Vec<Chain>,
    pub policies: BTreeSet<String>,
    pub profiles: BTreeSet<String>,
}

/// The host endpoints of `host`, by id.
pub fn local_host_endpoints<'a>(
    state: &'a ClusterState,
    host: &'a str,
) -> impl Iterator<Item = (&'a HostEndpointId, &'a HostEndpoint)> + 'a {
    state
        .host_endpoints
        .iter()
        .filter(move |(id, _)| id.host == host)
}

/// The policies applying to a host endpoint in `direction`, in the order they run.
pub fn host_endpoint_policies(
    state: &ClusterState,
    ordered: &[(&str, &Policy)],
    hep: &HostEndpoint,
    direction: PolicyType,
) -> Vec<String> {
    with_labels(state, &hep.labels, &hep.profile_ids, |labels| {
        ordered
            .iter()
            .filter(|(_, p)| p.governs(direction) && p.selector.matches(labels))
            .map(|(name, _)| name.to_string())
            .collect()
    })
}

/// One direction of host endpoint policy: its names and matches.
struct Side {
    direction: PolicyType,
    dispatch: &'static str,
    failsafe: &'static str,
    endpoint_chain: fn(&str) -> String,
    policy_chain: fn(&str) -> String,
    profile_chain: fn(&str) -> String,
    /// The interface match of a named host endpoint.
    iface: fn(String) -> Match,
    /// The address match of a host endpoint with expected IPs: this host's side.
    address: fn(ipnet::IpNet) -> Match,
}

const INBOUND: Side = Side {
    direction: PolicyType::Ingress,
    dispatch: FROM_HOST_ENDPOINT,
    failsafe: FAILSAFE_IN,
    endpoint_chain: from_host_chain,
    policy_chain: policy_inbound_chain,
    profile_chain: profile_inbound_chain,
    iface: |name| Match::InInterface {
        name,
        negate: false,
    },
    address: |net| Match::Destination { net, negate: false },
};

const OUTBOUND: Side = Side {
    direction: PolicyType::Egress,
    dispatch: TO_HOST_ENDPOINT,
    failsafe: FAILSAFE_OUT,
    endpoint_chain: to_host_chain,
    policy_chain: policy_outbound_chain,
    profile_chain: profile_outbound_chain,
    iface: |name| Match::OutInterface {
        name,
        negate: false,
    },
    address: |net| Match::Source { net, negate: false },
};

/// Every host endpoint chain of `host` in `family`; empty when the host has none.
pub fn host_endpoint_chains(
    state: &ClusterState,
    host: &str,
    ordered: &[(&str, &Policy)],
    family: IpFamily,
) -> HostEndpointChains {
    let mut out = HostEndpointChains::default();
    for side in [INBOUND, OUTBOUND] {
        side_chains(state, host, ordered, family, &side, &mut out);
    }
    out
}

/// The dispatch chain and per-endpoint chains of one direction.
fn side_chains(
    state: &ClusterState,
    host: &str,
    ordered: &[(&str, &Policy)],
    family: IpFamily,
    side: &Side,
    out: &mut HostEndpointChains,
) {
    let mut dispatch = Vec::new();
    let mut any = false;
    for (id, hep) in local_host_endpoints(state, host) {
        any = true;
        let chain = (side.endpoint_chain)(&id.endpoint);
        let comment = format!("host endpoint {id}");
        match &hep.name {
            Some(iface) => dispatch.push(
                Rule::new(
                    vec![(side.iface)(iface.clone())],
                    Target::Goto(chain.clone()),
                )
                .with_comment(comment),
            ),
            None => {
                for ip in hep.expected_ips() {
                    let net = ipnet::IpNet::from(ip);
                    if super::ipsets::family_of(&net) == family {
                        dispatch.push(
                            Rule::new(vec![(side.address)(net)], Target::Goto(chain.clone()))
                                .with_comment(comment.clone()),
                        );
                    }
                }
            }
        }
        let policies = host_endpoint_policies(state, ordered, hep, side.direction);
        out.chains.push(Chain {
            name: chain,
            rules: endpoint_rules(id, hep, &policies, side),
        });
        out.policies.extend(policies);
        out.profiles.extend(hep.profile_ids.iter().cloned());
    }
    if any {
        out.chains.push(Chain {
            name: side.dispatch.into(),
            rules: dispatch,
        });
    }
}

fn endpoint_rules(
    id: &HostEndpointId,
    hep: &HostEndpoint,
    policies: &[String],
    side: &Side,
) -> Vec<Rule> {
    let accepted = || Match::Mark {
        value: MARK_ACCEPT,
        mask: MARK_ACCEPT,
    };
    let ct = |states: &[CtState]| Match::ConntrackState {
        states: states.iter().copied().collect(),
    };
    let mut rules = vec![
        Rule::new(
            vec![ct(&[CtState::Related, CtState::Established])],
            Target::Accept,
        ),
        Rule::new(vec![ct(&[CtState::Invalid])], Target::Drop),
        Rule::new(vec![], Target::Jump(side.failsafe.into())),
        Rule::new(
            vec![],
            Target::SetMark {
                value: 0,
                mask: MARK_ACCEPT,
            },
        ),
    ];
    let (chains, what): (Vec<String>, &str) = if policies.is_empty() {
        let profiles = hep.profile_ids.iter().map(|p| (side.profile_chain)(p));
        (profiles.collect(), "profile")
    } else {
        let policies = policies.iter().map(|p| (side.policy_chain)(p));
        (policies.collect(), "policy")
    };
    for chain in chains {
        rules.push(Rule::new(vec![], Target::Jump(chain)));
        rules.push(
            Rule::new(vec![accepted()], Target::Return)
                .with_comment(format!("{what} accepted packet")),
        );
    }
    rules.push(
        Rule::new(vec![], Target::Drop)
            .with_comment(format!("drop if no {what} accepted (host endpoint {id})")),
    );
    rules
}
