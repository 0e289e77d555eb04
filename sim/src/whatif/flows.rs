//! The flows a what-if evaluates: every ordered pair of endpoint addresses of one family,
//! with every probe, walked through the simulated world. A host with host endpoints is an
//! end too, from and to its own address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::model::{EndpointId, Protocol};

use super::affected::Sides;
use super::build::{addresses, Namespaces};
use calico_dataplane::sim::{Detail, SimDataplane, ROOT_NS};

use crate::probe::EPHEMERAL_PORTS;
use crate::walk::{probe_packet, Place, Walk, Wire};
use crate::{Probe, SimError, Verdict, World};

/// ICMPv6 echo request, the v6 ping.
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// What sends and receives a what-if's flows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    Workload(EndpointId),
    /// A host with host endpoints (in either state), at its own address in its root
    /// namespace.
    Host(String),
}

/// One end as the report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub end: End,
    /// The workload id, or `<host>/<workload>` when several hosts use that workload id, with
    /// `/<endpoint id>` when one workload has several endpoints; a host's name (`host
    /// <name>` if a workload has that label).
    pub label: String,
    pub addrs: Vec<IpAddr>,
}

/// One probe between two endpoint addresses; `src` and `dst` index the members list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src: usize,
    pub src_addr: IpAddr,
    pub dst: usize,
    pub dst_addr: IpAddr,
    pub probe: Probe,
}

/// What one walk found: the verdict and what decided it (empty when walked for the verdict
/// only, [`Detail::Verdict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: String,
}

/// Every endpoint of `before` or `after`, sorted by id, labelled uniquely, with its
/// addresses (after when it exists after, else before); then every host with a host
/// endpoint in either, with its registered addresses.
pub fn members(before: &ClusterState, after: &ClusterState) -> Vec<Member> {
    let mut records = BTreeMap::new();
    for (id, ep) in before.endpoints.iter().chain(after.endpoints.iter()) {
        records.insert((**id).clone(), addresses(ep));
    }
    let mut hosts_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut endpoints_of: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for id in records.keys() {
        hosts_of.entry(&id.workload).or_default().insert(&id.host);
        *endpoints_of.entry((&id.host, &id.workload)).or_default() += 1;
    }
    let mut out = Vec::with_capacity(records.len());
    for (id, addrs) in &records {
        let mut label = if hosts_of[id.workload.as_str()].len() > 1 {
            format!("{}/{}", id.host, id.workload)
        } else {
            id.workload.clone()
        };
        if endpoints_of[&(id.host.as_str(), id.workload.as_str())] > 1 {
            label = format!("{label}/{}", id.endpoint);
        }
        out.push(Member {
            end: End::Workload(id.clone()),
            label,
            addrs: addrs.clone(),
        });
    }
    let hosts: BTreeSet<&str> = [before, after]
        .iter()
        .flat_map(|s| s.host_endpoints.keys().map(|id| id.host.as_str()))
        .collect();
    for host in hosts {
        let Some(record) = after.hosts.get(host).or_else(|| before.hosts.get(host)) else {
            continue;
        };
        let v4 = record.ip_v4.or(record.bird_ip).map(IpAddr::V4);
        let addrs: Vec<IpAddr> = v4.into_iter().chain(record.ip_v6.map(IpAddr::V6)).collect();
        let label = if out.iter().any(|m| m.label == host) {
            format!("host {host}")
        } else {
            host.to_string()
        };
        out.push(Member {
            end: End::Host(host.to_string()),
            label,
            addrs,
        });
    }
    out
}

