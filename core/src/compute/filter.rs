//! The global filter chains `cali-FORWARD`, `cali-INPUT` and `cali-OUTPUT` (reference 3.4),
//! hooked from the kernel's FORWARD, INPUT and OUTPUT chains, and on a host with host
//! endpoints the failsafe chains, whose ports come from the host's config.

use std::collections::{BTreeMap, BTreeSet};

use super::config::{EndpointToHostAction, FailsafePort, HostConfig};
use super::names::{
    ALL_HOSTS_SET, FAILSAFE_IN, FAILSAFE_OUT, FORWARD_CHAIN, FROM_HOST_ENDPOINT, FROM_WL_DISPATCH,
    INPUT_CHAIN, OUTPUT_CHAIN, TO_HOST_ENDPOINT, TO_WL_DISPATCH,
};
use crate::iptables::{Chain, CtState, IpFamily, Match, Rule, SetDirection, Target};
use crate::model::{PortRange, Protocol};

/// ICMPv6 types a workload may always send to its host: MLD (130-132), router solicitation
/// (133), neighbour solicitation and advertisement (135, 136).
pub const ICMPV6_TO_HOST: [u8; 6] = [130, 131, 132, 133, 135, 136];

/// Kernel chain → our chain, for the filter table of either family.
pub fn hooks() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("FORWARD".to_string(), FORWARD_CHAIN.to_string()),
        ("INPUT".to_string(), INPUT_CHAIN.to_string()),
        ("OUTPUT".to_string(), OUTPUT_CHAIN.to_string()),
    ])
}

fn iface_in(name: &str, negate: bool) -> Match {
    Match::InInterface {
        name: name.to_string(),
        negate,
    }
}

fn iface_out(name: &str) -> Match {
    Match::OutInterface {
        name: name.to_string(),
        negate: false,
    }
}

fn ct(states: &[CtState]) -> Match {
    Match::ConntrackState {
        states: states.iter().copied().collect::<BTreeSet<_>>(),
    }
}

fn proto(protocol: Protocol) -> Match {
    Match::Protocol {
        protocol,
        negate: false,
    }
}

/// `cali-FORWARD`, `cali-INPUT` and `cali-OUTPUT` for one family, and the failsafe chains
/// when the host has host endpoints.
pub fn global_chains(cfg: &HostConfig, family: IpFamily) -> Vec<Chain> {
    let mut chains = vec![
        forward_chain(cfg),
        input_chain(cfg, family),
        output_chain(cfg),
    ];
    if cfg.host_endpoints {
        chains.push(failsafe_chain(FAILSAFE_IN, &cfg.failsafe_inbound));
        chains.push(failsafe_chain(FAILSAFE_OUT, &cfg.failsafe_outbound));
    }
    chains
}

/// `cali-OUTPUT`: what this host itself sends. Traffic to its workloads is never policed;
/// the rest goes through the host endpoints' outbound policy (when there are any).
pub fn output_chain(cfg: &HostConfig) -> Chain {
    let wl = cfg.wildcard();
    let mut rules = vec![Rule::new(vec![iface_out(&wl)], Target::Return)
        .with_comment("host to workload traffic is not policed")];
    if cfg.host_endpoints {
        rules.push(
            Rule::new(vec![], Target::Jump(TO_HOST_ENDPOINT.into()))
                .with_comment("host endpoint policy"),
        );
    }
    Chain {
        name: OUTPUT_CHAIN.into(),
        rules,
    }
}

