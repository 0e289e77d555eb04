//! The policy oracle: decides whether endpoint A can reach endpoint B from the data model
//! alone (a [`ClusterState`]), never from rendered rules, so the packet walk through the
//! simulated kernels can be checked against it.
//!
//! The semantics it encodes (reference 1.4, 3.6, 3.7, 4.2-4.4):
//! - both endpoints exist, are active and have an address of the probe's family;
//! - on different hosts, each host can learn the other's workload route over BGP: both hosts
//!   are registered with an address of the family (IPv6 also needs the IPv4 router id), each
//!   lists the other as a peer with the other's AS (node-to-node mesh or explicit peers), and
//!   each address lies inside an enabled pool of the family (BIRD's export filter);
//! - the sender's policy allows the packet outbound and the receiver's allows it inbound.
//!
//! Selector policies come first (Felix 1.4 / 2.x, reference `calico-v1-policy-and-routing.md`
//! 3, 4.2): the policies whose selector matches an endpoint's labels (its own, then each
//! profile's labels then tags, a tag reading as the value "") run by ascending `order`, an
//! absent order last, ties by name; one whose `types` leave out the direction is not run. The
//! first matching rule of any of them decides; if some ran and none decided, the packet is
//! dropped. Only when no policy governs the direction do the profiles decide, as below. A rule
//! selector matches an address held by an active endpoint (or listed as a host endpoint's
//! expected IP) whose labels satisfy it; a negated one, any other address. The selector
//! semantics are restated here ([`selectors`]), not taken from the compiler.
//!
//! Per direction, profiles run in order. A missing profile, or one without rules, denies. In a
//! profile the first matching rule decides (allow passes the direction, deny drops); rules of
//! the other family are skipped; no match moves to the next profile; no profile left denies.
//! Every host's agent is assumed running and no BGP session cut.
//!
//! Workload traffic is never host endpoint policy's business. What a host itself sends is,
//! and [`Oracle::decide_host_egress`] (in `host_endpoints`) answers for that side alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::iptables::IpFamily;
use calico_core::model::{
    Action, EndpointId, EndpointState, Policy, PolicyType, Protocol, Rule, WorkloadEndpoint,
};
use ipnet::IpNet;

mod host_endpoints;
mod selectors;

use crate::probe::Probe;
use crate::verdict::Verdict;

/// ICMP type 255 is reserved: a rule naming it denies whatever else it says (fail closed).
const RESERVED_ICMP_TYPE: u8 = 255;

/// The oracle's answer and the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
}

impl Decision {
    fn allow(reason: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Allow,
            reason: reason.into(),
        }
    }

    fn deny(reason: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Deny,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.verdict, self.reason)
    }
}

/// Which policy of an endpoint applies: what it sends or what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outbound,
    Inbound,
}

/// What policy selects on and falls back to: a workload's or a host endpoint's labels and
/// profiles.
#[derive(Debug, Clone, Copy)]
struct Labelled<'e> {
    labels: &'e BTreeMap<String, String>,
    profile_ids: &'e [String],
}

impl<'e> Labelled<'e> {
    fn of(ep: &'e WorkloadEndpoint) -> Self {
        Labelled {
            labels: &ep.labels,
            profile_ids: &ep.profile_ids,
        }
    }
}

/// The packet as policy sees it.
#[derive(Debug, Clone, Copy)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    family: IpFamily,
    probe: Probe,
}

/// A policy oracle over one cluster snapshot; building it indexes tag membership once.
#[derive(Debug)]
pub struct Oracle<'a> {
    state: &'a ClusterState,
    /// Tag → the addresses of every active endpoint carrying it.
    tag_members: BTreeMap<&'a str, Vec<IpNet>>,
}

impl<'a> Oracle<'a> {
    /// Indexes `state`.
    pub fn new(state: &'a ClusterState) -> Self {
        let mut tag_members: BTreeMap<&str, Vec<IpNet>> = BTreeMap::new();
        for ep in state.endpoints.values() {
            if ep.state != EndpointState::Active {
                continue;
            }
            let tags: BTreeSet<&str> = ep
                .profile_ids
                .iter()
                .filter_map(|p| state.profiles.get(p))
                .filter_map(|p| p.tags.as_deref())
                .flatten()
                .map(String::as_str)
                .collect();
            for tag in tags {
                tag_members.entry(tag).or_default().extend(ep.nets());
            }
        }
        Oracle { state, tag_members }
    }

