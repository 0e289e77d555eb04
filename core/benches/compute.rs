//! Benchmark of the policy compiler: a full `compute` for 10,000 endpoints on 100 hosts
//! (100 of them local), 1,000 profiles × 5 rules with tags shared across hosts; then one
//! endpoint's profile change through the incremental `Calculator`, against a full recompute;
//! then the full compute at 1,000 / 10,000 / 100,000 endpoints (100 per host, so one host's
//! 100 local endpoints and a growing remote cluster), with the time per endpoint at each size
//! to show whether it grows linearly; then selector policies: 1,000 policies over 10,000
//! labelled endpoints (100 local), a full compute and one label change through the
//! calculator.
//!
//! `cargo bench -p calico-core --bench compute` (`-- policies`: only the policy part)

use std::time::{Duration, Instant};

use calico_core::calc::Calculator;
use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::render::iptables::render_table;

const ENDPOINTS: usize = 10_000;
/// Endpoints per host: the host count grows with the cluster.
const PER_HOST: usize = 100;
/// Cluster sizes of the scaling curve.
const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const PROFILES: usize = 1_000;
const TAGS: usize = 200;
const LOCAL: &str = "host0";

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn endpoint(i: usize, profiles: &[usize], hosts: usize) -> (String, Vec<u8>) {
    let host = i % hosts;
    let key = format!("/calico/v1/host/host{host}/workload/docker/w{i}/endpoint/e{i}");
    let ids: Vec<String> = profiles.iter().map(|p| format!("\"prof{p}\"")).collect();
    let value = format!(
        r#"{{"state":"active","name":"cali{i:011}","mac":"ee:ee:ee:ee:ee:ee","profile_ids":[{}],"ipv4_nets":["10.{}.{}.{}/32"]}}"#,
        ids.join(","),
        i >> 16,
        (i >> 8) & 255,
        i & 255
    );
    (key, value.into_bytes())
}

fn updates(endpoints: usize) -> Vec<(String, Vec<u8>)> {
    let hosts = endpoints / PER_HOST;
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    for h in 0..hosts {
        out.push((
            format!("/calico/bgp/v1/host/host{h}/ip_addr_v4"),
            format!("172.16.{}.{}", h / 250, h % 250 + 1).into_bytes(),
        ));
    }
    out.push((
        "/calico/v1/ipam/v4/pool/10.0.0.0-8".into(),
        br#"{"cidr":"10.0.0.0/8"}"#.to_vec(),
    ));
    for p in 0..PROFILES {
        let tag = p % TAGS;
        out.push((
            format!("/calico/v1/policy/profile/prof{p}/tags"),
            format!("[\"tag{tag}\"]").into_bytes(),
        ));
        let rules: Vec<String> = (0..5)
            .map(|r| match r {
                0 => format!(r#"{{"src_tag":"tag{}"}}"#, rng.next(TAGS)),
                1 => format!(
                    r#"{{"protocol":"tcp","dst_ports":[80,443,{}],"src_tag":"tag{}"}}"#,
                    1000 + rng.next(1000),
                    rng.next(TAGS)
                ),
                2 => r#"{"action":"deny","src_net":"10.99.0.0/16"}"#.to_string(),
                3 => r#"{"protocol":"icmp","icmp_type":8}"#.to_string(),
                _ => format!(
                    r#"{{"protocol":"udp","dst_ports":["{}:{}"]}}"#,
                    2000 + r,
                    3000 + r
                ),
            })
            .collect();
        out.push((
            format!("/calico/v1/policy/profile/prof{p}/rules"),
            format!(
                r#"{{"inbound_rules":[{}],"outbound_rules":[{{}}]}}"#,
                rules.join(",")
            )
            .into_bytes(),
        ));
    }
    for i in 0..endpoints {
        let profiles = [rng.next(PROFILES), rng.next(PROFILES)];
        out.push(endpoint(i, &profiles, hosts));
    }
    out
}

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let start = Instant::now();
    let mut last = f();
    for _ in 1..runs {
        last = f();
    }
    (start.elapsed() / runs, last)
}

fn state_of(updates: &[(String, Vec<u8>)]) -> ClusterState {
    let mut state = ClusterState::default();
    for (k, v) in updates {
        state.apply(k, Some(v));
    }
    state
}

/// Full compute at each of [`SIZES`]: `compute size: <n> endpoints: <time> (<time> per
/// endpoint)`.
fn scaling() {
    for n in SIZES {
        let state = state_of(&updates(n));
        // Fewer rounds at the largest size: each is a tenth of a second or more.
        let runs = if n >= 100_000 { 3 } else { 5 };
        let (took, desired) = time(runs, || compute(&state, LOCAL));
        let members: usize = desired.ipsets.values().map(|s| s.members.len()).sum();
        let per_endpoint = took / u32::try_from(n).unwrap_or(u32::MAX);
        println!(
            "compute size: {n} endpoints: {took:?} ({per_endpoint:?} per endpoint; {} local, {members} ipset members)",
            desired.routes.len()
        );
    }
}

/// Selector policies at scale: `POLICY_COUNT` policies, each selecting one of 200 apps and
/// allowing its ingress from a tier of some other apps, over [`ENDPOINTS`] endpoints labelled
/// with an app and a tier (profiles as in [`updates`]).
const POLICY_COUNT: usize = 1_000;
const APPS: usize = 200;
const TIERS: [&str; 3] = ["front", "back", "db"];

