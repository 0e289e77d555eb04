//! Properties of the policy compiler:
//! 1. the incremental calculator agrees with `compute` for any delivery order, duplication and
//!    batching of datastore updates (last write per key wins);
//! 2. arbitrary names can never inject a chain, set or rule line: rejected names never reach
//!    the state, and every rendered line is one of ours with one of the expected targets.

use std::collections::{BTreeMap, BTreeSet};

use calico_core::calc::Calculator;
use calico_core::cluster::{Applied, ClusterState};
use calico_core::compute::compute;
use calico_core::compute::names::{MAX_CHAIN_LEN, MAX_IPSET_LEN};
use calico_core::names::validate_name;
use calico_core::render::iptables::render_table;
use calico_core::shared::{SharedDecodes, SharedListing};
use proptest::prelude::*;
use serde_json::json;

const LOCAL: &str = "h1";
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const PROFILES: [&str; 4] = ["P0", "P1", "P2", "P3"];
const TAGS: [&str; 4] = ["T0", "T1", "P0", "P1"];
const POLICIES: [&str; 3] = ["pol-a", "pol-b", "pol-c"];
/// Selectors over few labels, tags included (a tag reads as a label with value ""), with
/// two spellings of one selector (they share one set).
const SELECTORS: [&str; 10] = [
    "role == 'web'",
    "role=='web'",
    "role != 'db'",
    "has(env)",
    "!has(role)",
    "role in {'web', 'db'}",
    "",
    "P0 == ''",
    "has(T1) || env == 'prod'",
    "env == 'prod' && role not in {'web'}",
];

fn labels() -> impl Strategy<Value = serde_json::Value> {
    (
        proptest::option::of(pick(&["web", "db"])),
        proptest::option::of(pick(&["prod", "dev"])),
    )
        .prop_map(|(role, env)| {
            let mut m = serde_json::Map::new();
            if let Some(r) = role {
                m.insert("role".into(), json!(r));
            }
            if let Some(e) = env {
                m.insert("env".into(), json!(e));
            }
            serde_json::Value::Object(m)
        })
}

type Update = (String, Option<Vec<u8>>);

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

fn rule() -> impl Strategy<Value = serde_json::Value> {
    (
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some("tcp")),
            Just(Some("udp")),
            Just(Some("icmp")),
            Just(Some("icmpv6"))
        ],
        proptest::option::of(pick(&TAGS)),
        proptest::option::of(pick(&TAGS)),
        proptest::option::of(pick(&["10.0.0.0/8", "fd00::/8", "192.168.0.0/24"])),
        proptest::option::of(pick(&[4u8, 6])),
        proptest::collection::vec(1u16..2000, 0..18),
        proptest::option::of((
            pick(&[
                "src_selector",
                "!src_selector",
                "dst_selector",
                "!dst_selector",
            ]),
            pick(&SELECTORS),
        )),
    )
        .prop_map(|(allow, proto, src_tag, dst_tag, net, ipv, ports, sel)| {
            let mut r = serde_json::Map::new();
            r.insert("action".into(), json!(if allow { "allow" } else { "deny" }));
            if let Some(p) = proto {
                r.insert("protocol".into(), json!(p));
                if matches!(p, "tcp" | "udp") && !ports.is_empty() {
                    r.insert("dst_ports".into(), json!(ports));
                }
                if matches!(p, "icmp" | "icmpv6") && ports.len() % 3 == 1 {
                    r.insert("icmp_type".into(), json!(ports.len() * 13 % 256));
                }
            }
            if let Some(t) = src_tag {
                r.insert("src_tag".into(), json!(t));
            }
            if let Some(t) = dst_tag {
                r.insert("dst_tag".into(), json!(t));
            }
            if let Some(n) = net {
                r.insert("src_net".into(), json!(n));
            }
            if let Some(v) = ipv {
                r.insert("ip_version".into(), json!(v));
            }
            if let Some((field, sel)) = sel {
                r.insert(field.into(), json!(sel));
            }
            serde_json::Value::Object(r)
        })
}

