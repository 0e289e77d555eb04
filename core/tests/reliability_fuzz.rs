//! Fuzzing (proptest, many cases) of every datastore decoder and the iptables-save parser:
//! no input panics them; and whatever a profile's name and rule fields hold, they change no
//! rule but their own profile's in the rendered iptables text, which parses back to exactly
//! the rules the model holds (nothing injected). RELIABILITY.md reports the case counts.

use std::collections::BTreeMap;

use calico_core::cluster::ClusterState;
use calico_core::codec::decode;
use calico_core::compute::compute;
use calico_core::compute::names::{profile_inbound_chain, profile_outbound_chain};
use calico_core::keys::Key;
use calico_core::parse::iptables::{parse_restore, parse_rule_args};
use calico_core::render::iptables::render_table;
use proptest::prelude::*;
use serde_json::{json, Value};

const DECODER_CASES: u32 = 3000;
const ISOLATION_CASES: u32 = 1000;
const PARSER_CASES: u32 = 3000;

/// One key of every kind the datastore holds.
const KEYS: &[&str] = &[
    "/calico/v1/Ready",
    "/calico/v1/config/InterfacePrefix",
    "/calico/v1/host/h1/config/DefaultEndpointToHostAction",
    "/calico/v1/host/h1/bird_ip",
    "/calico/v1/host/h1/workload/docker/w/endpoint/e1",
    "/calico/v1/policy/profile/P/rules",
    "/calico/v1/policy/profile/P/tags",
    "/calico/v1/ipam/v4/pool/10.0.0.0-8",
    "/calico/v1/ipam/v6/pool/fd00::-8",
    "/calico/bgp/v1/global/as_num",
    "/calico/bgp/v1/global/node_mesh",
    "/calico/bgp/v1/global/loglevel",
    "/calico/bgp/v1/global/peer_v4/10.0.0.9",
    "/calico/bgp/v1/global/peer_v6/fd00::9",
    "/calico/bgp/v1/host/h1/ip_addr_v4",
    "/calico/bgp/v1/host/h1/ip_addr_v6",
    "/calico/bgp/v1/host/h1/as_num",
    "/calico/bgp/v1/host/h1/loglevel",
    "/calico/bgp/v1/host/h1/peer_v4/10.0.0.8",
    "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26",
    "/calico/ipam/v2/host/h1/ipv4/block/10.0.0.0-26",
    "/calico/ipam/v2/handle/someone",
    "/calico/felix/v1/host/h1/status",
    "/calico/felix/v1/host/h1/last_reported_status",
];

/// Strings a hostile user would try, and arbitrary ones.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "",
            ".",
            "..",
            "a/b",
            "-j ACCEPT",
            "x\" -j ACCEPT \"",
            "x\n-A cali-INPUT -j ACCEPT",
            "tcp",
            "udp",
            "icmp",
            "10.0.0.0/8",
            "::/0",
            "0.0.0.0/0",
            "65536",
            "-1",
            "P",
            "T",
            "\u{0}",
            "\r",
            "💥",
            "cali-INPUT",
            "*filter",
            "COMMIT",
        ])
        .prop_map(str::to_owned),
        ".{0,24}",
        "[a-zA-Z0-9_.:/ \"'-]{0,24}",
    ]
}

/// Any JSON value, leaning on the field names and shapes our records use.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..70_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let field = proptest::sample::select(vec![
            "action",
            "protocol",
            "src_tag",
            "dst_tag",
            "src_net",
            "dst_net",
            "src_ports",
            "dst_ports",
            "icmp_type",
            "icmp_code",
            "ip_version",
            "inbound_rules",
            "outbound_rules",
            "state",
            "name",
            "mac",
            "profile_ids",
            "ipv4_nets",
            "ipv6_nets",
            "cidr",
            "masquerade",
            "ipip",
            "disabled",
            "ip",
            "as_num",
            "enabled",
            "affinity",
            "allocations",
            "unallocated",
            "attributes",
            "block",
            "time",
            "uptime",
        ]);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(field, inner, 0..8).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// Raw bytes: random, JSON, or JSON cut short.
fn raw_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
    ]
}

/// A rule record with hostile values in its fields (some valid, most not).
fn rule_json() -> impl Strategy<Value = Value> {
    let field = |name: &'static str| {
        proptest::option::of(prop_oneof![
            hostile_string().prop_map(Value::from),
            (0u32..70_000).prop_map(Value::from),
            proptest::collection::vec((0u32..70_000).prop_map(Value::from), 0..4)
                .prop_map(Value::from),
        ])
        .prop_map(move |v| (name, v))
    };
    (
        prop_oneof![Just("allow"), Just("deny"), Just("next-tier")],
        field("protocol"),
        field("src_tag"),
        field("dst_tag"),
        field("src_net"),
        field("dst_net"),
        field("dst_ports"),
        field("icmp_type"),
    )
        .prop_map(|(action, a, b, c, d, e, f, g)| {
            let mut rule = serde_json::Map::new();
            rule.insert("action".into(), json!(action));
            for (name, value) in [a, b, c, d, e, f, g] {
                if let Some(value) = value {
                    rule.insert(name.into(), value);
                }
            }
            Value::Object(rule)
        })
}