    /// The endpoint of a workload (any host, any orchestrator); the smallest id if several.
    pub fn endpoint_of_workload(
        &self,
        workload: &str,
    ) -> Option<(&'a EndpointId, &'a WorkloadEndpoint)> {
        self.state
            .endpoints
            .iter()
            .find(|(id, _)| id.workload == workload)
            .map(|(id, ep)| (&**id, &**ep))
    }

    /// Whether the workload named `src` can reach the workload named `dst` with `probe`.
    pub fn decide_workloads(
        &self,
        src: &str,
        dst: &str,
        probe: Probe,
        family: IpFamily,
    ) -> Decision {
        let Some((src_id, _)) = self.endpoint_of_workload(src) else {
            return Decision::deny(format!("workload {src} has no endpoint"));
        };
        let Some((dst_id, _)) = self.endpoint_of_workload(dst) else {
            return Decision::deny(format!("workload {dst} has no endpoint"));
        };
        self.decide(src_id, dst_id, probe, family)
    }

    /// Whether endpoint `src` can reach endpoint `dst` with `probe` in `family` (and the reply
    /// come back, which conntrack lets through once the request passed).
    pub fn decide(
        &self,
        src: &EndpointId,
        dst: &EndpointId,
        probe: Probe,
        family: IpFamily,
    ) -> Decision {
        if !self.state.ready {
            return Decision::deny("the datastore is not Ready");
        }
        let (Some(src_ep), Some(dst_ep)) =
            (self.state.endpoints.get(src), self.state.endpoints.get(dst))
        else {
            return Decision::deny("an endpoint does not exist");
        };
        for (id, ep) in [(src, src_ep), (dst, dst_ep)] {
            if ep.state != EndpointState::Active {
                return Decision::deny(format!("endpoint {id} is inactive"));
            }
        }
        let (Some(src_ip), Some(dst_ip)) = (address(src_ep, family), address(dst_ep, family))
        else {
            return Decision::deny(format!("an endpoint has no {family:?} address"));
        };
        if src.host != dst.host {
            if let Err(reason) = self.route(&src.host, &dst.host, dst_ip, family) {
                return Decision::deny(reason);
            }
            if let Err(reason) = self.route(&dst.host, &src.host, src_ip, family) {
                return Decision::deny(format!("reply: {reason}"));
            }
        }
        let packet = Packet {
            src: src_ip,
            dst: dst_ip,
            family,
            probe,
        };
        if let Err(reason) = self.policy(Labelled::of(src_ep), Direction::Outbound, &packet) {
            return Decision::deny(format!("outbound of {src}: {reason}"));
        }
        match self.policy(Labelled::of(dst_ep), Direction::Inbound, &packet) {
            Err(reason) => Decision::deny(format!("inbound of {dst}: {reason}")),
            Ok(reason) => Decision::allow(reason),
        }
    }

    /// Whether host `from` learns the route to `dst` (owned by a workload on `owner`) over BGP.
    fn route(&self, from: &str, owner: &str, dst: IpAddr, family: IpFamily) -> Result<(), String> {
        let from_ip = self
            .bgp_address(from, family)
            .ok_or(format!("host {from} has no BGP address"))?;
        let owner_ip = self
            .bgp_address(owner, family)
            .ok_or(format!("host {owner} has no BGP address"))?;
        if !self.lists_peer(from, owner, owner_ip) || !self.lists_peer(owner, from, from_ip) {
            return Err(format!("no BGP session between {from} and {owner}"));
        }
        let exported = self.state.pools.values().any(|pool| {
            !pool.disabled && family_of(&pool.cidr) == family && pool.cidr.contains(&dst)
        });
        if !exported {
            return Err(format!(
                "no route: {dst} is in no enabled pool, so {owner} does not export it"
            ));
        }
        Ok(())
    }

    /// The address BIRD of `family` on `host` speaks from; none when that BIRD does not run.
    fn bgp_address(&self, host: &str, family: IpFamily) -> Option<IpAddr> {
        let h = self.state.hosts.get(host)?;
        let v4 = h.ip_v4?;
        match family {
            IpFamily::V4 => Some(IpAddr::V4(v4)),
            IpFamily::V6 => h.ip_v6.map(IpAddr::V6),
        }
    }

    /// Whether `host`'s BIRD lists `peer` (at `peer_ip`) with the AS `peer` speaks.
    fn lists_peer(&self, host: &str, peer: &str, peer_ip: IpAddr) -> bool {
        let peer_as = self.state.host_as(peer);
        let mesh = self.state.bgp.node_mesh;
        let global = self.state.bgp.peers.get(&peer_ip);
        let node = self
            .state
            .hosts
            .get(host)
            .and_then(|h| h.peers.get(&peer_ip));
        mesh || global.into_iter().chain(node).any(|p| p.as_num == peer_as)
    }