fn bytes(v: serde_json::Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn endpoint_update() -> impl Strategy<Value = Update> {
    (
        pick(&HOSTS),
        0..3usize,
        0..3usize,
        proptest::collection::vec(pick(&PROFILES), 0..3),
        proptest::collection::btree_set(1..7u8, 0..3),
        any::<bool>(),
        any::<bool>(),
        0..10u8,
        labels(),
    )
        .prop_map(|(host, wl, iface, profiles, ips, active, v6, kind, labels)| {
            let key = format!("/calico/v1/host/{host}/workload/docker/w{wl}/endpoint/e");
            let value = match kind {
                0 => None,
                1 => text("{not json"),
                _ => bytes(json!({
                    "state": if active || kind > 5 { "active" } else { "inactive" },
                    "name": format!("cali{iface}"),
                    "mac": format!("ee:ee:ee:ee:ee:0{iface}"),
                    "profile_ids": profiles,
                    "ipv4_nets": ips.iter().map(|i| format!("192.168.0.{i}/32")).collect::<Vec<_>>(),
                    "ipv6_nets": if v6 { ips.iter().map(|i| format!("fd80::{i}/128")).collect::<Vec<_>>() } else { vec![] },
                    "labels": labels,
                })),
            };
            (key, value)
        })
}

fn profile_update() -> impl Strategy<Value = Update> {
    (
        pick(&PROFILES),
        pick(&["tags", "rules", "labels"]),
        proptest::collection::vec(pick(&TAGS), 0..3),
        proptest::collection::vec(rule(), 0..4),
        proptest::collection::vec(rule(), 0..3),
        0..8u8,
        labels(),
    )
        .prop_map(|(p, half, tags, inbound, outbound, kind, labels)| {
            let key = format!("/calico/v1/policy/profile/{p}/{half}");
            let value = match (kind, half) {
                (0, _) => None,
                (1, _) => text("[\"bad tag\"]"),
                (_, "tags") => bytes(json!(tags)),
                (_, "labels") => bytes(labels),
                _ => bytes(json!({"inbound_rules": inbound, "outbound_rules": outbound})),
            };
            (key, value)
        })
}

const TYPES: [&[&str]; 3] = [&[], &["ingress"], &["egress"]];

fn policy_update() -> impl Strategy<Value = Update> {
    (
        pick(&POLICIES),
        proptest::option::of(pick(&[1.0f64, 10.0, 10.5])),
        pick(&SELECTORS),
        proptest::collection::vec(rule(), 0..3),
        proptest::collection::vec(rule(), 0..3),
        pick(&TYPES),
        0..8u8,
    )
        .prop_map(|(name, order, selector, inbound, outbound, types, kind)| {
            let key = format!("/calico/v1/policy/tier/default/policy/{name}");
            let mut p = json!({
                "selector": selector,
                "inbound_rules": inbound,
                "outbound_rules": outbound,
                "types": types,
            });
            if let Some(o) = order {
                p["order"] = json!(o);
            }
            let value = match kind {
                0 => None,
                1 => bytes(json!({"selector": "role = 'web'"})),
                _ => bytes(p),
            };
            (key, value)
        })
}

fn host_endpoint_update() -> impl Strategy<Value = Update> {
    (
        pick(&HOSTS),
        0..2usize,
        1..4u8,
        proptest::collection::vec(pick(&PROFILES), 0..2),
        labels(),
        0..7u8,
    )
        .prop_map(|(host, id, ip, profiles, labels, kind)| {
            let key = format!("/calico/v1/host/{host}/endpoint/hep{id}");
            let value = match kind {
                0 => None,
                1 => bytes(json!({"labels": labels})),
                6 => bytes(json!({
                    "name": format!("eth{ip}"),
                    "labels": labels,
                    "profile_ids": profiles,
                })),
                _ => bytes(json!({
                    "expected_ipv4_addrs": [format!("172.31.250.{ip}")],
                    "expected_ipv6_addrs": if kind > 3 { vec![format!("fd00::{ip}")] } else { vec![] },
                    "labels": labels,
                    "profile_ids": profiles,
                })),
            };
            (key, value)
        })
}

fn global_update() -> impl Strategy<Value = Update> {
    let pool = (
        pick(&["192.168.0.0/16", "10.0.0.0/8", "fd00::/8"]),
        any::<bool>(),
        0..3u8,
        any::<bool>(),
    )
        .prop_map(|(cidr, masq, tunnel, present)| {
            let v = if cidr.contains(':') { "6" } else { "4" };
            let key = format!("/calico/v1/ipam/v{v}/pool/{}", cidr.replace('/', "-"));
            let mut pool = json!({"cidr": cidr, "masquerade": masq});
            match tunnel {
                1 if v == "4" => pool["ipip"] = json!("tunl0"),
                2 if v == "4" => pool["vxlan"] = json!(true),
                _ => {}
            }
            (key, present.then(|| pool.to_string().into_bytes()))
        });
    let config = (
        pick(&[
            "/calico/v1/config/",
            "/calico/v1/host/h1/config/",
            "/calico/v1/host/h2/config/",
        ]),
        pick(&[
            "DefaultEndpointToHostAction",
            "IpInIpEnabled",
            "InterfacePrefix",
            "FailsafeInboundHostPorts",
            "FailsafeOutboundHostPorts",
        ]),
        pick(&[
            "ACCEPT",
            "RETURN",
            "DROP",
            "true",
            "false",
            "cali",
            "tap",
            "",
            "none",
            "tcp:2379,udp:53",
            "22",
        ]),
        any::<bool>(),
    )
        .prop_map(|(dir, name, value, present)| {
            (
                format!("{dir}{name}"),
                present.then(|| value.as_bytes().to_vec()),
            )
        });
    let bgp =
        (pick(&HOSTS), 0..8u8, 1..4u8, any::<bool>()).prop_map(|(host, field, n, present)| {
            let (key, value) = match field {
                0 => (
                    format!("/calico/bgp/v1/host/{host}/ip_addr_v4"),
                    format!("172.31.250.{n}"),
                ),
                1 => (
                    format!("/calico/bgp/v1/host/{host}/ip_addr_v6"),
                    format!("fd00::{n}"),
                ),
                2 => (
                    format!("/calico/bgp/v1/host/{host}/as_num"),
                    format!("6450{n}"),
                ),
                3 => (
                    "/calico/bgp/v1/global/node_mesh".to_string(),
                    format!("{{\"enabled\": {}}}", n > 1),
                ),
                4 => (
                    format!("/calico/v1/host/{host}/bird_ip"),
                    format!("172.31.250.{n}"),
                ),
                5 => (
                    format!("/calico/v1/host/{host}/vtep"),
                    format!("{{\"ip\": \"192.168.9.{n}\", \"mac\": \"66:00:00:00:00:0{n}\"}}"),
                ),
                6 => (
                    format!(
                        "/calico/ipam/v2/host/{host}/ipv4/block/192.168.0.{}-26",
                        (n - 1) * 64
                    ),
                    String::new(),
                ),
                _ => (
                    format!("/calico/bgp/v1/global/peer_v4/10.9.9.{n}"),
                    format!("{{\"ip\": \"10.9.9.{n}\", \"as_num\": \"6500{n}\"}}"),
                ),
            };
            (key, present.then(|| value.into_bytes()))
        });
    prop_oneof![pool, config, bgp]
}

fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        4 => endpoint_update(),
        3 => profile_update(),
        3 => policy_update(),
        1 => host_endpoint_update(),
        1 => global_update(),
    ]
}

