//! `calicoctl what-if` on the simulator: the shipped scenario lists exactly the flows a
//! change flips, with the deciding rule; the shortcut (only flows with an endpoint the
//! agents' changes touch) finds the same changes as walking the full matrix, on random
//! clusters and random proposed commands; bad requests fail naming what is wrong.

use std::sync::Arc;

use calico_backends::MemStore;
use calico_cli::ctl::whatif::{FailOn, WhatIfOutput, WhatIfRequest};
use calico_sim::gen::{self, ClusterSpec, TAG_POOL};
use calico_sim::scenario::{self, Runner, ScenarioTarget};
use calico_sim::whatif::{self, Scope, WhatIfError};
use calico_sim::{ops, World};
use proptest::prelude::*;

const SCENARIO: &str = include_str!("../scenarios/what-if.scenario");

/// Runs the what-if scenario and returns the detail of every line, by line number.
async fn scenario_details() -> Vec<(usize, String)> {
    let lines = scenario::parse(SCENARIO).unwrap();
    let mut runner = Runner::new(Arc::new(MemStore::new()));
    let mut seen = Vec::new();
    runner
        .run(&lines, |r| seen.push((r.line, r.detail.clone())))
        .await
        .unwrap();
    seen
}

fn detail_of<'a>(details: &'a [(usize, String)], needle: &str) -> &'a str {
    let line = SCENARIO
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line {needle:?}"))
        + 1;
    &details.iter().find(|(n, _)| *n == line).unwrap().1
}

/// The `a -> b proto: before -> after` lines of a report.
fn flow_lines(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| l.contains(": allow -> ") || l.contains(": deny -> "))
        .collect()
}

#[tokio::test]
async fn the_scenario_lists_the_icmp_flows_of_the_members_with_the_new_rule() {
    let details = scenario_details().await;
    let deny_icmp = detail_of(&details, "--fail-on=gained -- profile PROF_A_B rule add");
    assert_eq!(
        flow_lines(deny_icmp),
        [
            "workload_A -> workload_B icmp: allow -> deny",
            "workload_B -> workload_A icmp: allow -> deny"
        ],
        "{deny_icmp}"
    );
    // The reason is the new rule: first in the profile's inbound chain, dropping ICMP.
    assert_eq!(
        deny_icmp
            .matches("DROP by rule 2 of cali-pri-PROF_A_B: -A cali-pri-PROF_A_B -p icmp")
            .count(),
        2,
        "{deny_icmp}"
    );
    assert!(!deny_icmp.contains("tcp"), "no TCP flow: {deny_icmp}");
    assert!(
        deny_icmp.contains(
            "2 flows evaluated (2 of 2 endpoints affected), 2 newly denied, 0 newly allowed"
        ),
        "{deny_icmp}"
    );

    let remove = detail_of(&details, "container workload_B profile remove");
    assert_eq!(
        flow_lines(remove),
        [
            "workload_A -> workload_B icmp: allow -> deny",
            "workload_B -> workload_A icmp: allow -> deny"
        ],
        "{remove}"
    );
    assert!(remove.contains("default drop"), "{remove}");
}

/// The cluster of `spec` (its later ops ignored), as a snapshot of its datastore.
async fn snapshot(spec: &ClusterSpec) -> Vec<(String, String)> {
    let mut world = World::with_mem_store();
    ops::build_cluster(&mut world, spec).await.unwrap();
    let (kvs, _) = world.store().list("/calico/").await.unwrap();
    kvs.into_iter()
        .map(|kv| (kv.key, String::from_utf8(kv.value).unwrap()))
        .collect()
}

fn request(snapshot: Vec<(String, String)>, hostname: &str, command: &str) -> WhatIfRequest {
    request_with_input(snapshot, hostname, command, "")
}

fn request_with_input(
    snapshot: Vec<(String, String)>,
    hostname: &str,
    command: &str,
    stdin: &str,
) -> WhatIfRequest {
    WhatIfRequest {
        hostname: hostname.to_string(),
        snapshot,
        command: shlex::split(command).unwrap(),
        stdin: stdin.to_string(),
        probes: vec!["tcp/80".into()],
        output: WhatIfOutput::Text,
        svg: None,
        fail_on: None,
    }
}

