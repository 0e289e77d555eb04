//! Proptest strategies for random clusters: hosts on one wire, workloads with unique
//! addresses from the default pool, profiles with random tags and rules, random profile lists
//! (empty ones and names of profiles that do not exist included), and later operations (move an
//! endpoint between profiles, remove an endpoint), and selector policies over workload labels
//! (random order, selectors and types; relabel a workload, delete a policy).
//!
//! The output is plain data ([`ClusterSpec`]); [`crate::ops`] turns it into datastore writes
//! and workload plumbing on a [`crate::World`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use calico_core::model::{
    Action, LabelMap, Order, Policy, PolicyType, PortRange, Protocol, Rule, Rules,
};
use calico_core::selector::Selector;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};

/// Tags profiles may carry besides their own name.
pub const TAG_POOL: &[&str] = &["web", "db", "ops"];

/// A profile name that is never created, so endpoints listing it drop everything.
pub const GHOST_PROFILE: &str = "PROF_GHOST";

/// The address of host number `index` (0-based) on the shared wire 172.31.250.0/24.
pub fn host_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 250, u8::try_from(index % 250).unwrap_or(0) + 2)
}

/// The name of host number `index` (0-based): `host1`, `host2`, ...
pub fn host_name(index: usize) -> String {
    format!("host{}", index + 1)
}

/// The name of profile number `index`.
pub fn profile_name(index: usize) -> String {
    format!("PROF_{index}")
}

/// One workload: the host it runs on, its address and its endpoint's profile list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    pub name: String,
    /// Index into the hosts.
    pub host: usize,
    pub addr: Ipv4Addr,
    pub profiles: Vec<String>,
    pub labels: LabelMap,
}

/// One selector policy, exactly as stored under its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub name: String,
    pub policy: Policy,
}

/// One profile: tags and rules, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSpec {
    pub name: String,
    pub tags: Vec<String>,
    pub rules: Rules,
    /// Labels the profile's endpoints inherit; `None` writes no labels key.
    pub labels: Option<LabelMap>,
}

/// A change made after the cluster first settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `calicoctl container <w> profile set <profiles>`.
    SetProfiles {
        workload: usize,
        profiles: Vec<String>,
    },
    /// Delete the workload's endpoint from the datastore (its veth stays).
    RemoveEndpoint { workload: usize },
    /// Replace the labels on the workload's endpoint.
    SetLabels { workload: usize, labels: LabelMap },
    /// Delete a policy (an index past the end deletes nothing).
    DeletePolicy { policy: usize },
}

/// A whole random cluster and what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub hosts: usize,
    pub workloads: Vec<WorkloadSpec>,
    pub profiles: Vec<ProfileSpec>,
    pub policies: Vec<PolicySpec>,
    pub ops: Vec<Op>,
}

/// Selectors policies and rules pick from: labels, absent labels, profile labels (`env`) and
/// tags read as labels (`has(web)`).
pub const SELECTOR_POOL: &[&str] = &[
    "role == 'web'",
    "role == 'db'",
    "role != 'db'",
    "has(role)",
    "!has(role)",
    "role in {'web', 'db'}",
    "env == 'prod'",
    "has(web)",
    "all()",
    "role == 'db' || env == 'prod'",
];

fn selector() -> impl Strategy<Value = Selector> {
    select(SELECTOR_POOL).prop_map(|s| Selector::parse(s).unwrap_or_else(|_| Selector::all()))
}

/// Labels: `role` web, db or absent; `env` prod or absent.
pub fn labels() -> impl Strategy<Value = LabelMap> {
    (
        proptest::option::of(select(vec!["web", "db"])),
        any::<bool>(),
    )
        .prop_map(|(role, prod)| {
            let mut m = BTreeMap::new();
            if let Some(r) = role {
                m.insert("role".to_string(), r.to_string());
            }
            if prod {
                m.insert("env".to_string(), "prod".to_string());
            }
            m
        })
}

fn ports() -> impl Strategy<Value = Vec<PortRange>> {
    let range = PortRange {
        first: 1000,
        last: 2000,
    };
    prop_oneof![
        4 => Just(vec![]),
        1 => Just(vec![PortRange::single(22)]),
        1 => Just(vec![PortRange::single(80)]),
        1 => Just(vec![PortRange::single(443)]),
        1 => Just(vec![PortRange::single(22), PortRange::single(80)]),
        1 => Just(vec![range]),
    ]
}