/// `cali-failsafe-in` / `cali-failsafe-out`: accept each configured protocol and destination
/// port, whatever the host endpoints' policy says.
fn failsafe_chain(name: &str, ports: &[FailsafePort]) -> Chain {
    let rules = ports
        .iter()
        .map(|(protocol, port)| {
            Rule::new(
                vec![
                    proto(*protocol),
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
        name: name.into(),
        rules,
    }
}

/// `cali-FORWARD`: drop invalid, return established, run the sender's outbound and the
/// receiver's inbound policy, then accept what both allowed.
pub fn forward_chain(cfg: &HostConfig) -> Chain {
    let wl = cfg.wildcard();
    let established = [CtState::Related, CtState::Established];
    let rules = vec![
        Rule::new(
            vec![iface_in(&wl, false), ct(&[CtState::Invalid])],
            Target::Drop,
        )
        .with_comment("drop invalid from workloads"),
        Rule::new(vec![iface_out(&wl), ct(&[CtState::Invalid])], Target::Drop)
            .with_comment("drop invalid to workloads"),
        Rule::new(vec![iface_in(&wl, false), ct(&established)], Target::Return)
            .with_comment("established from workloads"),
        Rule::new(vec![iface_out(&wl), ct(&established)], Target::Return)
            .with_comment("established to workloads"),
        Rule::new(
            vec![iface_in(&wl, false)],
            Target::Jump(FROM_WL_DISPATCH.into()),
        )
        .with_comment("outbound policy of the sending workload"),
        Rule::new(vec![iface_out(&wl)], Target::Jump(TO_WL_DISPATCH.into()))
            .with_comment("inbound policy of the receiving workload"),
        Rule::new(vec![iface_in(&wl, false)], Target::Accept)
            .with_comment("policy allowed traffic from workload"),
        Rule::new(vec![iface_out(&wl)], Target::Accept)
            .with_comment("policy allowed traffic to workload"),
    ];
    Chain {
        name: FORWARD_CHAIN.into(),
        rules,
    }
}

/// `cali-INPUT`: traffic from workloads to this host. Only DHCP, DNS, established flows (and on
/// v6 the neighbour-discovery ICMPv6) pass unconditionally; the rest follows
/// `DefaultEndpointToHostAction`.
pub fn input_chain(cfg: &HostConfig, family: IpFamily) -> Chain {
    let wl = cfg.wildcard();
    let mut rules = Vec::new();
    if cfg.ipip_enabled && family == IpFamily::V4 {
        rules.push(
            Rule::new(
                vec![
                    proto(Protocol::Number(4)),
                    Match::Set {
                        name: ALL_HOSTS_SET.into(),
                        direction: SetDirection::Src,
                        negate: true,
                    },
                ],
                Target::Drop,
            )
            .with_comment("drop ipip from unknown hosts"),
        );
    }
    if cfg.host_endpoints {
        rules.push(
            Rule::new(
                vec![iface_in(&wl, true)],
                Target::Jump(FROM_HOST_ENDPOINT.into()),
            )
            .with_comment("host endpoint policy"),
        );
    }
    rules.push(
        Rule::new(vec![iface_in(&wl, true)], Target::Return)
            .with_comment("only traffic from workloads is policed here"),
    );
    rules.push(Rule::new(vec![ct(&[CtState::Invalid])], Target::Drop));
    rules.push(Rule::new(
        vec![ct(&[CtState::Related, CtState::Established])],
        Target::Accept,
    ));
    let (dhcp_client, dhcp_server) = match family {
        IpFamily::V4 => (68, 67),
        IpFamily::V6 => (546, 547),
    };
    if family == IpFamily::V6 {
        for icmp_type in ICMPV6_TO_HOST {
            rules.push(Rule::new(
                vec![
                    proto(Protocol::Icmpv6),
                    Match::Icmpv6Type {
                        icmp_type,
                        code: None,
                    },
                ],
                Target::Accept,
            ));
        }
    }
    rules.push(
        Rule::new(
            vec![
                proto(Protocol::Udp),
                Match::SourcePorts {
                    ports: vec![PortRange::single(dhcp_client)],
                },
                Match::DestinationPorts {
                    ports: vec![PortRange::single(dhcp_server)],
                },
            ],
            Target::Accept,
        )
        .with_comment("dhcp"),
    );
    rules.push(
        Rule::new(
            vec![
                proto(Protocol::Udp),
                Match::DestinationPorts {
                    ports: vec![PortRange::single(53)],
                },
            ],
            Target::Accept,
        )
        .with_comment("dns"),
    );
    let outbound_policy = Rule::new(vec![], Target::Jump(FROM_WL_DISPATCH.into()))
        .with_comment("outbound policy of the workload applies to its host");
    match cfg.endpoint_to_host {
        EndpointToHostAction::Drop => rules
            .push(Rule::new(vec![], Target::Drop).with_comment("DefaultEndpointToHostAction DROP")),
        EndpointToHostAction::Accept => {
            rules.push(outbound_policy);
            rules.push(
                Rule::new(vec![], Target::Accept)
                    .with_comment("DefaultEndpointToHostAction ACCEPT"),
            );
        }
        EndpointToHostAction::Return => {
            rules.push(outbound_policy);
            rules.push(
                Rule::new(vec![], Target::Return)
                    .with_comment("DefaultEndpointToHostAction RETURN"),
            );
        }
    }
    Chain {
        name: INPUT_CHAIN.into(),
        rules,
    }
}