/// A selector policy as `apply -f` reads it: named `name`, applying to `selector`, with one
/// inbound rule (`action`, optionally only ICMP or TCP 80, optionally only from endpoints
/// matching `from`) and one outbound allow or deny.
fn policy_yaml(
    name: &str,
    selector: &str,
    (action, protocol, from): (&str, Option<&str>, Option<&str>),
    egress: &str,
) -> String {
    let mut rule = format!("  - action: {action}\n");
    match protocol {
        Some("tcp") => rule.push_str("    protocol: tcp\n    destination:\n      ports: [80]\n"),
        Some(p) => rule.push_str(&format!("    protocol: {p}\n")),
        None => {}
    }
    if let Some(from) = from {
        rule.push_str(&format!("    source:\n      selector: \"{from}\"\n"));
    }
    format!(
        "apiVersion: v1\nkind: policy\nmetadata:\n  name: {name}\nspec:\n  \
         selector: \"{selector}\"\n  ingress:\n{rule}  egress:\n  - action: {egress}\n"
    )
}

/// Host endpoint eth0 of `host` as `apply -f` reads it, with `profile` and, when `edge`,
/// label role=edge (which a policy may select).
fn host_endpoint_yaml(host: &str, profile: Option<&str>, edge: bool) -> String {
    let labels = if edge {
        "  labels:\n    role: edge\n"
    } else {
        ""
    };
    let profiles = profile.map_or(String::new(), |p| format!("  profiles: [{p}]\n"));
    format!(
        "apiVersion: v1\nkind: hostEndpoint\nmetadata:\n  name: eth0\n  node: {host}\n\
         {labels}spec:\n  interfaceName: eth0\n{profiles}"
    )
}

/// A proposed calicoctl command, the host it runs on and its standard input, for a cluster
/// of `spec`: a profile, membership or label change, or a selector policy from a resource file.
fn proposal(spec: &ClusterSpec) -> impl Strategy<Value = (String, String, String)> {
    let plain = plain_proposal(spec).prop_map(|(host, command)| (host, command, String::new()));
    let names: Vec<String> = spec
        .policies
        .iter()
        .map(|p| p.name.clone())
        .chain(["pol-new".to_string()])
        .collect();
    let selectors = gen::SELECTOR_POOL.to_vec();
    let on_policy = (
        proptest::sample::select(names),
        proptest::sample::select(selectors.clone()),
        (
            proptest::sample::select(vec!["allow", "deny"]),
            proptest::option::of(proptest::sample::select(vec!["icmp", "tcp"])),
            proptest::option::of(proptest::sample::select(selectors)),
        ),
        proptest::sample::select(vec!["allow", "deny"]),
    )
        .prop_map(|(name, selector, ingress, egress)| {
            (
                "host1".to_string(),
                "apply -f -".to_string(),
                policy_yaml(&name, selector, ingress, egress),
            )
        });
    let workloads: Vec<(String, String)> = spec
        .workloads
        .iter()
        .map(|w| (w.name.clone(), gen::host_name(w.host)))
        .collect();
    let on_labels = (
        proptest::sample::select(workloads),
        proptest::sample::select(vec![
            "label add role=db",
            "label add role=web",
            "label add env=prod",
            "label remove role",
            "label remove env",
        ]),
    )
        .prop_map(|((w, host), op)| (host, format!("container {w} {op}"), String::new()));
    let profiles: Vec<String> = spec.profiles.iter().map(|p| p.name.clone()).collect();
    let on_host = (
        1..=spec.hosts,
        proptest::option::of(proptest::sample::select(profiles)),
        any::<bool>(),
    )
        .prop_map(|(host, profile, edge)| {
            let host = gen::host_name(host - 1);
            (
                host.clone(),
                "apply -f -".to_string(),
                host_endpoint_yaml(&host, profile.as_deref(), edge),
            )
        });
    prop_oneof![3 => plain, 1 => on_policy, 1 => on_labels, 1 => on_host]
}