/// A delivery: shuffled updates with some consecutive duplicates, cut into batches.
fn delivery() -> impl Strategy<Value = Vec<Vec<Update>>> {
    (proptest::collection::vec((update(), any::<bool>(), 1..5usize), 1..60))
        .prop_shuffle()
        .prop_map(|events| {
            let mut batches = vec![Vec::new()];
            for (u, dup, cut) in events {
                if dup {
                    batches.last_mut().unwrap().push(u.clone());
                }
                batches.last_mut().unwrap().push(u);
                if cut == 1 {
                    batches.push(Vec::new());
                }
            }
            batches
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn calculator_agrees_with_compute(batches in delivery()) {
        let mut calc = Calculator::new(LOCAL);
        let mut last: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for batch in &batches {
            for (k, v) in batch {
                last.insert(k.clone(), v.clone());
            }
            let before = calc.desired().clone();
            let delta = calc.apply_batch(batch.iter().cloned());
            // Every key whose last value in the batch does not decode is reported, no other.
            let mut batch_last: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
            for (k, v) in batch {
                batch_last.insert(k, v.as_deref());
            }
            let mut scratch = ClusterState::default();
            let invalid: Vec<&str> = batch_last
                .into_iter()
                .filter(|(k, v)| matches!(scratch.apply(k, *v), Applied::Invalid(..)))
                .map(|(k, _)| k)
                .collect();
            prop_assert_eq!(delta.invalid.keys().map(String::as_str).collect::<Vec<_>>(), invalid);
            let expected = compute(calc.state(), LOCAL);
            prop_assert_eq!(calc.desired(), &expected);
            prop_assert_eq!(delta.is_empty(), &before == calc.desired());
        }
        let mut state = ClusterState::default();
        for (k, v) in &last {
            state.apply(k, v.as_deref());
        }
        prop_assert_eq!(calc.state(), &state);
        prop_assert_eq!(calc.desired(), &compute(&state, LOCAL));
    }

    #[test]
    fn calculators_sharing_a_listing_agree_with_compute_and_stay_apart(
        snapshot in delivery(),
        later in delivery(),
    ) {
        // The datastore after `snapshot`, listed (puts only) and loaded by every host.
        let mut last: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in snapshot.into_iter().flatten() {
            match v {
                Some(v) => last.insert(k, v),
                None => last.remove(&k),
            };
        }
        let mut state = ClusterState::default();
        for (k, v) in &last {
            state.apply(k, Some(v));
        }
        let shared = SharedDecodes::new();
        let listing = SharedListing::new(last.clone(), &shared);
        let mut calcs: Vec<Calculator> = HOSTS
            .into_iter()
            .map(|h| Calculator::with_shared(h, shared.clone()))
            .collect();
        for (calc, host) in calcs.iter_mut().zip(HOSTS) {
            let delta = calc.load_listing(&listing);
            let mut batched = Calculator::new(host);
            let batch_delta = batched.apply_batch(last.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
            prop_assert_eq!(calc.state(), &state);
            prop_assert_eq!(calc.desired(), &compute(&state, host));
            prop_assert_eq!(&delta, &batch_delta);
        }
        // Later updates reach one host only: the others (and the listing) are unaffected.
        let (first, rest) = calcs.split_at_mut(1);
        for batch in &later {
            first[0].apply_batch(batch.iter().cloned());
            prop_assert_eq!(first[0].desired(), &compute(first[0].state(), LOCAL));
        }
        for (calc, host) in rest.iter().zip(&HOSTS[1..]) {
            prop_assert_eq!(calc.state(), &state);
            prop_assert_eq!(calc.desired(), &compute(&state, host));
        }
        let mut again = Calculator::with_shared(LOCAL, shared.clone());
        again.load_listing(&listing);
        prop_assert_eq!(again.state(), &state);
        prop_assert_eq!(again.desired(), &compute(&state, LOCAL));
    }

    #[test]
    fn names_never_inject_rules(
        profile in ".{0,40}",
        tag in ".{0,40}",
        endpoint in ".{0,40}",
        iface in "[a-z0-9\"' -]{0,20}",
    ) {
        let mut calc = Calculator::new(LOCAL);
        let profile_json = serde_json::to_string(&profile).unwrap();
        let tag_json = serde_json::to_string(&tag).unwrap();
        let iface_json = serde_json::to_string(&iface).unwrap();
        let updates = vec![
            (format!("/calico/v1/policy/profile/{profile}/tags"), format!("[{tag_json}]")),
            (
                format!("/calico/v1/policy/profile/{profile}/rules"),
                format!(r#"{{"inbound_rules":[{{"src_tag":{tag_json}}}],"outbound_rules":[{{"dst_tag":{tag_json}}}]}}"#),
            ),
            (
                format!("/calico/v1/host/{LOCAL}/workload/docker/w/endpoint/{endpoint}"),
                format!(r#"{{"state":"active","name":{iface_json},"mac":"ee:ee:ee:ee:ee:ee","profile_ids":[{profile_json}],"ipv4_nets":["192.168.0.1/32"]}}"#),
            ),
        ];
        calc.apply_batch(updates.into_iter().map(|(k, v)| (k, Some(v.into_bytes()))));
        let state = calc.state();
        for name in state.profiles.keys() {
            prop_assert!(validate_name("profile", name).is_ok(), "{name:?} reached the state");
        }
        for (id, ep) in state.endpoints.iter() {
            prop_assert!(id.validate().is_ok(), "{id:?} reached the state");
            prop_assert!(ep.validate().is_ok(), "{ep:?} reached the state");
        }
        let desired = calc.desired();
        for set in desired.ipsets.keys() {
            prop_assert!(set.len() <= MAX_IPSET_LEN, "{set}");
        }
        for (id, table) in &desired.tables {
            let text = render_table(*id, table);
            let ours: BTreeSet<&str> = table.chains.keys().map(String::as_str).collect();
            for chain in &ours {
                prop_assert!(chain.len() <= MAX_CHAIN_LEN, "{chain}");
            }
            for line in text.lines() {
                check_line(line, &ours, table.hooks.keys().map(String::as_str).collect(), &desired.ipsets)?;
            }
        }
    }
}

fn check_line(
    line: &str,
    ours: &BTreeSet<&str>,
    builtins: BTreeSet<&str>,
    sets: &BTreeMap<String, calico_core::desired::IpSet>,
) -> Result<(), TestCaseError> {
    if line == "COMMIT" || line.starts_with('*') {
        return Ok(());
    }
    if let Some(decl) = line.strip_prefix(':') {
        let name = decl.split(' ').next().unwrap_or_default();
        prop_assert!(
            ours.contains(name) || builtins.contains(name),
            "declared {name:?}"
        );
        return Ok(());
    }
    let rest = line
        .strip_prefix("-A ")
        .ok_or_else(|| TestCaseError::fail(format!("bad line {line:?}")))?;
    let (chain, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    prop_assert!(
        ours.contains(chain) || builtins.contains(chain),
        "rule in {chain:?}"
    );
    // Exactly one quoted section: the comment, made of safe characters only.
    prop_assert_eq!(line.matches('"').count(), 2, "quotes in {}", line);
    let (_, after) = rest
        .split_once("-m comment --comment \"cali:")
        .ok_or_else(|| TestCaseError::fail(format!("no comment in {line:?}")))?;
    let (comment, tail) = after.split_once('"').unwrap_or_default();
    prop_assert!(
        comment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.:/,()-".contains(c)),
        "comment {comment:?}"
    );
    let words: Vec<&str> = tail.split(' ').collect();
    for pair in words.windows(2) {
        if pair[0] == "--match-set" {
            prop_assert!(sets.contains_key(pair[1]), "set {} in {line:?}", pair[1]);
        }
    }
    let target = words
        .iter()
        .rposition(|w| *w == "-j" || *w == "-g")
        .map(|i| words[i + 1])
        .unwrap_or_default();
    let fixed = ["ACCEPT", "DROP", "RETURN", "MARK", "MASQUERADE"];
    prop_assert!(
        fixed.contains(&target) || ours.contains(target),
        "target {target:?} in {line:?}"
    );
    Ok(())
}