fn labelled(i: usize, hosts: usize, app: usize) -> (String, Vec<u8>) {
    let (key, value) = endpoint(i, &[i % PROFILES], hosts);
    let mut json: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
    json["labels"] = serde_json::json!({"app": format!("app{app}"), "tier": TIERS[i % 3]});
    (key, json.to_string().into_bytes())
}

fn policy_updates() -> Vec<(String, Vec<u8>)> {
    let hosts = ENDPOINTS / PER_HOST;
    let mut rng = Lcg(11);
    let mut out: Vec<(String, Vec<u8>)> = updates(0);
    out.extend(
        updates(ENDPOINTS)
            .into_iter()
            .filter(|(k, _)| !k.contains("/workload/")),
    );
    for i in 0..ENDPOINTS {
        out.push(labelled(i, hosts, i % APPS));
    }
    for p in 0..POLICY_COUNT {
        let (a, b) = (rng.next(APPS), rng.next(APPS));
        let tier = TIERS[rng.next(3)];
        let policy = serde_json::json!({
            "order": p % 10,
            "selector": format!("app == 'app{}'", p % APPS),
            "inbound_rules": [
                {"action": "allow", "protocol": "tcp", "dst_ports": [80 + p % 5],
                 "src_selector": format!("tier == '{tier}' && app in {{'app{a}', 'app{b}'}}")},
                {"action": "deny", "!src_selector": "has(tier)"},
            ],
            "outbound_rules": [{"action": "allow", "dst_selector": format!("app == 'app{b}'")}],
        });
        out.push((
            format!("/calico/v1/policy/tier/default/policy/pol{p}"),
            policy.to_string().into_bytes(),
        ));
    }
    out
}

/// `policy compute: ...` and `incremental label change with policies: ...`.
fn policies() {
    let updates = policy_updates();
    let state = state_of(&updates);
    let (full, desired) = time(3, || compute(&state, LOCAL));
    let chains: usize = desired.tables.values().map(|t| t.chains.len()).sum();
    let members: usize = desired.ipsets.values().map(|s| s.members.len()).sum();
    println!(
        "policy compute: {POLICY_COUNT} policies over {} endpoints: {full:?} ({chains} chains, {} ipsets, {members} members)",
        state.endpoints.len(),
        desired.ipsets.len()
    );
    let mut calc = Calculator::new(LOCAL);
    calc.apply_batch(updates.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
    assert!(
        calc.desired() == &desired,
        "calculator disagrees with compute"
    );
    // A local endpoint moves between two apps: it leaves some policies and selector sets
    // and joins others.
    let hosts = ENDPOINTS / PER_HOST;
    let runs = 20u32;
    let mut total = Duration::ZERO;
    let mut delta_len = 0;
    for n in 0..runs {
        let (key, value) = labelled(0, hosts, if n % 2 == 0 { 1 } else { 0 });
        let start = Instant::now();
        let delta = calc.apply(&key, Some(&value));
        total += start.elapsed();
        delta_len = delta_len.max(delta.len());
    }
    let incremental = total / runs;
    println!(
        "incremental label change with {POLICY_COUNT} policies: {incremental:?} per update (largest delta: {delta_len} items; full compute {full:?})"
    );
    assert!(
        calc.desired() == &compute(calc.state(), LOCAL),
        "calculator drifted"
    );
}

fn main() {
    if std::env::args().any(|a| a == "policies") {
        policies();
        return;
    }
    let updates = updates(ENDPOINTS);
    let state = state_of(&updates);
    let (full, desired) = time(5, || compute(&state, LOCAL));
    let chains: usize = desired.tables.values().map(|t| t.chains.len()).sum();
    let rules: usize = desired
        .tables
        .values()
        .flat_map(|t| t.chains.values())
        .map(|c| c.rules.len())
        .sum();
    let members: usize = desired.ipsets.values().map(|s| s.members.len()).sum();
    println!(
        "full compute: {full:?} ({} endpoints, {} local; {chains} chains, {rules} rules, {} ipsets, {members} members)",
        state.endpoints.len(),
        desired.routes.len(),
        desired.ipsets.len()
    );
    let (render, bytes) = time(5, || {
        desired
            .tables
            .iter()
            .map(|(id, t)| render_table(*id, t).len())
            .sum::<usize>()
    });
    println!("render all tables: {render:?} ({bytes} bytes)");

    let mut calc = Calculator::new(LOCAL);
    let start = Instant::now();
    calc.apply_batch(updates.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
    println!("calculator initial load (one batch): {:?}", start.elapsed());
    assert!(
        calc.desired() == &desired,
        "calculator disagrees with compute"
    );

    // One local endpoint switches profiles, back and forth.
    let mut total = Duration::ZERO;
    let mut delta_len = 0;
    let runs = 50u32;
    for n in 0..runs {
        let profiles = if n % 2 == 0 { [1usize, 2] } else { [3, 4] };
        let (key, value) = endpoint(0, &profiles, ENDPOINTS / PER_HOST);
        let start = Instant::now();
        let delta = calc.apply(&key, Some(&value));
        total += start.elapsed();
        delta_len = delta_len.max(delta.len());
    }
    let incremental = total / runs;
    println!(
        "incremental profile change: {incremental:?} per update (largest delta: {delta_len} items)"
    );
    println!(
        "speed-up vs full compute: {:.0}x",
        full.as_secs_f64() / incremental.as_secs_f64().max(1e-9)
    );
    assert!(
        calc.desired() == &compute(calc.state(), LOCAL),
        "calculator drifted"
    );
    scaling();
    policies();
}