/// A proposed calicoctl command on a profile or a workload's profiles, and its host.
fn plain_proposal(spec: &ClusterSpec) -> impl Strategy<Value = (String, String)> {
    let workloads: Vec<(String, String)> = spec
        .workloads
        .iter()
        .map(|w| (w.name.clone(), gen::host_name(w.host)))
        .collect();
    let profiles: Vec<String> = spec.profiles.iter().map(|p| p.name.clone()).collect();
    const RULES: &[&str] = &[
        "deny icmp",
        "allow icmp",
        "deny tcp to ports 80",
        "allow tcp to ports 80",
        "deny",
        "allow from tag web",
    ];
    let on_workload = (
        proptest::sample::select(workloads),
        proptest::sample::subsequence(profiles.clone(), 0..=profiles.len()),
        0usize..3,
    )
        .prop_map(|((w, host), ps, kind)| match kind {
            0 => (host, format!("container {w} profile set {}", ps.join(" "))),
            1 => (host, format!("container remove {w}")),
            _ => (host, format!("container {w} profile append nosuch")),
        });
    let on_profile = (
        proptest::sample::select(profiles),
        proptest::sample::select(RULES),
        proptest::sample::select(TAG_POOL),
        any::<bool>(),
        0usize..2,
    )
        .prop_map(|(p, rule, tag, inbound, kind)| {
            let dir = if inbound { "inbound" } else { "outbound" };
            match kind {
                0 => (
                    "host1".to_string(),
                    format!("profile {p} rule add {dir} --at=1 {rule}"),
                ),
                _ => ("host1".to_string(), format!("profile {p} tag add {tag}")),
            }
        });
    prop_oneof![on_workload, on_profile]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn the_shortcut_finds_what_the_full_matrix_finds(
        (spec, (host, command, stdin)) in gen::cluster().prop_flat_map(|spec| {
            let proposal = proposal(&spec);
            (Just(spec), proposal)
        })
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let snapshot = snapshot(&spec).await;
            let req = request_with_input(snapshot, &host, &command, &stdin);
            let full = whatif::evaluate(&req, Scope::Full).await;
            let short = whatif::evaluate(&req, Scope::Affected).await;
            match (full, short) {
                (Ok(full), Ok(short)) => {
                    prop_assert_eq!(&short.changes, &full.changes, "{}\n{}", command, stdin);
                    prop_assert!(short.evaluated <= full.evaluated);
                }
                (Err(WhatIfError::Command { .. }), Err(WhatIfError::Command { .. })) => {}
                (full, short) => prop_assert!(false, "{command}: {full:?} vs {short:?}"),
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn the_shortcut_skips_the_bystanders_flows() {
    // Three hosts, a pair sharing a profile and two bystanders with none: a rule on the
    // pair's profile walks only flows touching the pair.
    let spec = ClusterSpec {
        hosts: 3,
        workloads: ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, name)| gen::WorkloadSpec {
                name: name.to_string(),
                host: i % 3,
                addr: format!("192.168.0.{}", i + 1).parse().unwrap(),
                profiles: if i < 2 { vec!["P".into()] } else { vec![] },
                labels: Default::default(),
            })
            .collect(),
        profiles: vec![gen::ProfileSpec {
            name: "P".into(),
            tags: vec!["P".into()],
            rules: calico_core::model::Rules::default_for("P"),
            labels: None,
        }],
        policies: vec![],
        ops: vec![],
    };
    let req = request(
        snapshot(&spec).await,
        "host1",
        "profile P rule add inbound --at=1 deny icmp",
    );
    let full = whatif::evaluate(&req, Scope::Full).await.unwrap();
    let short = whatif::evaluate(&req, Scope::Affected).await.unwrap();
    assert_eq!(short.changes, full.changes);
    assert_eq!(short.newly_denied(), 2, "{}", short.text());
    assert_eq!((full.affected, short.affected), (4, 2));
    assert!(
        short.evaluated < full.evaluated,
        "{} vs {}",
        short.evaluated,
        full.evaluated
    );
    assert!(short.gate(Some(FailOn::Lost)) && !short.gate(Some(FailOn::Gained)));
    let json: serde_json::Value = serde_json::from_str(&short.json()).unwrap();
    assert_eq!(json["newly_denied"], 2);
    assert_eq!(json["changes"][0]["probe"], "icmp");
    assert_eq!(json["changes"][0]["before"], "allow");
}

#[tokio::test]
async fn a_policy_change_walks_only_the_flows_into_the_endpoints_it_selects() {
    // Four workloads in one open profile; policy db-guard selects the one labelled db and
    // allows everything. Proposing its inbound rules as just "deny icmp" rewrites only its
    // inbound chain, so only flows *to* the db workload are walked; they all flip (pings by
    // the rule, the rest because a policy governing inbound traffic accepted none of it).
    let spec = ClusterSpec {
        hosts: 3,
        workloads: ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, name)| gen::WorkloadSpec {
                name: name.to_string(),
                host: i % 3,
                addr: format!("192.168.0.{}", i + 1).parse().unwrap(),
                profiles: vec!["P".into()],
                labels: if i == 0 {
                    [("role".to_string(), "db".to_string())].into()
                } else {
                    Default::default()
                },
            })
            .collect(),
        profiles: vec![gen::ProfileSpec {
            name: "P".into(),
            tags: vec!["P".into()],
            rules: calico_core::model::Rules::default_for("P"),
            labels: None,
        }],
        policies: vec![gen::PolicySpec {
            name: "db-guard".into(),
            policy: calico_core::model::Policy {
                order: None,
                inbound_rules: vec![calico_core::model::Rule::default()],
                outbound_rules: vec![calico_core::model::Rule::default()],
                selector: calico_core::selector::Selector::parse("role == 'db'").unwrap(),
                annotations: Default::default(),
                types: vec![],
            },
        }],
        ops: vec![],
    };
    let yaml = policy_yaml(
        "db-guard",
        "role == 'db'",
        ("deny", Some("icmp"), None),
        "allow",
    );
    let req = request_with_input(snapshot(&spec).await, "host1", "apply -f -", &yaml);
    let full = whatif::evaluate(&req, Scope::Full).await.unwrap();
    let short = whatif::evaluate(&req, Scope::Affected).await.unwrap();
    assert_eq!(short.changes, full.changes);
    assert_eq!(
        flow_lines(&short.text()),
        [
            "b -> a tcp/80: allow -> deny",
            "b -> a icmp: allow -> deny",
            "c -> a tcp/80: allow -> deny",
            "c -> a icmp: allow -> deny",
            "d -> a tcp/80: allow -> deny",
            "d -> a icmp: allow -> deny"
        ],
        "{}",
        short.text()
    );
    assert!(
        short.text().contains("policy db-guard rule 1"),
        "{}",
        short.text()
    );
    assert_eq!(short.affected, 1, "{}", short.text());
    // b, c and d to a, each with echo and tcp/80: none of a's outbound flows.
    assert_eq!(short.evaluated, 3 * 2, "{}", short.text());
}