    /// The policies governing `ep` in `dir`, in the order they run.
    fn policies_of(&self, ep: Labelled<'_>, dir: Direction) -> Vec<(&'a str, &'a Policy)> {
        let wanted = match dir {
            Direction::Outbound => PolicyType::Egress,
            Direction::Inbound => PolicyType::Ingress,
        };
        let mut list: Vec<(&str, &Policy)> = self
            .state
            .policies
            .iter()
            .map(|(name, p)| (name.as_str(), &**p))
            .filter(|(_, p)| p.types.is_empty() || p.types.contains(&wanted))
            .filter(|(_, p)| {
                selectors::holds(
                    p.selector.expr(),
                    &selectors::labels_of(self.state, ep.labels, ep.profile_ids),
                )
            })
            .collect();
        list.sort_by(|a, b| {
            let rank = |p: &Policy| p.order.map(|o| o.value());
            match (rank(a.1), rank(b.1)) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then(a.0.cmp(b.0))
        });
        list
    }

    /// Runs the rules of one policy or profile: `Some(Ok)` when a rule allows, `Some(Err)`
    /// when one denies, `None` when none matched.
    fn run_rules(&self, what: &str, list: &[Rule], pkt: &Packet) -> Option<Result<String, String>> {
        for (i, rule) in list.iter().enumerate() {
            if !applies(rule, pkt.family) {
                continue;
            }
            if rule.icmp_type == Some(RESERVED_ICMP_TYPE) {
                return Some(Err(format!("{what} rule {} names icmp type 255", i + 1)));
            }
            if self.matches(rule, pkt) {
                let what = format!("{what} rule {}", i + 1);
                return Some(match rule.action {
                    Action::Allow => Ok(what),
                    Action::Deny => Err(format!("{what} denies")),
                });
            }
        }
        None
    }