/// The probes for flows of one family: echo of that family, every port a profile or policy
/// rule of `before` or `after` names (each end of a range), and the `extra` probes that fit.
pub fn probes(before: &ClusterState, after: &ClusterState, extra: &[Probe]) -> [Vec<Probe>; 2] {
    let mut ports = BTreeSet::new();
    for state in [before, after] {
        let profile_rules = state
            .profiles
            .values()
            .filter_map(|p| p.rules.as_ref())
            .flat_map(|r| r.inbound_rules.iter().chain(&r.outbound_rules));
        let policy_rules = state
            .policies
            .values()
            .flat_map(|p| p.inbound_rules.iter().chain(&p.outbound_rules));
        for rule in profile_rules.chain(policy_rules) {
            let Some(protocol) = rule.protocol.filter(|p| p.has_ports()) else {
                continue;
            };
            for range in &rule.dst_ports {
                ports.insert((protocol, range.first));
                ports.insert((protocol, range.last));
            }
        }
    }
    let port_probes = ports.into_iter().map(|(protocol, port)| Probe::Ports {
        protocol,
        src_port: crate::probe::EPHEMERAL_PORT,
        dst_port: port,
    });
    let mut v4: BTreeSet<Probe> = BTreeSet::from([Probe::ping()]);
    let mut v6: BTreeSet<Probe> = BTreeSet::from([Probe::Icmp {
        protocol: Protocol::Icmpv6,
        icmp_type: ICMPV6_ECHO_REQUEST,
        icmp_code: 0,
    }]);
    for probe in port_probes.chain(extra.iter().copied()) {
        match probe.protocol() {
            Protocol::Icmp => {
                v4.insert(probe);
            }
            Protocol::Icmpv6 => {
                v6.insert(probe);
            }
            _ => {
                v4.insert(probe);
                v6.insert(probe);
            }
        }
    }
    [v4.into_iter().collect(), v6.into_iter().collect()]
}

/// Every flow between two different endpoints of `members` that `affected` (the sides of each
/// member, by index; `None`: every flow) says may change: from a member whose outbound side
/// is affected, or to one whose inbound side is.
pub fn flows(
    members: &[Member],
    probes: &[Vec<Probe>; 2],
    affected: Option<&[Sides]>,
) -> Vec<Flow> {
    let mut out = Vec::new();
    let mut pair = |src: usize, dst: usize| {
        for &src_addr in &members[src].addrs {
            let same_family = members[dst]
                .addrs
                .iter()
                .filter(|a| a.is_ipv6() == src_addr.is_ipv6());
            for &dst_addr in same_family {
                for &probe in &probes[usize::from(src_addr.is_ipv6())] {
                    out.push(Flow {
                        src,
                        src_addr,
                        dst,
                        dst_addr,
                        probe,
                    });
                }
            }
        }
    };
    let n = members.len();
    let Some(sides) = affected else {
        for src in 0..n {
            for dst in (0..n).filter(|&d| d != src) {
                pair(src, dst);
            }
        }
        return out;
    };
    let side = |i: usize| sides.get(i).copied().unwrap_or_default();
    for a in (0..n).filter(|&a| side(a).outbound) {
        for other in (0..n).filter(|&o| o != a) {
            pair(a, other);
        }
    }
    for a in (0..n).filter(|&a| side(a).inbound) {
        // A flow whose source is affected outbound was added above.
        for other in (0..n).filter(|&o| o != a && !side(o).outbound) {
            pair(other, a);
        }
    }
    out
}

/// Every host's kernel of a world, by name and wire address, for walks on several threads
/// ([`Fabric::walk_probe`]).
#[derive(Debug, Clone)]
pub struct Fabric {
    kernels: BTreeMap<String, SimDataplane>,
    by_ip: BTreeMap<IpAddr, String>,
}

impl Fabric {
    /// Handles on `world`'s kernels as they are (and as they will be: they are shared).
    pub fn of(world: &World) -> Self {
        let mut fabric = Fabric {
            kernels: BTreeMap::new(),
            by_ip: BTreeMap::new(),
        };
        for host in world.hosts() {
            let addrs = [Some(IpAddr::V4(host.ip())), host.ip6().map(IpAddr::V6)];
            for ip in addrs.into_iter().flatten() {
                if world
                    .host_by_ip(ip)
                    .is_some_and(|h| h.name() == host.name())
                {
                    fabric.by_ip.insert(ip, host.name().to_string());
                }
            }
            fabric
                .kernels
                .insert(host.name().to_string(), host.dataplane().clone());
        }
        fabric
    }

