//! Host endpoints (reference `calico-v1-policy-and-routing.md` 4.4): policy on traffic
//! arriving at this host itself. Forwarded traffic and traffic from local workloads are left
//! alone (they never reach these chains).
//!
//! - `cali-INPUT` sends packets from non-workload interfaces to `cali-from-host-endpoint`
//!   (only on a host with host endpoints, see [`super::config::HostConfig::host_endpoints`]).
//! - `cali-from-host-endpoint` dispatches by interface (`name`) or, for a host endpoint with
//!   only expected IPs, by destination address; several matches: the smallest id wins. A
//!   packet no host endpoint claims returns unpoliced.
//! - `cali-fh-<id>`: established flows pass, invalid ones drop, then `cali-failsafe-in`
//!   (always open: ssh, BGP, DHCP), then the inbound policies applying to the host endpoint
//!   (same protocol as a workload's), else its profiles, else drop.
//!
//! Only the inbound direction is policed: our filter table hooks no OUTPUT chain.

use std::collections::BTreeSet;

use super::names::{
    from_host_chain, policy_inbound_chain, profile_inbound_chain, FAILSAFE_IN, FROM_HOST_ENDPOINT,
};
use super::policy::with_labels;
use super::MARK_ACCEPT;
use crate::cluster::ClusterState;
use crate::iptables::{Chain, CtState, IpFamily, Match, Rule, Target};
use crate::model::{HostEndpoint, HostEndpointId, Policy, PolicyType, PortRange, Protocol};

/// Inbound failsafe ports (Felix 2.2's `tcp:22, udp:68` plus BGP's tcp 179, so a bad policy
/// cannot cut the BGP mesh: later Felix releases open 179 too).
pub const FAILSAFE_INBOUND: &[(Protocol, u16)] = &[
    (Protocol::Tcp, 22),
    (Protocol::Tcp, 179),
    (Protocol::Udp, 68),
];

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

/// The inbound policies applying to a host endpoint, in the order they run.
pub fn host_endpoint_policies(
    state: &ClusterState,
    ordered: &[(&str, &Policy)],
    hep: &HostEndpoint,
) -> Vec<String> {
    with_labels(state, &hep.labels, &hep.profile_ids, |labels| {
        ordered
            .iter()
            .filter(|(_, p)| p.governs(PolicyType::Ingress) && p.selector.matches(labels))
            .map(|(name, _)| name.to_string())
            .collect()
    })
}

/// Every host endpoint chain of `host` in `family`; empty when the host has none.
pub fn host_endpoint_chains(
    state: &ClusterState,
    host: &str,
    ordered: &[(&str, &Policy)],
    family: IpFamily,
) -> HostEndpointChains {
    let mut out = HostEndpointChains::default();
    let mut dispatch = Vec::new();
    for (id, hep) in local_host_endpoints(state, host) {
        let chain = from_host_chain(&id.endpoint);
        let comment = format!("host endpoint {id}");
        match &hep.name {
            Some(iface) => dispatch.push(
                Rule::new(
                    vec![Match::InInterface {
                        name: iface.clone(),
                        negate: false,
                    }],
                    Target::Goto(chain.clone()),
                )
                .with_comment(comment),
            ),
            None => {
                for ip in hep.expected_ips() {
                    let net = ipnet::IpNet::from(ip);
                    if super::ipsets::family_of(&net) == family {
                        dispatch.push(
                            Rule::new(
                                vec![Match::Destination { net, negate: false }],
                                Target::Goto(chain.clone()),
                            )
                            .with_comment(comment.clone()),
                        );
                    }
                }
            }
        }
        let policies = host_endpoint_policies(state, ordered, hep);
        out.chains.push(Chain {
            name: chain,
            rules: endpoint_rules(id, hep, &policies),
        });
        out.policies.extend(policies);
        out.profiles.extend(hep.profile_ids.iter().cloned());
    }
    if out.chains.is_empty() {
        return out;
    }
    out.chains.push(Chain {
        name: FROM_HOST_ENDPOINT.into(),
        rules: dispatch,
    });
    out.chains.push(failsafe_chain());
    out
}

fn failsafe_chain() -> Chain {
    let rules = FAILSAFE_INBOUND
        .iter()
        .map(|(protocol, port)| {
            Rule::new(
                vec![
                    Match::Protocol {
                        protocol: *protocol,
                        negate: false,
                    },
                    Match::DestinationPorts {
                        ports: vec![PortRange::single(*port)],
                    },
                ],
                Target::Accept,
            )
            .with_comment("failsafe")
        })
        .collect();
    Chain {
        name: FAILSAFE_IN.into(),
        rules,
    }
}

fn endpoint_rules(id: &HostEndpointId, hep: &HostEndpoint, policies: &[String]) -> Vec<Rule> {
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
        Rule::new(vec![], Target::Jump(FAILSAFE_IN.into())),
        Rule::new(
            vec![],
            Target::SetMark {
                value: 0,
                mask: MARK_ACCEPT,
            },
        ),
    ];
    let (chains, what): (Vec<String>, &str) = if policies.is_empty() {
        let profiles = hep.profile_ids.iter().map(|p| profile_inbound_chain(p));
        (profiles.collect(), "profile")
    } else {
        let policies = policies.iter().map(|p| policy_inbound_chain(p));
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