    /// Runs `ep`'s policies, or else its profiles, for one direction: `Ok(reason)` when a rule
    /// allows.
    fn policy(&self, ep: Labelled<'_>, dir: Direction, pkt: &Packet) -> Result<String, String> {
        let policies = self.policies_of(ep, dir);
        if !policies.is_empty() {
            for (name, p) in &policies {
                let list = match dir {
                    Direction::Outbound => &p.outbound_rules,
                    Direction::Inbound => &p.inbound_rules,
                };
                if let Some(decided) = self.run_rules(&format!("policy {name}"), list, pkt) {
                    return decided;
                }
            }
            let names: Vec<&str> = policies.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "policies {} applied and none allowed it (end-of-policy drop)",
                names.join(", ")
            ));
        }
        for name in ep.profile_ids {
            let rules = self
                .state
                .profiles
                .get(name)
                .and_then(|p| p.rules.as_ref())
                .ok_or(format!("profile {name} is missing or has no rules"))?;
            let list = match dir {
                Direction::Outbound => &rules.outbound_rules,
                Direction::Inbound => &rules.inbound_rules,
            };
            for (i, rule) in list.iter().enumerate() {
                if !applies(rule, pkt.family) {
                    continue;
                }
                if rule.icmp_type == Some(RESERVED_ICMP_TYPE) {
                    return Err(format!("profile {name} rule {} names icmp type 255", i + 1));
                }
                if self.matches(rule, pkt) {
                    let what = format!("profile {name} rule {}", i + 1);
                    return match rule.action {
                        Action::Allow => Ok(what),
                        Action::Deny => Err(format!("{what} denies")),
                    };
                }
            }
        }
        Err("no profile rule allows it (default drop)".to_string())
    }

    fn matches(&self, rule: &Rule, pkt: &Packet) -> bool {
        let probe = pkt.probe;
        let proto = probe.protocol().number();
        let protocol_ok = rule.protocol.is_none_or(|p| p.number() == proto)
            && rule.not_protocol.is_none_or(|p| p.number() != proto);
        let nets_ok = rule.src_net.is_none_or(|n| n.contains(&pkt.src))
            && rule.dst_net.is_none_or(|n| n.contains(&pkt.dst))
            && rule.not_src_net.is_none_or(|n| !n.contains(&pkt.src))
            && rule.not_dst_net.is_none_or(|n| !n.contains(&pkt.dst));
        let tags_ok = rule
            .src_tag
            .as_deref()
            .is_none_or(|t| self.has_tag(t, pkt.src))
            && rule
                .dst_tag
                .as_deref()
                .is_none_or(|t| self.has_tag(t, pkt.dst));
        let ports = probe.ports();
        let in_ranges = |ranges: &[calico_core::model::PortRange], port: Option<u16>| {
            ranges.is_empty() || port.is_some_and(|p| ranges.iter().any(|r| r.contains(p)))
        };
        // A negated list needs a port outside all its ranges (and a port at all).
        let outside = |ranges: &[calico_core::model::PortRange], port: Option<u16>| {
            ranges.is_empty() || port.is_some_and(|p| !ranges.iter().any(|r| r.contains(p)))
        };
        let ports_ok = in_ranges(&rule.src_ports, ports.map(|p| p.0))
            && in_ranges(&rule.dst_ports, ports.map(|p| p.1))
            && outside(&rule.not_src_ports, ports.map(|p| p.0))
            && outside(&rule.not_dst_ports, ports.map(|p| p.1));
        let icmp = probe.icmp();
        let icmp_ok = rule
            .icmp_type
            .is_none_or(|t| icmp.is_some_and(|i| i.0 == t))
            && rule
                .icmp_code
                .is_none_or(|c| icmp.is_some_and(|i| i.1 == c));
        // `!icmp_type` T (with `!icmp_code` C): ICMP other than type T (code C).
        let not_icmp_ok = rule.not_icmp_type.is_none_or(|t| {
            icmp.is_some_and(|i| i.0 != t || rule.not_icmp_code.is_some_and(|c| i.1 != c))
        });
        let in_selector = |sel: &Option<calico_core::selector::Selector>, addr, want: bool| {
            sel.as_ref()
                .is_none_or(|s| selectors::members(self.state, s.expr()).contains(&addr) == want)
        };
        let selectors_ok = in_selector(&rule.src_selector, pkt.src, true)
            && in_selector(&rule.not_src_selector, pkt.src, false)
            && in_selector(&rule.dst_selector, pkt.dst, true)
            && in_selector(&rule.not_dst_selector, pkt.dst, false);
        protocol_ok && nets_ok && tags_ok && ports_ok && icmp_ok && not_icmp_ok && selectors_ok
    }

    fn has_tag(&self, tag: &str, addr: IpAddr) -> bool {
        self.tag_members
            .get(tag)
            .is_some_and(|nets| nets.iter().any(|n| n.contains(&addr)))
    }
}

/// Whether a rule is for this family at all: `ip_version`, the family of its nets, and ICMP
/// being v4-only / ICMPv6 being v6-only.
fn applies(rule: &Rule, family: IpFamily) -> bool {
    let version_ok = match rule.ip_version {
        Some(4) => family == IpFamily::V4,
        Some(6) => family == IpFamily::V6,
        _ => true,
    };
    let nets_ok = rule
        .src_net
        .iter()
        .chain(&rule.dst_net)
        .chain(&rule.not_src_net)
        .chain(&rule.not_dst_net)
        .all(|n| family_of(n) == family);
    let icmp_ok = match rule.protocol.map(Protocol::number) {
        Some(1) => family == IpFamily::V4,
        Some(58) => family == IpFamily::V6,
        _ => true,
    };
    version_ok && nets_ok && icmp_ok
}