#[tokio::test]
async fn a_new_host_endpoint_makes_its_host_an_end_of_flows() {
    // Workloads a (host1) and b (host2) in one open profile. A host endpoint on host1's eth0
    // with no profile or policy closes host1 to what arrives on eth0 (failsafe ports
    // aside): b's pings to host1 are lost; a is local and reaches host1 without eth0.
    let spec = ClusterSpec {
        hosts: 2,
        workloads: ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, name)| gen::WorkloadSpec {
                name: name.to_string(),
                host: i,
                addr: format!("192.168.0.{}", i + 1).parse().unwrap(),
                profiles: vec!["P".into()],
                labels: Default::default(),
            })
            .collect(),
        profiles: vec![gen::ProfileSpec {
            name: "P".into(),
            tags: vec!["P".into()],
            rules: calico_core::model::Rules::default_for("P"),
            labels: None,
        }],
        policies: vec![],
        ops: vec![],
    };
    let yaml = host_endpoint_yaml("host1", None, false);
    let req = request_with_input(snapshot(&spec).await, "host1", "apply -f -", &yaml);
    let full = whatif::evaluate(&req, Scope::Full).await.unwrap();
    let short = whatif::evaluate(&req, Scope::Affected).await.unwrap();
    assert_eq!(short.changes, full.changes);
    let text = short.text();
    let lines = flow_lines(&text);
    assert!(lines.contains(&"b -> host1 icmp: allow -> deny"), "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" -> host1 ") && l.ends_with("allow -> deny")),
        "{text}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("a -> host1")), "{text}");
    // Three ends: a, b and host1.
    assert_eq!(full.endpoints, 3, "{text}");
}