/// The tables of host h1 as iptables-restore text, chain → its rule lines.
fn rendered(state: &ClusterState) -> BTreeMap<String, Vec<String>> {
    let desired = compute(state, "h1");
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, table) in &desired.tables {
        let text = render_table(*id, table);
        // The text parses back to exactly the model's rules: nothing was injected.
        let blocks = parse_restore(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for block in &blocks {
            for parsed in &block.chains {
                let chain = &parsed.chain;
                if let Some(model) = table.chains.get(&chain.name) {
                    assert_eq!(
                        chain.rules.len(),
                        model.rules.len(),
                        "rules of {} in\n{text}",
                        chain.name
                    );
                }
            }
        }
        for line in text.lines().filter(|l| l.starts_with("-A ")) {
            let chain = line[3..].split(' ').next().unwrap_or_default();
            chains
                .entry(format!("{id:?}/{chain}"))
                .or_default()
                .push(line.to_owned());
        }
    }
    chains
}

fn put(state: &mut ClusterState, key: &str, value: &Value) {
    state.apply(key, Some(value.to_string().as_bytes()));
}

/// Host h1 with workload A in profile FIXED, and workload B in profile `name`.
fn cluster(fuzz: Option<(&str, &Value)>) -> ClusterState {
    let mut state = ClusterState::default();
    state.apply("/calico/v1/Ready", Some(b"true"));
    state.apply("/calico/v1/config/InterfacePrefix", Some(b"cali"));
    put(
        &mut state,
        "/calico/v1/policy/profile/FIXED/tags",
        &json!(["FIXED"]),
    );
    put(
        &mut state,
        "/calico/v1/policy/profile/FIXED/rules",
        &json!({"inbound_rules": [{"action": "allow", "src_tag": "FIXED"}, {"action": "allow", "protocol": "tcp", "dst_ports": [80]}],
                "outbound_rules": [{"action": "allow"}]}),
    );
    let endpoint = |iface: &str, ip: &str, profile: &str| {
        json!({"state": "active", "name": iface, "mac": "ee:ee:ee:ee:ee:01",
               "profile_ids": [profile], "ipv4_nets": [ip], "ipv6_nets": []})
    };
    put(
        &mut state,
        "/calico/v1/host/h1/workload/docker/A/endpoint/a",
        &endpoint("caliaaaa", "192.168.0.1/32", "FIXED"),
    );
    if let Some((name, rules)) = fuzz {
        state.apply(
            &format!("/calico/v1/policy/profile/{name}/tags"),
            Some(json!([name]).to_string().as_bytes()),
        );
        state.apply(
            &format!("/calico/v1/policy/profile/{name}/rules"),
            Some(rules.to_string().as_bytes()),
        );
        state.apply(
            "/calico/v1/host/h1/workload/docker/B/endpoint/b",
            Some(
                endpoint("calibbbb", "192.168.0.2/32", name)
                    .to_string()
                    .as_bytes(),
            ),
        );
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(DECODER_CASES))]

    #[test]
    fn no_record_panics_a_decoder(key in proptest::sample::select(KEYS), value in raw_value()) {
        let parsed = Key::parse(key).unwrap();
        let _ = decode(&parsed, &value);
        let mut state = ClusterState::default();
        let _ = state.apply(key, Some(&value));
        let _ = compute(&state, "h1");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(ISOLATION_CASES))]

    #[test]
    fn a_profile_changes_no_rule_but_its_own(
        name in hostile_string(),
        inbound in proptest::collection::vec(rule_json(), 0..4),
        outbound in proptest::collection::vec(rule_json(), 0..4),
    ) {
        let rules = json!({"inbound_rules": inbound, "outbound_rules": outbound});
        let alone = rendered(&cluster(None));
        let with = rendered(&cluster(Some((&name, &rules))));
        // A's and FIXED's chains are exactly as without the fuzzed profile.
        for (chain, lines) in &alone {
            let mine = chain.contains("caliaaaa")
                || chain.ends_with(&profile_inbound_chain("FIXED"))
                || chain.ends_with(&profile_outbound_chain("FIXED"));
            if mine {
                prop_assert_eq!(Some(lines), with.get(chain), "{} changed", chain);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(PARSER_CASES))]

    #[test]
    fn no_text_panics_the_iptables_save_parser(
        base in proptest::sample::select(vec![0usize, 1, 2]),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), ".{0,12}"), 0..6),
        cut in any::<prop::sample::Index>(),
        line in ".{0,80}",
    ) {
        // Real iptables-save text, then hostile edits and a cut anywhere.
        let desired = compute(&cluster(None), "h1");
        let texts: Vec<String> = desired
            .tables
            .iter()
            .map(|(id, t)| render_table(*id, t))
            .collect();
        let mut text = texts[base % texts.len()].clone();
        for (at, insert) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            text.insert_str(pos, &insert);
        }
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let _ = parse_restore(&text[..end]);
        let _ = parse_restore(&text);
        let _ = parse_rule_args(&line);
    }
}