/// Source ports: mostly none, sometimes a range that holds every ephemeral port a probe may be
/// sent from (Linux's default `ip_local_port_range`, a superset of [`crate::probe::EPHEMERAL_PORTS`]),
/// sometimes one that holds none of them.
fn src_ports() -> impl Strategy<Value = Vec<PortRange>> {
    let ephemeral = PortRange {
        first: 32768,
        last: 60999,
    };
    prop_oneof![
        6 => Just(vec![]),
        1 => Just(vec![ephemeral]),
        1 => Just(vec![PortRange { first: 1000, last: 2000 }]),
    ]
}

fn net() -> impl Strategy<Value = Option<IpNet>> {
    let nets = [
        "192.168.0.0/17",
        "192.168.128.0/17",
        "10.0.0.0/8",
        "fd80:24e2:f998:72d6::/64",
    ]
    .map(|n| n.parse::<IpNet>().ok());
    prop_oneof![4 => Just(None), 1 => select(nets.to_vec())]
}

/// What a rule negates: a protocol, a network (source when `true`), its destination ports
/// (when `true`, the generated ports become excluded ones), an ICMP type and code.
type Negation = (
    Option<Protocol>,
    Option<(bool, IpNet)>,
    bool,
    Option<(u8, Option<u8>)>,
);

fn negation() -> impl Strategy<Value = Negation> {
    let protocol = prop_oneof![
        6 => Just(None),
        1 => Just(Some(Protocol::Tcp)),
        1 => Just(Some(Protocol::Icmp)),
    ];
    let net = net().prop_flat_map(|n| any::<bool>().prop_map(move |src| n.map(|n| (src, n))));
    let icmp = prop_oneof![
        4 => Just(None),
        1 => Just(Some((8, None))),
        1 => Just(Some((8, Some(1)))),
        1 => Just(Some((0, None))),
    ];
    (protocol, net, prop::bool::weighted(0.25), icmp)
}

fn tag(names: Vec<String>) -> impl Strategy<Value = Option<String>> {
    let mut tags: Vec<String> = TAG_POOL.iter().map(|t| t.to_string()).collect();
    tags.extend(names);
    tags.push("nosuchtag".to_string());
    prop_oneof![3 => Just(None), 1 => select(tags).prop_map(Some)]
}

/// One valid rule (it passes `Rule::validate`, so the profile is never dropped as invalid).
pub fn rule(profile_names: Vec<String>) -> impl Strategy<Value = Rule> {
    let action = prop_oneof![2 => Just(Action::Allow), 1 => Just(Action::Deny)];
    let protocol = prop_oneof![
        2 => Just(None),
        1 => Just(Some(Protocol::Tcp)),
        1 => Just(Some(Protocol::Udp)),
        1 => Just(Some(Protocol::Icmp)),
    ];
    let icmp = prop_oneof![
        2 => Just((None, None)),
        1 => Just((Some(8), None)),
        1 => Just((Some(8), Some(0))),
        1 => Just((Some(8), Some(1))),
    ];
    let version = prop_oneof![6 => Just(None), 1 => Just(Some(4u8)), 1 => Just(Some(6u8))];
    (
        action,
        protocol,
        (src_ports(), ports(), icmp),
        (net(), net(), negation()),
        (tag(profile_names.clone()), tag(profile_names)),
        version,
        prop_oneof![
            4 => Just(None),
            1 => (0..4usize, selector()).prop_map(Some),
        ],
    )
        .prop_map(
            |(
                action,
                protocol,
                (src_ports, dst_ports, icmp),
                (src_net, dst_net, (not_protocol, not_net, not_ports, not_icmp)),
                (src_tag, dst_tag),
                ip_version,
                sel,
            )| {
                let has_ports = protocol.is_some_and(Protocol::has_ports);
                let is_icmp = protocol.is_some_and(Protocol::is_icmp);
                let (icmp_type, icmp_code) = if is_icmp { icmp } else { (None, None) };
                let pick = |n: usize| {
                    sel.as_ref()
                        .filter(|(i, _)| *i == n)
                        .map(|(_, s)| s.clone())
                };
                // At most one of a match and its negation (`Rule::validate`).
                let (not_src_net, not_dst_net) = match not_net {
                    Some((true, n)) if src_net.is_none() => (Some(n), None),
                    Some((false, n)) if dst_net.is_none() => (None, Some(n)),
                    _ => (None, None),
                };
                let (dst_ports, not_dst_ports) = match (has_ports, not_ports) {
                    (false, _) => (vec![], vec![]),
                    (true, false) => (dst_ports, vec![]),
                    (true, true) => (vec![], dst_ports),
                };
                let not_icmp = not_icmp.filter(|_| is_icmp && icmp_type.is_none());
                Rule {
                    not_protocol: not_protocol.filter(|_| protocol.is_none()),
                    not_dst_ports,
                    not_src_ports: vec![],
                    not_icmp_type: not_icmp.map(|n| n.0),
                    not_icmp_code: not_icmp.and_then(|n| n.1),
                    not_src_net,
                    not_dst_net,
                    src_selector: pick(0),
                    not_src_selector: pick(1),
                    dst_selector: pick(2),
                    not_dst_selector: pick(3),
                    action,
                    protocol,
                    src_tag,
                    src_net,
                    src_ports: if has_ports { src_ports } else { vec![] },
                    dst_tag,
                    dst_net,
                    dst_ports,
                    icmp_type,
                    icmp_code,
                    ip_version,
                }
            },
        )
}

