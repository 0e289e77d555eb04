//! The cross-host packet walk: a probe leaves the source namespace, crosses hosts over the
//! simulated wire until it is delivered or dropped, and if delivered its reply walks back the
//! same way (conntrack makes it ESTABLISHED). The [`Walk`] keeps every host's trace and names
//! what decided: the rule that dropped the packet (chain, position, comment) or the missing
//! route/neighbour, or for an allow the rule that accepted it on each host.

use std::fmt;
use std::net::IpAddr;

use calico_dataplane::sim::{
    DecidedBy, Detail, Hop, HostOutcome, Packet, SimDataplane, Verdict as NfVerdict, L4, ROOT_NS,
};

use crate::probe::{Probe, EPHEMERAL_PORT, EPHEMERAL_PORTS};
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

/// Where a probe starts or ends: a namespace on a host and an address in it. A destination
/// address nobody holds is a place too, with empty `host` and `ns` ([`Place::is_held`]): the
/// probe is sent all the same, and the walk shows where it is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// What the caller named (a workload, host, external machine or an address).
    pub label: String,
    pub host: String,
    pub ns: String,
    pub addr: IpAddr,
}

impl Place {
    /// Whether some namespace holds the address.
    pub fn is_held(&self) -> bool {
        !self.host.is_empty()
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_held() {
            write!(f, "{} (held by nobody)", self.label)
        } else if self.label == self.addr.to_string() {
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
    /// The request as sent: the probe with its echo identifier or ephemeral source port.
    pub request: Packet,
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

/// The packet `probe` sends between two addresses as probe number `seq` of a world: an ICMP
/// probe carries echo identifier `seq` (mod 2^16), and a port probe without a source port of its
/// own ([`EPHEMERAL_PORT`]) goes out from the `seq`th port of [`EPHEMERAL_PORTS`] (wrapping), as
/// a new `ping` run or a new connection would.
pub fn probe_packet(probe: Probe, src: IpAddr, dst: IpAddr, seq: u64) -> Packet {
    let l4 = match probe {
        Probe::Ports {
            src_port, dst_port, ..
        } => L4::Ports {
            src: if src_port == EPHEMERAL_PORT {
                ephemeral_port(seq)
            } else {
                src_port
            },
            dst: dst_port,
        },
        Probe::Icmp {
            icmp_type,
            icmp_code,
            ..
        } => L4::Icmp {
            icmp_type,
            code: icmp_code,
            id: (seq % (u64::from(u16::MAX) + 1)) as u16,
        },
        Probe::Other { .. } => L4::Opaque,
    };
    Packet {
        src,
        dst,
        protocol: probe.protocol(),
        l4,
        inner: None,
    }
}

/// The probe `packet` is an instance of (its protocol, ports or ICMP type and code).
fn probe_of(packet: &Packet) -> Probe {
    let protocol = packet.protocol;
    match packet.l4 {
        L4::Ports { src, dst } => Probe::Ports {
            protocol,
            src_port: src,
            dst_port: dst,
        },
        L4::Icmp {
            icmp_type, code, ..
        } => Probe::Icmp {
            protocol,
            icmp_type,
            icmp_code: code,
        },
        L4::Opaque => Probe::Other { protocol },
    }
}

/// The `seq`th port of [`EPHEMERAL_PORTS`], wrapping.
fn ephemeral_port(seq: u64) -> u16 {
    let (first, last) = (*EPHEMERAL_PORTS.start(), *EPHEMERAL_PORTS.end());
    let offset = seq % (u64::from(last - first) + 1);
    first + offset as u16
}

impl World {
    /// Resolves a workload, host or external machine name, or an address one of them holds,
    /// to a place; a name resolves to its address of `family_of`'s family when given.
    ///
    /// # Errors
    /// `UnknownWorkload` for a name nothing answers to; `UnheldSource` for an address nobody
    /// holds (see [`World::resolve_destination`] for destinations); `NoAddress` for a workload
    /// or host without an address (of `family_of`'s family, when given).
    pub fn resolve(&self, what: &str, family_of: Option<IpAddr>) -> Result<Place, SimError> {
        let place = self.resolve_destination(what, family_of)?;
        if place.is_held() {
            Ok(place)
        } else {
            Err(SimError::UnheldSource { ip: place.addr })
        }
    }

    /// [`World::resolve`], except that an address nobody holds is a valid place (not held).
    ///
    /// # Errors
    /// As `resolve`, for names.
    pub fn resolve_destination(
        &self,
        what: &str,
        family_of: Option<IpAddr>,
    ) -> Result<Place, SimError> {
        let want_v6 = family_of.map(|ip| ip.is_ipv6());
        let place = |host: &str, ns: String, addr| Place {
            label: what.to_string(),
            host: host.to_string(),
            ns,
            addr,
        };
        if let Ok(ip) = what.parse::<IpAddr>() {
            if let Some(host) = self.host_by_ip(ip) {
                return Ok(place(host.name(), ROOT_NS.to_string(), ip));
            }
            for host in self.hosts() {
                for ns in host.dataplane().namespaces() {
                    let owns = host
                        .dataplane()
                        .links(&ns)
                        .iter()
                        .any(|l| l.name != "lo" && l.addrs.iter().any(|a| a.addr() == ip));
                    if owns {
                        return Ok(place(host.name(), ns, ip));
                    }
                }
            }
            return Ok(place("", String::new(), ip));
        }
        if let Ok(host) = self.host(what) {
            // A v6-only external machine's IPv4 is unspecified.
            let v4 = Some(host.ip())
                .filter(|ip| !ip.is_unspecified())
                .map(IpAddr::V4);
            let v6 = host.ip6().map(IpAddr::V6);
            let addr = match want_v6 {
                Some(true) => v6,
                Some(false) => v4,
                None => v4.or(v6),
            }
            .ok_or_else(|| SimError::NoAddress {
                what: format!("host {what}"),
            })?;
            return Ok(place(what, ROOT_NS.to_string(), addr));
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
        Ok(place(host, what.to_string(), addr))
    }

    /// Sends `probe` from `src` to `dst` (workload names or addresses) and, if it arrives,
    /// its reply back. Every call is a new flow, as a new `ping` run or connection is in Linux:
    /// an ICMP probe gets a fresh echo identifier and a port probe without a source port a
    /// fresh ephemeral one (see [`probe_packet`]). Conntrack is left as Linux would leave it:
    /// the flows stay (so a reply that comes back later, or after an agent restart, is still
    /// ESTABLISHED), but no later probe belongs to them (until the identifiers wrap, after
    /// 20,000 port probes or 65,536 pings).
    ///
    /// `dst` may be an address nobody holds: the probe is sent, and the walk shows where it
    /// is lost (no route, a rule, nobody answering on the wire).
    ///
    /// # Errors
    /// When `src` is no place holding an address, or `dst` names nothing.
    pub fn send(&self, src: &str, dst: &str, probe: Probe) -> Result<Walk, SimError> {
        // A literal destination address decides the family a named source sends from.
        let src = self.resolve(src, dst.parse::<IpAddr>().ok())?;
        let dst = self.resolve_destination(dst, Some(src.addr))?;
        let request = probe_packet(probe, src.addr, dst.addr, self.next_probe());
        self.walk(src, dst, probe, request)
    }

    /// Sends exactly `packet` (and, if it arrives, its reply) from the place that owns its
    /// source address to the one that owns its destination: a later packet of a flow an
    /// earlier [`World::send`] opened, e.g. `send_packet(walk.request)` for more data of the
    /// same connection, or `send_packet(walk.request.reply())` for data the other side sends
    /// on it. Conntrack sees it as part of that flow (ESTABLISHED) if the flow is still
    /// tracked, as a NEW flow otherwise.
    ///
    /// # Errors
    /// When no host, workload or external machine holds the packet's source address.
    pub fn send_packet(&self, packet: Packet) -> Result<Walk, SimError> {
        let src = self.resolve(&packet.src.to_string(), None)?;
        let dst = self.resolve_destination(&packet.dst.to_string(), Some(src.addr))?;
        self.walk(src, dst, probe_of(&packet), packet)
    }

    /// Sends `packet` from the namespace of `from` (a workload, host or external machine),
    /// whatever source address it carries: a forged one, as a hostile workload would send
    /// it. Its reply goes to whoever owns the forged address, so the verdict is `Deny` even
    /// when the request got through; whether it did is in the request legs.
    ///
    /// # Errors
    /// When `from` is no place holding an address, or the destination names nothing.
    pub fn send_from(&self, from: &str, packet: Packet) -> Result<Walk, SimError> {
        let mut src = self.resolve(from, Some(packet.dst))?;
        src.addr = packet.src;
        let dst = self.resolve_destination(&packet.dst.to_string(), Some(packet.src))?;
        self.walk(src, dst, probe_of(&packet), packet)
    }

    /// The same as [`World::send`], which keeps conntrack's flows (kept for callers from
    /// when `send` flushed them).
    ///
    /// # Errors
    /// When `src` or `dst` cannot be resolved to a place with an address.
    pub fn send_stateful(&self, src: &str, dst: &str, probe: Probe) -> Result<Walk, SimError> {
        self.send(src, dst, probe)
    }
}

/// The hosts a walk crosses: each one's kernel by name and by wire address. The [`World`]
/// is one; what-if walks over a `Fabric` of its kernels, which threads can share (a world
/// cannot: its agents' watches are not `Sync`).
pub(crate) trait Wire {
    /// `host`'s kernel.
    ///
    /// # Errors
    /// `UnknownHost`.
    fn kernel(&self, host: &str) -> Result<&SimDataplane, SimError>;

    /// The host holding wire address `ip`, and its kernel.
    fn on_wire(&self, ip: IpAddr) -> Option<(&str, &SimDataplane)>;

    /// Walks `request` from `src` and, if it reaches `dst`, its reply back.
    fn walk(
        &self,
        src: Place,
        dst: Place,
        probe: Probe,
        request: Packet,
    ) -> Result<Walk, SimError> {
        self.walk_with(src, dst, probe, request, Detail::Full)
    }

    /// [`Wire::walk`] keeping `detail` on every host; with [`Detail::Verdict`] the legs have
    /// no traces and nothing is named as deciding.
    fn walk_with(
        &self,
        src: Place,
        dst: Place,
        probe: Probe,
        request: Packet,
        detail: Detail,
    ) -> Result<Walk, SimError> {
        let mut legs = Vec::new();
        let request_leg = (Direction::Request, detail);
        let delivered = self.carry(&src.host, &src.ns, request, request_leg, &mut legs)?;
        let arrived = delivered.filter(|(host, ns, _)| *host == dst.host && *ns == dst.ns);
        let verdict = match arrived {
            None => Verdict::Deny,
            Some((host, ns, packet)) => {
                let reply_leg = (Direction::Reply, detail);
                let back = self.carry(&host, &ns, packet.reply(), reply_leg, &mut legs)?;
                let home = back.is_some_and(|(h, n, _)| h == src.host && n == src.ns);
                if home {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            }
        };
        let deciding = match detail {
            Detail::Full => deciding(verdict, &legs),
            Detail::Verdict => None,
        };
        Ok(Walk {
            src,
            dst,
            probe,
            request,
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
        (direction, detail): (Direction, Detail),
        legs: &mut Vec<Leg>,
    ) -> Result<Option<(String, String, Packet)>, SimError> {
        let mut host = host.to_string();
        let mut outcome = self
            .kernel(&host)?
            .send_from_namespace_with(ns, packet, detail);
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
                    let Some((receiver, kernel)) = self.on_wire(next_hop) else {
                        let reason = format!("no host answers for {next_hop} on the wire");
                        legs.push(Leg::wire_drop(direction, reason));
                        return Ok(None);
                    };
                    host = receiver.to_string();
                    outcome = kernel.receive_on_wire_with(packet, src_mac, detail);
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
        legs.push(Leg::wire_drop(direction, reason));
        Ok(None)
    }
}

impl Wire for World {
    fn kernel(&self, host: &str) -> Result<&SimDataplane, SimError> {
        Ok(self.host(host)?.dataplane())
    }

    fn on_wire(&self, ip: IpAddr) -> Option<(&str, &SimDataplane)> {
        self.host_by_ip(ip).map(|h| (h.name(), h.dataplane()))
    }
}

impl Leg {
    /// A packet lost between hosts: nobody owns its next hop, or it loops.
    fn wire_drop(direction: Direction, reason: String) -> Leg {
        Leg {
            host: "wire".to_string(),
            direction,
            outcome: HostOutcome::Dropped {
                trace: vec![Hop::End {
                    detail: format!("dropped: {reason}"),
                }],
                reason,
            },
        }
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
                            // A host endpoint's allow returns to the built-in chain, whose
                            // policy accepts: worth naming when a policy rule allowed it.
                            d.verdict == NfVerdict::Accept
                                && (matches!(d.decided_by, DecidedBy::Rule(_))
                                    || d.policy_rule.is_some())
                        })
                        .map(move |d| format!("{}: {d}", leg.host))
                })
                .collect();
            (!accepted.is_empty()).then(|| accepted.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use calico_core::iptables::CtState;
    use calico_core::model::{EndpointId, Rule, Rules};

    use super::*;
    use crate::ops;

    #[test]
    fn each_probe_number_gets_its_own_identity() {
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let ping = |seq| probe_packet(Probe::ping(), a, b, seq).l4;
        assert_ne!(ping(1), ping(2));
        assert_eq!(ping(1), ping(1 + 65536));
        let port = |probe, seq| match probe_packet(probe, a, b, seq).l4 {
            L4::Ports { src, .. } => src,
            other => panic!("{other:?}"),
        };
        assert_eq!(port(Probe::tcp(80), 0), EPHEMERAL_PORT);
        assert_eq!(port(Probe::tcp(80), 7), EPHEMERAL_PORT + 7);
        let span = u64::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        assert_eq!(port(Probe::udp(53), span - 1), *EPHEMERAL_PORTS.end());
        assert_eq!(port(Probe::udp(53), span), EPHEMERAL_PORT);
        // A source port the probe names is kept.
        let named: Probe = "tcp/22->80".parse().unwrap();
        assert_eq!(port(named, 7), 22);
    }

    /// `a` on host1 takes nothing in but may send anything; `b` on host2 takes everything.
    /// Returns the world and the endpoints of `a` and `b`.
    async fn one_way_world() -> (World, Vec<EndpointId>) {
        let mut world = World::with_mem_store();
        let store = world.store().clone();
        let allow_all = vec![Rule::default()];
        for (name, inbound) in [("CLOSED", vec![]), ("OPEN", allow_all.clone())] {
            let rules = Rules {
                id: Some(name.to_string()),
                inbound_rules: inbound,
                outbound_rules: allow_all.clone(),
            };
            ops::write_profile(store.as_ref(), name, &[], &rules)
                .await
                .unwrap();
        }
        let mut ids = Vec::new();
        for (host, ip, workload, addr, profile) in [
            ("host1", [172, 31, 250, 2], "a", [192, 168, 0, 1], "CLOSED"),
            ("host2", [172, 31, 250, 3], "b", [192, 168, 0, 2], "OPEN"),
        ] {
            let (ip, addr) = (Ipv4Addr::from(ip), Ipv4Addr::from(addr));
            world.add_host(host, ip).unwrap();
            ops::node_start(store.as_ref(), host, ip).await.unwrap();
            world.start_agent(host).unwrap();
            world.add_workload(host, workload).unwrap();
            let plumbing = world.host(host).unwrap().plumbing();
            let id = ops::container_add(store.as_ref(), plumbing, host, ip, workload, addr)
                .await
                .unwrap();
            ops::set_profiles(store.as_ref(), &id, &[profile.to_string()])
                .await
                .unwrap();
            ids.push(id);
        }
        world.settle().await.unwrap();
        (world, ids)
    }

    fn conntrack_len(world: &World, host: &str) -> usize {
        world.host(host).unwrap().dataplane().conntrack_len()
    }

    fn states(walk: &Walk, direction: Direction) -> Vec<CtState> {
        walk.hops()
            .filter(|(_, d, _)| *d == direction)
            .filter_map(|(_, _, hop)| match hop {
                Hop::Conntrack { state, .. } => Some(*state),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn probes_are_new_flows_and_the_flows_they_leave_stay() {
        let (mut world, ids) = one_way_world().await;
        for probe in [Probe::ping(), Probe::tcp(80)] {
            let there = world.send("a", "b", probe).unwrap();
            assert_eq!(there.verdict, Verdict::Allow, "{there}");
            assert!(!states(&there, Direction::Request).is_empty(), "{there}");
            assert!(
                states(&there, Direction::Request)
                    .iter()
                    .all(|s| *s == CtState::New),
                "{there}"
            );
            assert!(
                states(&there, Direction::Reply)
                    .iter()
                    .all(|s| *s == CtState::Established),
                "{there}"
            );
            // With a→b's flow kept, b→a is a new flow that a's inbound policy drops.
            let back = world.send("b", "a", probe).unwrap();
            assert_eq!(back.verdict, Verdict::Deny, "{back}");
            assert!(
                states(&back, Direction::Request)
                    .iter()
                    .all(|s| *s == CtState::New),
                "{back}"
            );
            let again = world.send("a", "b", probe).unwrap();
            assert_ne!(again.request, there.request);
        }
        // Nothing was flushed: two flows per allowed probe on each host.
        assert_eq!(conntrack_len(&world, "host1"), 4);
        assert_eq!(conntrack_len(&world, "host2"), 4 + 2);

        // Closing b does not leave a way in through an earlier probe's flow.
        ops::set_profiles(world.store().as_ref(), &ids[1], &["CLOSED".to_string()])
            .await
            .unwrap();
        world.settle().await.unwrap();
        for probe in [Probe::ping(), Probe::tcp(80)] {
            let walk = world.send("a", "b", probe).unwrap();
            assert_eq!(walk.verdict, Verdict::Deny, "{walk}");
        }
    }
}