#[tokio::test]
async fn the_full_matrix_walked_on_every_core_agrees_with_the_shortcut_walked_on_one() {
    // 40 workloads in four profiles on four hosts: the full matrix (3,120 flows) is split
    // across the cores, the shortcut's 780 flows into PROF_0's members are walked in order.
    let profiles: Vec<String> = (0..4).map(|p| format!("PROF_{p}")).collect();
    let spec = ClusterSpec {
        hosts: 4,
        workloads: (0..40)
            .map(|i| gen::WorkloadSpec {
                name: format!("w{i}"),
                host: i % 4,
                addr: format!("192.168.0.{}", i + 1).parse().unwrap(),
                profiles: vec![profiles[i / 10].clone()],
                labels: Default::default(),
            })
            .collect(),
        profiles: profiles
            .iter()
            .map(|p| gen::ProfileSpec {
                name: p.clone(),
                tags: vec![p.clone()],
                rules: calico_core::model::Rules::default_for(p),
                labels: None,
            })
            .collect(),
        policies: vec![],
        ops: vec![],
    };
    let req = request(
        snapshot(&spec).await,
        "host1",
        "profile PROF_0 rule add inbound --at=1 deny icmp",
    );
    let full = whatif::evaluate(&req, Scope::Full).await.unwrap();
    let short = whatif::evaluate(&req, Scope::Affected).await.unwrap();
    assert_eq!((full.evaluated, short.evaluated), (3120, 780));
    assert_eq!(short.changes, full.changes);
    // Each of PROF_0's ten members loses the pings of the other nine.
    assert_eq!(short.newly_denied(), 90, "{}", short.text());
}

#[tokio::test]
async fn bad_requests_name_what_is_wrong() {
    let spec = ClusterSpec {
        hosts: 2,
        workloads: vec![],
        profiles: vec![],
        policies: vec![],
        ops: vec![],
    };
    let snap = snapshot(&spec).await;
    let mut req = request(snap.clone(), "host1", "profile add X");
    req.probes = vec!["tcp".into()];
    let err = whatif::evaluate(&req, Scope::Affected).await.unwrap_err();
    assert!(err.to_string().contains("invalid probe \"tcp\""), "{err}");
    let req = request(snap, "host1", "profile NOPE rule add inbound deny");
    let err = whatif::evaluate(&req, Scope::Affected).await.unwrap_err();
    assert!(err.to_string().contains("profile NOPE not found"), "{err}");
}

#[tokio::test]
async fn the_svg_draws_both_matrices_with_the_changed_cells_marked() {
    let lines = scenario::parse(SCENARIO).unwrap();
    // The seed up to its first expect, then a what-if drawing the matrix.
    let end = lines
        .iter()
        .position(|l| matches!(l.step, scenario::Step::Expect { .. }))
        .unwrap();
    let mut runner = Runner::new(Arc::new(MemStore::new()));
    runner.run(&lines[..end], |_| {}).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.svg");
    let line = format!(
        "host1$ calicoctl what-if -o svg={} -- profile PROF_A_B rule add inbound --at=1 deny icmp",
        file.display()
    );
    let detail = runner
        .step(&scenario::parse(&line).unwrap()[0])
        .await
        .unwrap();
    assert!(detail.contains("matrix drawn to"), "{detail}");
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for text in ["before", "after", "workload_A", "workload_B"] {
        assert!(svg.contains(text), "{text} missing from the picture");
    }
    // Two changed cells (A -> B, B -> A), each outlined in red.
    assert_eq!(svg.matches(r##"stroke="#FF0000""##).count(), 4, "{svg}");
}