    /// Walks `probe` between resolved places as probe number `seq` (see [`probe_packet`]),
    /// keeping `detail` of it.
    ///
    /// # Errors
    /// As [`World::send`](crate::World::send), for a walk that cannot proceed.
    pub fn walk_probe(
        &self,
        src: Place,
        dst: Place,
        probe: Probe,
        seq: u64,
        detail: Detail,
    ) -> Result<Walk, SimError> {
        let request = probe_packet(probe, src.addr, dst.addr, seq);
        self.walk_with(src, dst, probe, request, detail)
    }
}

impl Wire for Fabric {
    fn kernel(&self, host: &str) -> Result<&SimDataplane, SimError> {
        self.kernels.get(host).ok_or_else(|| SimError::UnknownHost {
            host: host.to_string(),
        })
    }

    fn on_wire(&self, ip: IpAddr) -> Option<(&str, &SimDataplane)> {
        let host = self.by_ip.get(&ip)?;
        Some((host, self.kernels.get(host)?))
    }
}

/// Walks each flow over `fabric`, whose endpoints are those of `state` (namespaces from
/// `namespaces`), flow `i` as probe number `i`, keeping `detail`. A source endpoint that does
/// not exist in `state` sends nothing (deny); a destination that does not exist is an address
/// nobody holds.
pub fn evaluate(
    fabric: &Fabric,
    state: &ClusterState,
    namespaces: &Namespaces,
    members: &[Member],
    flows: &[Flow],
    detail: Detail,
) -> Vec<Outcome> {
    walk_flows(
        fabric,
        state,
        namespaces,
        members,
        flows,
        &|i| i as u64,
        detail,
    )
}

/// The flows at `indices` of `flows` (which [`evaluate`] walked over the same `fabric`)
/// walked again with every detail, for their reasons. Each goes as a new probe number: under
/// its first number conntrack would take it for the flow its first walk opened.
pub fn explain(
    fabric: &Fabric,
    state: &ClusterState,
    namespaces: &Namespaces,
    members: &[Member],
    flows: &[Flow],
    indices: &[usize],
) -> Vec<Outcome> {
    let again: Vec<Flow> = indices.iter().map(|&i| flows[i]).collect();
    let offset = fresh_offset(flows.len() as u64);
    let seq = |k: usize| indices[k] as u64 + offset;
    walk_flows(
        fabric,
        state,
        namespaces,
        members,
        &again,
        &seq,
        Detail::Full,
    )
}

/// The smallest offset of at least `n` that moves every probe number to a different echo
/// identifier and ephemeral port (see [`probe_packet`]): a multiple of either span would give
/// a flow its first walk's packet back.
fn fresh_offset(n: u64) -> u64 {
    let ports = u64::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
    let echo_ids = u64::from(u16::MAX) + 1;
    let mut offset = n.max(1);
    while offset % ports == 0 || offset % echo_ids == 0 {
        offset += 1;
    }
    offset
}