/// A catch-all closing a rule list: none, allow everything, or allow from a tag.
fn closing_rule(names: Vec<String>) -> impl Strategy<Value = Option<Rule>> {
    let mut tags: Vec<String> = TAG_POOL.iter().map(|t| t.to_string()).collect();
    tags.extend(names);
    prop_oneof![
        2 => Just(None),
        2 => Just(Some(Rule::default())),
        1 => select(tags).prop_map(|t| Some(Rule {
            src_tag: Some(t),
            ..Rule::default()
        })),
    ]
}

/// A profile named `name`: its own name as a tag or not, 0-2 pool tags, 0-4 random rules each
/// way, often closed by a catch-all allow so that a good share of probes get through.
fn profile(name: String, names: Vec<String>) -> impl Strategy<Value = ProfileSpec> {
    let pool: Vec<String> = TAG_POOL.iter().map(|t| t.to_string()).collect();
    (
        any::<bool>(),
        subsequence(pool, 0..=2),
        (
            prop::collection::vec(rule(names.clone()), 0..=4),
            closing_rule(names.clone()),
        ),
        (
            prop::collection::vec(rule(names.clone()), 0..=4),
            closing_rule(names),
        ),
        prop_oneof![3 => Just(None), 1 => labels().prop_map(Some)],
    )
        .prop_map(
            move |(
                own,
                mut tags,
                (mut inbound_rules, close_in),
                (mut outbound_rules, close_out),
                labels,
            )| {
                if own {
                    tags.insert(0, name.clone());
                }
                inbound_rules.extend(close_in);
                outbound_rules.extend(close_out);
                ProfileSpec {
                    name: name.clone(),
                    tags,
                    rules: Rules {
                        id: Some(name.clone()),
                        inbound_rules,
                        outbound_rules,
                    },
                    labels,
                }
            },
        )
}

/// A profile list: 0-3 distinct names in any order (mostly not empty), now and then naming a profile that does
/// not exist.
fn profile_list(names: Vec<String>) -> impl Strategy<Value = Vec<String>> {
    let max = names.len().min(3);
    let ghost = prop_oneof![5 => Just(None), 1 => Just(Some(GHOST_PROFILE.to_string()))];
    let some = prop_oneof![1 => Just(vec![]), 4 => subsequence(names, 1..=max)];
    (some, ghost, any::<Index>())
        .prop_map(|(mut list, ghost, at)| {
            if let Some(ghost) = ghost {
                let at = at.index(list.len() + 1);
                list.insert(at, ghost);
            }
            list
        })
        .prop_shuffle()
}

/// Policy number `index`: a random order (absent, 1 or 10, so ties happen), selector and
/// types, 0-3 random rules each way, sometimes closed by an allow.
fn policy(index: usize, names: Vec<String>) -> impl Strategy<Value = PolicySpec> {
    let types = prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec![PolicyType::Ingress]),
        1 => Just(vec![PolicyType::Egress]),
    ];
    (
        proptest::option::of(select(vec![1.0, 10.0])),
        selector(),
        types,
        (
            prop::collection::vec(rule(names.clone()), 0..=3),
            closing_rule(names.clone()),
        ),
        (
            prop::collection::vec(rule(names.clone()), 0..=3),
            closing_rule(names),
        ),
    )
        .prop_map(
            move |(order, selector, types, (mut inbound, ci), (mut outbound, co))| {
                inbound.extend(ci);
                outbound.extend(co);
                PolicySpec {
                    name: format!("pol-{index}"),
                    policy: Policy {
                        order: order.and_then(|o| Order::new(o).ok()),
                        inbound_rules: inbound,
                        outbound_rules: outbound,
                        selector,
                        annotations: BTreeMap::new(),
                        types,
                    },
                }
            },
        )
}

