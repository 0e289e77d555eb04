//! The cross-host packet walk: a probe leaves the source namespace, crosses hosts over the
//! simulated wire until it is delivered or dropped, and if delivered its reply walks back the
//! same way (conntrack makes it ESTABLISHED). The [`Walk`] keeps every host's trace and names
//! what decided: the rule that dropped the packet (chain, position, comment) or the missing
//! route/neighbour, or for an allow the rule that accepted it on each host.

use std::fmt;
use std::net::IpAddr;

use calico_dataplane::sim::{
    DecidedBy, Hop, HostOutcome, Packet, Verdict as NfVerdict, L4, ROOT_NS,
};

use crate::probe::Probe;
use crate::verdict::Verdict;
use crate::world::World;
use crate::SimError;

/// Hosts one packet may visit before the walk calls it a loop.
const MAX_WIRE_HOPS: usize = 16;

/// Which way a leg goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        })
    }
}

/// The packet's time on one host (or, with host `wire`, a frame nobody received).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub host: String,
    pub direction: Direction,
    pub outcome: HostOutcome,
}

/// Where a probe starts or ends: a namespace on a host and an address in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// What the caller named (a workload or an address).
    pub label: String,
    pub host: String,
    pub ns: String,
    pub addr: IpAddr,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.label == self.addr.to_string() {
            write!(f, "{} ({} on {})", self.label, self.ns, self.host)
        } else {
            write!(f, "{} ({} on {})", self.label, self.addr, self.host)
        }
    }
}

/// One probe's full journey and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub src: Place,
    pub dst: Place,
    pub probe: Probe,
    pub verdict: Verdict,
    /// Every host visited, request legs then reply legs.
    pub legs: Vec<Leg>,
    /// What decided: the dropping rule or reason for a deny; the accepting rules for an allow.
    pub deciding: Option<String>,
}

impl Walk {
    /// Every hop of every leg, with its host and direction.
    pub fn hops(&self) -> impl Iterator<Item = (&str, Direction, &Hop)> {
        self.legs.iter().flat_map(|leg| {
            leg.outcome
                .trace()
                .iter()
                .map(move |hop| (leg.host.as_str(), leg.direction, hop))
        })
    }
}

impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} -> {}: {}",
            self.probe, self.src, self.dst, self.verdict
        )?;
        for leg in &self.legs {
            writeln!(f, "  {} on {}: {}", leg.direction, leg.host, leg.outcome)?;
            for hop in leg.outcome.trace() {
                writeln!(f, "    {hop}")?;
            }
        }
        if let Some(deciding) = &self.deciding {
            writeln!(f, "  decided by: {deciding}")?;
        }
        Ok(())
    }
}

/// The packet a probe sends between two addresses.
pub fn probe_packet(probe: Probe, src: IpAddr, dst: IpAddr) -> Packet {
    let l4 = match probe {
        Probe::Ports {
            src_port, dst_port, ..
        } => L4::Ports {
            src: src_port,
            dst: dst_port,
        },
        Probe::Icmp {
            icmp_type,
            icmp_code,
            ..
        } => L4::Icmp {
            icmp_type,
            code: icmp_code,
        },
        Probe::Other { .. } => L4::Opaque,
    };
    Packet {
        src,
        dst,
        protocol: probe.protocol(),
        l4,
    }
}

impl World {
    /// Resolves a workload name, a workload address or a host address to a place.
    ///
    /// # Errors
    /// `UnknownWorkload` for a name nothing answers to; `NoAddress` for a workload without an
    /// address (of `family_of`'s family, when given).
    pub fn resolve(&self, what: &str, family_of: Option<IpAddr>) -> Result<Place, SimError> {
        let want_v6 = family_of.map(|ip| ip.is_ipv6());
        if let Ok(ip) = what.parse::<IpAddr>() {
            if let Some(host) = self.host_by_ip(ip) {
                return Ok(Place {
                    label: what.to_string(),
                    host: host.name().to_string(),
                    ns: ROOT_NS.to_string(),
                    addr: ip,
                });
            }
            for host in self.hosts() {
                for ns in host.dataplane().namespaces() {
                    let owns = host
                        .dataplane()
                        .links(&ns)
                        .iter()
                        .any(|l| l.name != "lo" && l.addrs.iter().any(|a| a.addr() == ip));
                    if owns {
                        return Ok(Place {
                            label: what.to_string(),
                            host: host.name().to_string(),
                            ns,
                            addr: ip,
                        });
                    }
                }
            }
            return Err(SimError::UnknownWorkload {
                workload: what.to_string(),
            });
        }
        let host = self
            .workload_host(what)
            .ok_or_else(|| SimError::UnknownWorkload {
                workload: what.to_string(),
            })?;
        let addr = self
            .host(host)?
            .dataplane()
            .links(what)
            .iter()
            .filter(|l| l.name != "lo")
            .flat_map(|l| l.addrs.iter().map(|a| a.addr()))
            .find(|a| want_v6.is_none_or(|v6| a.is_ipv6() == v6))
            .ok_or_else(|| SimError::NoAddress {
                what: format!("workload {what}"),
            })?;
        Ok(Place {
            label: what.to_string(),
            host: host.to_string(),
            ns: what.to_string(),
            addr,
        })
    }