fn family_of(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The endpoint's first address of `family`.
fn address(ep: &WorkloadEndpoint, family: IpFamily) -> Option<IpAddr> {
    ep.nets().find(|n| family_of(n) == family).map(|n| n.addr())
}

#[cfg(test)]
mod tests {
    use calico_core::model::{PortRange, Rules};

    use super::*;

    const A: &str = "/calico/v1/host/host1/workload/docker/workload_A/endpoint/a";
    const B: &str = "/calico/v1/host/host2/workload/docker/workload_B/endpoint/b";
    const C: &str = "/calico/v1/host/host1/workload/docker/workload_C/endpoint/c";

    fn endpoint(ip: &str, iface: &str, profiles: &[&str]) -> Vec<u8> {
        serde_json::json!({
            "state": "active", "name": iface, "mac": "ee:ee:ee:ee:ee:ee",
            "profile_ids": profiles, "ipv4_nets": [format!("{ip}/32")],
        })
        .to_string()
        .into_bytes()
    }

    fn profile(state: &mut ClusterState, name: &str, tags: &[&str], rules: &Rules) {
        let tags = serde_json::to_vec(tags).unwrap();
        state.apply(
            &format!("/calico/v1/policy/profile/{name}/tags"),
            Some(&tags),
        );
        let rules = serde_json::to_vec(rules).unwrap();
        state.apply(
            &format!("/calico/v1/policy/profile/{name}/rules"),
            Some(&rules),
        );
    }

    /// The seed after step 5: A (host1) and B (host2) in PROF_A_B, C (host1) in no profile.
    fn seed() -> ClusterState {
        let mut state = ClusterState::default();
        state.apply("/calico/v1/Ready", Some(b"true"));
        state.apply(
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            Some(br#"{"cidr":"192.168.0.0/16"}"#),
        );
        state.apply(
            "/calico/bgp/v1/host/host1/ip_addr_v4",
            Some(b"172.31.250.2"),
        );
        state.apply(
            "/calico/bgp/v1/host/host2/ip_addr_v4",
            Some(b"172.31.250.3"),
        );
        state.apply(A, Some(&endpoint("192.168.1.1", "calia", &["PROF_A_B"])));
        state.apply(B, Some(&endpoint("192.168.1.2", "calib", &["PROF_A_B"])));
        state.apply(C, Some(&endpoint("192.168.1.3", "calic", &[])));
        profile(
            &mut state,
            "PROF_A_B",
            &["PROF_A_B"],
            &Rules::default_for("PROF_A_B"),
        );
        state
    }

    fn decide(state: &ClusterState, src: &str, dst: &str, probe: Probe) -> Decision {
        Oracle::new(state).decide_workloads(src, dst, probe, IpFamily::V4)
    }

    #[test]
    fn seed_profile_connects_its_members_only() {
        let state = seed();
        for probe in Probe::standard() {
            assert_eq!(
                decide(&state, "workload_A", "workload_B", probe).verdict,
                Verdict::Allow
            );
            assert_eq!(
                decide(&state, "workload_B", "workload_A", probe).verdict,
                Verdict::Allow
            );
            assert_eq!(
                decide(&state, "workload_C", "workload_A", probe).verdict,
                Verdict::Deny
            );
            assert_eq!(
                decide(&state, "workload_A", "workload_C", probe).verdict,
                Verdict::Deny
            );
        }
        let reason = decide(&state, "workload_A", "workload_C", Probe::ping()).reason;
        assert!(reason.contains("inbound"), "{reason}");
        assert_eq!(
            decide(&state, "workload_A", "nobody", Probe::ping()).verdict,
            Verdict::Deny
        );
    }

    #[test]
    fn routes_need_the_mesh_and_a_pool() {
        let mut state = seed();
        state.apply(
            "/calico/bgp/v1/global/node_mesh",
            Some(br#"{"enabled":false}"#),
        );
        let d = decide(&state, "workload_A", "workload_B", Probe::ping());
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.reason.contains("no BGP session"), "{}", d.reason);
        state.apply("/calico/bgp/v1/global/node_mesh", None);
        state.apply(
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            Some(br#"{"cidr":"192.168.0.0/16","disabled":true}"#),
        );
        let d = decide(&state, "workload_A", "workload_B", Probe::ping());
        assert!(d.reason.contains("no enabled pool"), "{}", d.reason);
    }

    #[test]
    fn first_matching_rule_decides_and_missing_profiles_deny() {
        let mut state = seed();
        let deny_ssh = Rule {
            action: Action::Deny,
            protocol: Some(Protocol::Tcp),
            dst_ports: vec![PortRange::single(22)],
            ..Rule::default()
        };
        let mut rules = Rules::default_for("PROF_A_B");
        rules.inbound_rules.insert(0, deny_ssh);
        // A v6-only rule that would allow everything must be skipped for v4.
        rules.inbound_rules.insert(
            0,
            Rule {
                src_net: Some("::/0".parse().unwrap()),
                ..Rule::default()
            },
        );
        profile(&mut state, "PROF_A_B", &["PROF_A_B"], &rules);
        assert_eq!(
            decide(&state, "workload_A", "workload_B", Probe::tcp(22)).verdict,
            Verdict::Deny
        );
        assert_eq!(
            decide(&state, "workload_A", "workload_B", Probe::tcp(80)).verdict,
            Verdict::Allow
        );
        state.apply(
            B,
            Some(&endpoint("192.168.1.2", "calib", &["GONE", "PROF_A_B"])),
        );
        let d = decide(&state, "workload_A", "workload_B", Probe::tcp(80));
        assert!(d.reason.contains("profile GONE is missing"), "{}", d.reason);
    }
}
