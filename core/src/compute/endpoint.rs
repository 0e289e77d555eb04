//! Per-endpoint chains (reference 3.6) and the host plumbing of a local workload: its routes,
//! static neighbours and interface sysctls (reference 3.2, 3.3).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::names::{
    from_wl_chain, policy_inbound_chain, policy_outbound_chain, profile_inbound_chain,
    profile_outbound_chain, to_wl_chain,
};
use super::policy::EndpointPolicies;
use super::MARK_ACCEPT;
use crate::desired::{Neighbour, ProxyNeighbour, Route};
use crate::iptables::{Chain, Match, Rule, Target};
use crate::model::{EndpointId, EndpointState, WorkloadEndpoint};

/// The endpoint's `cali-fw-<iface>` (outbound) and `cali-tw-<iface>` (inbound) chains.
///
/// Each clears the accept mark, runs the policies applying in its direction in order (one that
/// accepts sets the mark and the chain returns) and drops when there were some; otherwise it
/// runs the endpoint's profiles the same way and drops what none accepted. The outbound chain
/// also drops packets whose source MAC is not the workload's. An inactive endpoint's chains
/// only drop.
pub fn endpoint_chains(
    iface: &str,
    id: &EndpointId,
    ep: &WorkloadEndpoint,
    policies: &EndpointPolicies,
) -> Vec<Chain> {
    let from = from_wl_chain(iface);
    let to = to_wl_chain(iface);
    if ep.state == EndpointState::Inactive {
        let drop = |name: String| Chain {
            name,
            rules: vec![
                Rule::new(vec![], Target::Drop).with_comment(format!("endpoint {id} is inactive"))
            ],
        };
        return vec![drop(from), drop(to)];
    }
    let mac_check = Rule::new(
        vec![Match::MacSource {
            mac: ep.mac,
            negate: true,
        }],
        Target::Drop,
    )
    .with_comment("incorrect source mac");
    vec![
        Chain {
            name: from,
            rules: policy_rules(
                id,
                ep,
                Some(mac_check),
                (&policies.outbound, policy_outbound_chain),
                profile_outbound_chain,
            ),
        },
        Chain {
            name: to,
            rules: policy_rules(
                id,
                ep,
                None,
                (&policies.inbound, policy_inbound_chain),
                profile_inbound_chain,
            ),
        },
    ]
}

fn policy_rules(
    id: &EndpointId,
    ep: &WorkloadEndpoint,
    mac_check: Option<Rule>,
    (policies, policy_chain): (&[String], fn(&str) -> String),
    profile_chain: fn(&str) -> String,
) -> Vec<Rule> {
    let mut rules = vec![Rule::new(
        vec![],
        Target::SetMark {
            value: 0,
            mask: MARK_ACCEPT,
        },
    )];
    rules.extend(mac_check);
    let accepted = || Match::Mark {
        value: MARK_ACCEPT,
        mask: MARK_ACCEPT,
    };
    if !policies.is_empty() {
        for policy in policies {
            rules.push(Rule::new(vec![], Target::Jump(policy_chain(policy))));
            rules.push(
                Rule::new(vec![accepted()], Target::Return).with_comment("policy accepted packet"),
            );
        }
        rules.push(
            Rule::new(vec![], Target::Drop)
                .with_comment(format!("drop if no policy accepted (endpoint {id})")),
        );
        return rules;
    }
    for profile in &ep.profile_ids {
        rules.push(Rule::new(vec![], Target::Jump(profile_chain(profile))));
        rules.push(
            Rule::new(
                vec![Match::Mark {
                    value: MARK_ACCEPT,
                    mask: MARK_ACCEPT,
                }],
                Target::Return,
            )
            .with_comment("profile accepted packet"),
        );
    }
    rules.push(
        Rule::new(vec![], Target::Drop)
            .with_comment(format!("default drop if no match (endpoint {id})")),
    );
    rules
}

/// Host-wide sysctls. The node agent owns forwarding: a calico host routes between workloads,
/// so it turns IPv4 and IPv6 forwarding on itself rather than relying on calicoctl having done so.
pub fn host_sysctls() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("net.ipv4.ip_forward".to_string(), "1".to_string()),
        ("net.ipv6.conf.all.forwarding".to_string(), "1".to_string()),
    ])
}

/// Routes, neighbours and sysctls of one local workload interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointPlumbing {
    pub routes: BTreeSet<Route>,
    pub neighbours: BTreeSet<Neighbour>,
    pub proxy_neighbours: BTreeSet<ProxyNeighbour>,
    pub sysctls: BTreeMap<String, String>,
}

impl EndpointPlumbing {
    /// What the host needs for the endpoint behind `iface`: nothing for an inactive endpoint;
    /// otherwise a device route per address, a static neighbour per IPv4 address, and the
    /// interface sysctls (the IPv6 one only when the endpoint has IPv6 addresses, with a
    /// proxy-NDP entry for its `ipv6_gateway` when it has one).
    pub fn of(iface: &str, ep: &WorkloadEndpoint) -> Self {
        let mut out = EndpointPlumbing::default();
        if ep.state == EndpointState::Inactive {
            return out;
        }
        for net in ep.nets() {
            out.routes.insert(Route {
                dst: net,
                dev: iface.to_string(),
            });
            if let IpNet::V4(v4) = net {
                out.neighbours.insert(Neighbour {
                    ip: v4.addr().into(),
                    mac: ep.mac,
                    dev: iface.to_string(),
                });
            }
        }
        let mut set = |k: String| out.sysctls.insert(k, "1".to_string());
        set(format!("net.ipv4.conf.{iface}.rp_filter"));
        set(format!("net.ipv4.conf.{iface}.route_localnet"));
        set(format!("net.ipv4.conf.{iface}.proxy_arp"));
        out.sysctls.insert(
            format!("net.ipv4.neigh.{iface}.proxy_delay"),
            "0".to_string(),
        );
        if !ep.ipv6_nets.is_empty() {
            out.sysctls
                .insert(format!("net.ipv6.conf.{iface}.proxy_ndp"), "1".to_string());
            if let Some(gw) = ep.ipv6_gateway {
                out.proxy_neighbours.insert(ProxyNeighbour {
                    ip: gw,
                    dev: iface.to_string(),
                });
            }
        }
        out
    }
}