/// [`evaluate`] with flow `i` as probe number `seq(i)`.
fn walk_flows(
    fabric: &Fabric,
    state: &ClusterState,
    namespaces: &Namespaces,
    members: &[Member],
    flows: &[Flow],
    seq: &(dyn Fn(usize) -> u64 + Sync),
    detail: Detail,
) -> Vec<Outcome> {
    // Each member's host and namespace in this state, looked up once.
    let homes: Vec<Option<(String, String)>> = members
        .iter()
        .map(|m| match &m.end {
            End::Workload(id) => {
                if !state.endpoints.contains_key(id) {
                    return None;
                }
                Some((id.host.clone(), namespaces.of(id)?))
            }
            End::Host(host) => state
                .hosts
                .contains_key(host)
                .then(|| (host.clone(), ROOT_NS.to_string())),
        })
        .collect();
    let place = |member: usize, addr: IpAddr| -> Option<Place> {
        let (host, ns) = homes[member].clone()?;
        Some(Place {
            label: addr.to_string(),
            host,
            ns,
            addr,
        })
    };
    let walk = |i: usize, flow: &Flow| {
        let Some(src) = place(flow.src, flow.src_addr) else {
            return Outcome {
                verdict: Verdict::Deny,
                reason: "the source endpoint does not exist".into(),
            };
        };
        let dst = place(flow.dst, flow.dst_addr).unwrap_or_else(|| Place {
            label: flow.dst_addr.to_string(),
            host: String::new(),
            ns: String::new(),
            addr: flow.dst_addr,
        });
        match fabric.walk_probe(src, dst, flow.probe, seq(i), detail) {
            Ok(walk) => Outcome {
                verdict: walk.verdict,
                reason: match detail {
                    Detail::Full => walk
                        .deciding
                        .unwrap_or_else(|| "no rule on the way decided".into()),
                    Detail::Verdict => String::new(),
                },
            },
            Err(err) => Outcome {
                verdict: Verdict::Deny,
                reason: format!("the walk failed: {err}"),
            },
        }
    };
    walk_all(flows, &walk)
}

/// Flows at least this many are walked on every core.
const PARALLEL_FLOWS: usize = 2_000;

/// `walk(i, flow)` of every flow, in order. Many flows are split across the cores: a walk
/// reads the kernels it crosses and adds its own conntrack entries (each flow is a probe of
/// its own, so no walk meets another's entries), and each kernel has its own lock, so the
/// outcome does not depend on the split.
fn walk_all(flows: &[Flow], walk: &(impl Fn(usize, &Flow) -> Outcome + Sync)) -> Vec<Outcome> {
    if flows.len() < PARALLEL_FLOWS || !crate::cores::several() {
        return flows.iter().enumerate().map(|(i, f)| walk(i, f)).collect();
    }
    crate::cores::split(flows, |first, part| {
        let walked = part.iter().enumerate().map(|(i, f)| walk(first + i, f));
        walked.collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_offset_changes_every_echo_identifier_and_ephemeral_port() {
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for n in [
            0,
            1,
            7,
            20_000,
            65_536,
            99_990,
            40_000 * 65_536 / 16,
            1_310_720_000,
        ] {
            let offset = fresh_offset(n);
            assert!(offset >= n, "{n}: {offset}");
            for seq in [0, 1, 12_345, 99_989] {
                for probe in [Probe::ping(), Probe::tcp(80)] {
                    let first = probe_packet(probe, a, b, seq);
                    let again = probe_packet(probe, a, b, seq + offset);
                    assert_ne!(first, again, "{n}: {seq} {probe}");
                }
            }
        }
    }

    #[test]
    fn split_walks_come_back_in_flow_order_with_their_own_numbers() {
        let addr: IpAddr = "192.168.0.1".parse().unwrap();
        let flows: Vec<Flow> = (0..PARALLEL_FLOWS * 2 + 7)
            .map(|i| Flow {
                src: i,
                src_addr: addr,
                dst: i + 1,
                dst_addr: addr,
                probe: Probe::ping(),
            })
            .collect();
        let walk = |seq: usize, flow: &Flow| Outcome {
            verdict: if seq % 3 == 0 {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            reason: format!("{seq} {}", flow.src),
        };
        let outcomes = walk_all(&flows, &walk);
        assert_eq!(outcomes.len(), flows.len());
        for (i, outcome) in outcomes.iter().enumerate() {
            assert_eq!(outcome.reason, format!("{i} {i}"));
        }
    }
}