    /// Sends `probe` from `src` to `dst` (workload names or addresses) and, if it arrives,
    /// its reply back, as an independent probe: afterwards the conntrack of every host it
    /// visited is flushed, as a new ping or connection would use a fresh ICMP id or source
    /// port (the simulated conntrack keys ICMP without the echo id, so a kept flow would let a
    /// later ping the other way through as ESTABLISHED).
    ///
    /// # Errors
    /// When `src` or `dst` cannot be resolved to a place with an address.
    pub fn send(&self, src: &str, dst: &str, probe: Probe) -> Result<Walk, SimError> {
        let walk = self.send_stateful(src, dst, probe)?;
        let visited: std::collections::BTreeSet<&str> =
            walk.legs.iter().map(|leg| leg.host.as_str()).collect();
        for host in visited {
            if let Ok(h) = self.host(host) {
                h.dataplane().flush_conntrack();
            }
        }
        Ok(walk)
    }

    /// Like [`World::send`] but keeps the flows the probe created in conntrack.
    ///
    /// # Errors
    /// When `src` or `dst` cannot be resolved to a place with an address.
    pub fn send_stateful(&self, src: &str, dst: &str, probe: Probe) -> Result<Walk, SimError> {
        let src = self.resolve(src, None)?;
        let dst = self.resolve(dst, Some(src.addr))?;
        let request = probe_packet(probe, src.addr, dst.addr);
        let mut legs = Vec::new();
        let delivered = self.carry(&src.host, &src.ns, request, Direction::Request, &mut legs)?;
        let arrived = delivered.filter(|(host, ns, _)| *host == dst.host && *ns == dst.ns);
        let verdict = match arrived {
            None => Verdict::Deny,
            Some((host, ns, packet)) => {
                let back = self.carry(&host, &ns, packet.reply(), Direction::Reply, &mut legs)?;
                let home = back.is_some_and(|(h, n, _)| h == src.host && n == src.ns);
                if home {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            }
        };
        let deciding = deciding(verdict, &legs);
        Ok(Walk {
            src,
            dst,
            probe,
            verdict,
            legs,
            deciding,
        })
    }

    /// Walks `packet` from namespace `ns` on `host` across the wire; `Some((host, ns, packet))`
    /// where it was delivered.
    fn carry(
        &self,
        host: &str,
        ns: &str,
        packet: Packet,
        direction: Direction,
        legs: &mut Vec<Leg>,
    ) -> Result<Option<(String, String, Packet)>, SimError> {
        let mut host = host.to_string();
        let mut outcome = self
            .host(&host)?
            .dataplane()
            .send_from_namespace(ns, packet);
        for _ in 0..MAX_WIRE_HOPS {
            let next = match &outcome {
                HostOutcome::Delivered { ns, packet, .. } => {
                    Some((host.clone(), ns.clone(), *packet))
                }
                HostOutcome::Dropped { .. } => None,
                HostOutcome::Transmitted {
                    next_hop,
                    src_mac,
                    packet,
                    ..
                } => {
                    let (next_hop, src_mac, packet) = (*next_hop, *src_mac, *packet);
                    legs.push(Leg {
                        host: host.clone(),
                        direction,
                        outcome,
                    });
                    let Some(receiver) = self.host_by_ip(next_hop) else {
                        let reason = format!("no host answers for {next_hop} on the wire");
                        legs.push(Leg {
                            host: "wire".to_string(),
                            direction,
                            outcome: HostOutcome::Dropped {
                                trace: vec![Hop::End {
                                    detail: format!("dropped: {reason}"),
                                }],
                                reason,
                            },
                        });
                        return Ok(None);
                    };
                    host = receiver.name().to_string();
                    outcome = receiver.dataplane().receive_on_wire(packet, src_mac);
                    continue;
                }
            };
            legs.push(Leg {
                host,
                direction,
                outcome,
            });
            return Ok(next);
        }
        let reason = format!("more than {MAX_WIRE_HOPS} hosts visited (a routing loop)");
        legs.push(Leg {
            host: "wire".to_string(),
            direction,
            outcome: HostOutcome::Dropped {
                trace: vec![Hop::End {
                    detail: format!("dropped: {reason}"),
                }],
                reason,
            },
        });
        Ok(None)
    }
}

/// For a deny: the rule or reason on the leg that dropped. For an allow: each accepting rule.
fn deciding(verdict: Verdict, legs: &[Leg]) -> Option<String> {
    match verdict {
        Verdict::Deny => {
            let last = legs.last()?;
            let Some(rule) = last.outcome.dropping_rule() else {
                return match &last.outcome {
                    HostOutcome::Dropped { reason, .. } => {
                        Some(format!("{} on {}: {reason}", last.direction, last.host))
                    }
                    other => Some(format!("{} on {}: {other}", last.direction, last.host)),
                };
            };
            let comment = match rule.comment.as_deref() {
                Some(c) if !rule.line.contains(c) => format!(" ({c})"),
                _ => String::new(),
            };
            Some(format!(
                "{} on {}: DROP by {rule}{comment}",
                last.direction, last.host
            ))
        }
        Verdict::Allow => {
            let accepted: Vec<String> = legs
                .iter()
                .filter(|leg| leg.direction == Direction::Request)
                .flat_map(|leg| {
                    leg.outcome
                        .decisions()
                        .filter(|d| {
                            d.verdict == NfVerdict::Accept
                                && matches!(d.decided_by, DecidedBy::Rule(_))
                        })
                        .map(move |d| format!("{}: {d}", leg.host))
                })
                .collect();
            (!accepted.is_empty()).then(|| accepted.join("; "))
        }
    }
}