/// 1-8 workloads on `hosts` hosts with unique addresses in 192.168.0.0/16.
fn workloads(hosts: usize, names: Vec<String>) -> impl Strategy<Value = Vec<WorkloadSpec>> {
    prop::collection::btree_set(1u16..=0xfffe, 1..=8)
        .prop_flat_map(move |offsets| {
            let n = offsets.len();
            (
                Just(offsets),
                prop::collection::vec(0..hosts, n),
                prop::collection::vec(profile_list(names.clone()), n),
                prop::collection::vec(labels(), n),
            )
        })
        .prop_map(|(offsets, hosts, profiles, labels)| {
            offsets
                .into_iter()
                .zip(hosts)
                .zip(profiles)
                .zip(labels)
                .enumerate()
                .map(|(i, (((offset, host), profiles), labels))| {
                    let [hi, lo] = offset.to_be_bytes();
                    WorkloadSpec {
                        name: format!("workload_{i}"),
                        host,
                        addr: Ipv4Addr::new(192, 168, hi, lo),
                        profiles,
                        labels,
                    }
                })
                .collect()
        })
}

fn ops(workloads: usize, names: Vec<String>) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        2 => (any::<Index>(), labels()).prop_map(move |(w, labels)| Op::SetLabels {
            workload: w.index(workloads),
            labels,
        }),
        1 => (0..3usize).prop_map(|policy| Op::DeletePolicy { policy }),
        3 => (any::<Index>(), profile_list(names)).prop_map(move |(w, profiles)| Op::SetProfiles {
            workload: w.index(workloads),
            profiles,
        }),
        1 => any::<Index>().prop_map(move |w| Op::RemoveEndpoint {
            workload: w.index(workloads),
        }),
    ];
    prop::collection::vec(op, 0..=3)
}

/// A random cluster: 2-5 hosts, 1-4 profiles, 0-3 policies, 1-8 workloads, 0-3 later
/// operations.
pub fn cluster() -> impl Strategy<Value = ClusterSpec> {
    (2usize..=5, 1usize..=4, 0usize..=3)
        .prop_flat_map(|(hosts, n_profiles, n_policies)| {
            let names: Vec<String> = (0..n_profiles).map(profile_name).collect();
            let profiles: Vec<_> = names
                .iter()
                .map(|n| profile(n.clone(), names.clone()))
                .collect();
            let policies: Vec<_> = (0..n_policies).map(|i| policy(i, names.clone())).collect();
            (
                Just(hosts),
                (profiles, policies),
                workloads(hosts, names.clone()),
                Just(names),
            )
        })
        .prop_flat_map(|(hosts, profiles, workloads, names)| {
            let n = workloads.len();
            (Just(hosts), Just(profiles), Just(workloads), ops(n, names))
        })
        .prop_map(
            |(hosts, (profiles, policies), workloads, ops)| ClusterSpec {
                hosts,
                workloads,
                profiles,
                policies,
                ops,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::EPHEMERAL_PORTS;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn generated_clusters_are_well_formed() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..64 {
            let spec = cluster().new_tree(&mut runner).unwrap().current();
            assert!((2..=5).contains(&spec.hosts), "hosts {}", spec.hosts);
            assert!((1..=8).contains(&spec.workloads.len()));
            let mut addrs: Vec<_> = spec.workloads.iter().map(|w| w.addr).collect();
            addrs.sort();
            addrs.dedup();
            assert_eq!(addrs.len(), spec.workloads.len(), "addresses are unique");
            for w in &spec.workloads {
                assert!(w.host < spec.hosts);
            }
            for p in &spec.profiles {
                let mut rules = p.rules.clone();
                rules.validate().unwrap();
                let all = p.rules.inbound_rules.iter().chain(&p.rules.outbound_rules);
                for range in all.flat_map(|r| &r.src_ports) {
                    let held = EPHEMERAL_PORTS
                        .clone()
                        .filter(|&port| range.contains(port))
                        .count();
                    assert!(
                        held == 0 || held == EPHEMERAL_PORTS.len(),
                        "{range:?} holds {held} ephemeral ports: the oracle would disagree"
                    );
                }
            }
            for op in &spec.ops {
                if let Op::SetProfiles { workload, .. }
                | Op::RemoveEndpoint { workload }
                | Op::SetLabels { workload, .. } = *op
                {
                    assert!(workload < spec.workloads.len());
                }
            }
            for p in &spec.policies {
                let mut policy = p.policy.clone();
                policy.validate().unwrap();
            }
        }
    }
}
