//! What a packet walk reports: the outcome on this host and every step that led to it.

use std::fmt;
use std::net::IpAddr;

use calico_core::iptables::CtState;
use calico_core::model::MacAddr;

use super::netfilter::eval::{DecidedBy, Decision, RuleRef, Verdict};
use super::packet::Packet;
use super::route::KernelRoute;

/// How a next hop's MAC was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighSource {
    /// A static entry (from `apply`, like `ip neigh replace ... nud permanent`).
    Static,
    /// Learned earlier by ARP/NDP.
    Cached,
    /// Answered normally: the address is local to the namespace behind the link (with
    /// `arp_ignore=0` Linux answers for any local address, e.g. the host IP as gateway).
    Arp { answered_by: String },
    /// Answered by proxy ARP on the host end of a veth.
    ProxyArp { iface: String },
}

/// One step of a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// The packet is sent from, or arrives in, a namespace.
    Enter {
        ns: String,
        iface: Option<String>,
        packet: Packet,
    },
    /// Routing decision: the address is local.
    Local {
        ns: String,
        dst: IpAddr,
        iface: String,
    },
    /// Routing decision: the route chosen by longest-prefix match.
    Route {
        ns: String,
        dst: IpAddr,
        route: KernelRoute,
        dev: String,
        next_hop: IpAddr,
    },
    /// The next hop's MAC.
    Neighbour {
        ns: String,
        dev: String,
        ip: IpAddr,
        mac: MacAddr,
        source: NeighSource,
    },
    /// The frame crosses a veth pair.
    Veth {
        from_ns: String,
        from_iface: String,
        to_ns: String,
        to_iface: String,
        src_mac: MacAddr,
    },
    /// Reverse-path filter check on the ingress interface.
    RpFilter {
        iface: String,
        src: IpAddr,
        detail: String,
    },
    /// Conntrack's view of the packet.
    Conntrack { state: CtState, note: String },
    /// A netfilter hook ran.
    Netfilter(Decision),
    /// An address was rewritten (masquerade, or its reverse on a reply).
    Nat { detail: String },
    /// A tunnel device wrapped the packet in an outer header, or took it out of one.
    Tunnel { detail: String },
    /// The walk ended here; the outcome says how.
    End { detail: String },
}

fn ct_name(state: CtState) -> &'static str {
    match state {
        CtState::Invalid => "INVALID",
        CtState::New => "NEW",
        CtState::Established => "ESTABLISHED",
        CtState::Related => "RELATED",
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Enter { ns, iface, packet } => match iface {
                Some(iface) => write!(f, "[{ns}] {packet} arrives on {iface}"),
                None => write!(f, "[{ns}] {packet} sent"),
            },
            Hop::Local { ns, dst, iface } => write!(f, "[{ns}] {dst} is local (on {iface})"),
            Hop::Route {
                ns,
                dst,
                route,
                dev,
                next_hop,
            } => write!(
                f,
                "[{ns}] route to {dst}: {route} (out {dev}, next hop {next_hop})"
            ),
            Hop::Neighbour {
                ns,
                dev,
                ip,
                mac,
                source,
            } => {
                write!(f, "[{ns}] neighbour {ip} on {dev} is {mac}")?;
                // IPv6 resolves through neighbour discovery, modelled by the same hops.
                let (reply, proxy) = if ip.is_ipv6() {
                    ("NDP advertisement", "proxy NDP")
                } else {
                    ("ARP reply", "proxy ARP")
                };
                match source {
                    NeighSource::Static => write!(f, " (static entry)"),
                    NeighSource::Cached => write!(f, " (cached)"),
                    NeighSource::Arp { answered_by } => {
                        write!(f, " ({reply} from {answered_by})")
                    }
                    NeighSource::ProxyArp { iface } => write!(f, " ({proxy} by {iface})"),
                }
            }
            Hop::Veth {
                from_ns,
                from_iface,
                to_ns,
                to_iface,
                src_mac,
            } => write!(
                f,
                "veth {from_ns}/{from_iface} -> {to_ns}/{to_iface} (src MAC {src_mac})"
            ),
            Hop::RpFilter { iface, src, detail } => {
                write!(f, "rp_filter on {iface} for {src}: {detail}")
            }
            Hop::Conntrack { state, note } => {
                write!(f, "conntrack: {}", ct_name(*state))?;
                if !note.is_empty() {
                    write!(f, " ({note})")?;
                }
                Ok(())
            }
            Hop::Netfilter(decision) => write!(f, "{decision}"),
            Hop::Nat { detail } => write!(f, "nat: {detail}"),
            Hop::Tunnel { detail } => write!(f, "tunnel: {detail}"),
            Hop::End { detail } => f.write_str(detail),
        }
    }
}

/// Where a packet ended up on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOutcome {
    /// Delivered to a local address in `ns` (the host's own is [`super::ROOT_NS`]).
    Delivered {
        ns: String,
        iface: String,
        packet: Packet,
        trace: Vec<Hop>,
    },
    /// Dropped; `reason` says why (also the last hop).
    Dropped { reason: String, trace: Vec<Hop> },
    /// Left on the wire interface towards `next_hop`; the world carries it on. `packet` is as
    /// it left (after masquerade).
    Transmitted {
        iface: String,
        next_hop: IpAddr,
        src_mac: MacAddr,
        packet: Packet,
        trace: Vec<Hop>,
    },
}

impl HostOutcome {
    pub fn trace(&self) -> &[Hop] {
        match self {
            HostOutcome::Delivered { trace, .. }
            | HostOutcome::Dropped { trace, .. }
            | HostOutcome::Transmitted { trace, .. } => trace,
        }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, HostOutcome::Delivered { .. })
    }

    pub fn is_dropped(&self) -> bool {
        matches!(self, HostOutcome::Dropped { .. })
    }

    /// The netfilter rule that dropped the packet, if a rule did.
    pub fn dropping_rule(&self) -> Option<&RuleRef> {
        if !self.is_dropped() {
            return None;
        }
        self.trace().iter().rev().find_map(|hop| match hop {
            Hop::Netfilter(Decision {
                verdict: Verdict::Drop,
                decided_by: DecidedBy::Rule(rule),
                ..
            }) => Some(rule),
            _ => None,
        })
    }

    /// Every netfilter decision on the way, in order.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.trace().iter().filter_map(|hop| match hop {
            Hop::Netfilter(d) => Some(d),
            _ => None,
        })
    }

    /// The trace, one step per line.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for hop in self.trace() {
            out += &format!("{hop}\n");
        }
        out
    }
}

impl fmt::Display for HostOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostOutcome::Delivered { ns, iface, .. } => {
                write!(f, "delivered in namespace {ns} on {iface}")
            }
            HostOutcome::Dropped { reason, .. } => write!(f, "dropped: {reason}"),
            HostOutcome::Transmitted {
                iface, next_hop, ..
            } => write!(f, "transmitted on {iface} to {next_hop}"),
        }
    }
}
