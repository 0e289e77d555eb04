//! An agent restart in the middle of traffic (the design's "on restart it converges without
//! flushing working rules"): host2's agent is killed while a TCP flow from `a` (host1) to `b`
//! (host2) is open, policy changes while it is down, and the restarted agent's first apply
//! touches only what the change needs. The established flow keeps passing both ways
//! (conntrack), while a new connection meets the new policy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use calico_core::iptables::{IpFamily, Table};
use calico_core::model::EndpointId;
use calico_core::plan::Change;
use calico_dataplane::sim::{Hop, ROOT_NS};
use calico_sim::walk::{Direction, Walk};
use calico_sim::{ops, Probe, Verdict, World};

const PROFILE: &str = "PROF_A_B";
const TABLES: [(IpFamily, Table); 4] = [
    (IpFamily::V4, Table::Filter),
    (IpFamily::V4, Table::Nat),
    (IpFamily::V6, Table::Filter),
    (IpFamily::V6, Table::Nat),
];

/// `a` on host1 and `b` on host2, both in `PROF_A_B` (inbound from the tag, outbound all),
/// settled. Returns the world and `b`'s endpoint.
async fn two_hosts() -> (World, EndpointId) {
    let mut world = World::with_mem_store();
    let store = world.store().clone();
    ops::profile_add(store.as_ref(), PROFILE).await.unwrap();
    let mut ids = Vec::new();
    for (host, ip, workload, addr) in [
        ("host1", [172, 31, 250, 2], "a", [192, 168, 0, 1]),
        ("host2", [172, 31, 250, 3], "b", [192, 168, 0, 2]),
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
        ops::set_profiles(store.as_ref(), &id, &[PROFILE.to_string()])
            .await
            .unwrap();
        ids.push(id);
    }
    world.settle().await.unwrap();
    (world, ids.remove(1))
}

/// Every table of `host` as `iptables-save` prints it, split into chains: table and chain →
/// its declaration and its `-A` lines.
fn saved_chains(world: &World, host: &str) -> BTreeMap<(String, String), Vec<String>> {
    let dataplane = world.host(host).unwrap().dataplane();
    let mut chains: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (family, table) in TABLES {
        let label = format!("{family:?} {}", table.name());
        for line in dataplane.iptables_save(family, table).lines() {
            let chain = match (line.strip_prefix(':'), line.strip_prefix("-A ")) {
                (Some(decl), _) | (_, Some(decl)) => decl.split(' ').next().unwrap_or_default(),
                _ => continue,
            };
            chains
                .entry((label.clone(), chain.to_string()))
                .or_default()
                .push(line.to_string());
        }
    }
    chains
}

/// The chains a report line names (`rewrite chain X in v4 filter`, `delete chain X ...`).
fn chains_named(changes: &[Change]) -> BTreeSet<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::RewriteChain { chain, .. } | Change::CreateChain { chain, .. } => {
                Some(chain.name.clone())
            }
            Change::DeleteChain { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Conntrack states `walk` met on `host` going `direction`.
fn ct_states(walk: &Walk, host: &str, direction: Direction) -> Vec<String> {
    walk.hops()
        .filter(|(h, d, _)| *h == host && *d == direction)
        .filter_map(|(_, _, hop)| match hop {
            Hop::Conntrack { state, .. } => Some(format!("{state:?}")),
            _ => None,
        })
        .collect()
}

/// The netfilter decisions `walk` met on `host` going `direction`, as the trace prints them.
fn forward_decisions(walk: &Walk, host: &str, direction: Direction) -> Vec<String> {
    walk.hops()
        .filter(|(h, d, _)| *h == host && *d == direction)
        .filter(|(_, _, hop)| matches!(hop, Hop::Netfilter(_)))
        .map(|(_, _, hop)| hop.to_string())
        .collect()
}

#[tokio::test]
async fn restart_after_a_policy_change_rewrites_only_what_changed_and_keeps_the_flow() {
    let (mut world, b) = two_hosts().await;
    let flow = world.send("a", "b", Probe::tcp(80)).unwrap();
    assert_eq!(flow.verdict, Verdict::Allow, "{flow}");
    let before = saved_chains(&world, "host2");

    // kill -9 host2's agent; while it is down, b leaves the profile: new a→b connections
    // would be denied.
    world.stop_agent("host2").unwrap();
    world.settle().await.unwrap();
    ops::set_profiles(world.store().as_ref(), &b, &[])
        .await
        .unwrap();
    world.settle().await.unwrap();
    assert_eq!(
        saved_chains(&world, "host2"),
        before,
        "host2's chains changed while its agent was down"
    );

    // The restarted agent's first step: snapshot and first apply.
    world.start_agent("host2").unwrap();
    let first = world.poll_agent("host2").await.unwrap().unwrap();
    assert!(first.resnapshot, "{first:?}");
    let after = saved_chains(&world, "host2");

    // Exactly the chains whose text differs are in the report, and the report names nothing
    // else but ipsets.
    let differing: BTreeSet<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|(_, chain)| chain.clone())
        .collect();
    let named = chains_named(&first.changes);
    assert_eq!(named, differing, "{:#?}", first.changes);
    for change in &first.changes {
        assert!(
            matches!(
                change,
                Change::CreateChain { .. }
                    | Change::RewriteChain { .. }
                    | Change::DeleteChain { .. }
                    | Change::CreateIpSet(_)
                    | Change::UpdateIpSet(_)
                    | Change::DeleteIpSet { .. }
            ),
            "unexpected change {change} in {:#?}",
            first.changes
        );
    }
    // The change is b's policy: its endpoint's two chains are rewritten, the profile's chains
    // (no local endpoint uses it now) and tag sets go; nothing of the host's own chains.
    let iface = world
        .host("host2")
        .unwrap()
        .dataplane()
        .links(ROOT_NS)
        .into_iter()
        .map(|l| l.name)
        .find(|n| n.starts_with("cali"))
        .unwrap();
    let expected: BTreeSet<String> = [
        format!("cali-fw-{iface}"),
        format!("cali-tw-{iface}"),
        format!("cali-pri-{PROFILE}"),
        format!("cali-pro-{PROFILE}"),
    ]
    .into();
    assert_eq!(differing, expected, "{:#?}", first.changes);
    assert_eq!(first.changes.len(), 10, "{:#?}", first.changes);
    for untouched in [
        "cali-FORWARD",
        "cali-INPUT",
        "cali-from-wl-dispatch",
        "FORWARD",
    ] {
        assert!(!differing.contains(untouched), "{differing:?}");
        assert!(
            after.keys().any(|(_, c)| c == untouched),
            "{untouched} missing after the restart"
        );
    }
    // A chain kept across the restart is rewritten in place, never deleted and re-created
    // (which would leave a moment without it).
    for chain in &differing {
        let kept = before.keys().any(|(_, c)| c == chain) && after.keys().any(|(_, c)| c == chain);
        if kept {
            assert!(
                first
                    .changes
                    .iter()
                    .all(|c| !matches!(c, Change::DeleteChain { name, .. } if name == chain)),
                "{chain}: {:#?}",
                first.changes
            );
        }
    }
    // Every chain that went is one the new desired state no longer has.
    let desired = world
        .host("host2")
        .unwrap()
        .agent()
        .and_then(|agent| agent.desired())
        .cloned()
        .unwrap();
    for (table, chain) in before.keys().filter(|key| !after.contains_key(*key)) {
        assert!(
            desired
                .tables
                .values()
                .all(|t| !t.chains.contains_key(chain)),
            "{chain} of {table} was deleted but is still wanted"
        );
    }

    world.settle().await.unwrap();

    // The open connection keeps flowing both ways: conntrack knows it on both hosts.
    let more = world.send_packet(flow.request).unwrap();
    assert_eq!(more.verdict, Verdict::Allow, "{more}");
    assert_eq!(
        ct_states(&more, "host2", Direction::Request),
        vec!["Established"],
        "{more}"
    );
    assert!(
        forward_decisions(&more, "host2", Direction::Request)
            .iter()
            .any(|d| d.contains("RETURN at rule")
                && d.contains("-A cali-FORWARD -o cali+")
                && d.contains("--ctstate RELATED,ESTABLISHED -j RETURN")),
        "{more}"
    );
    let back = world.send_packet(flow.request.reply()).unwrap();
    assert_eq!(back.verdict, Verdict::Allow, "{back}");
    assert_eq!(
        ct_states(&back, "host2", Direction::Request),
        vec!["Established"],
        "{back}"
    );

    // A new connection meets b's new (empty) policy on host2.
    let fresh = world.send("a", "b", Probe::tcp(80)).unwrap();
    assert_eq!(fresh.verdict, Verdict::Deny, "{fresh}");
    let deciding = fresh.deciding.clone().unwrap_or_default();
    assert!(
        deciding.starts_with("request on host2: DROP by") && deciding.contains("cali-tw-"),
        "{fresh}"
    );
}

#[tokio::test]
async fn restart_without_a_change_applies_nothing() {
    let (mut world, _) = two_hosts().await;
    let flow = world.send("a", "b", Probe::tcp(80)).unwrap();
    assert_eq!(flow.verdict, Verdict::Allow, "{flow}");
    let before = saved_chains(&world, "host2");
    let routes_before = world.host("host2").unwrap().dataplane().routes(ROOT_NS);

    world.stop_agent("host2").unwrap();
    world.start_agent("host2").unwrap();
    let first = world.poll_agent("host2").await.unwrap().unwrap();
    assert!(first.resnapshot, "{first:?}");
    assert_eq!(first.changes, Vec::<Change>::new());
    assert_eq!(saved_chains(&world, "host2"), before);
    assert_eq!(
        world.host("host2").unwrap().dataplane().routes(ROOT_NS),
        routes_before
    );

    let report = world.settle().await.unwrap();
    assert_eq!(report.dataplane_changes, 0, "{report:?}");
    let more = world.send_packet(flow.request).unwrap();
    assert_eq!(more.verdict, Verdict::Allow, "{more}");
    assert_eq!(
        ct_states(&more, "host2", Direction::Request),
        vec!["Established"],
        "{more}"
    );
    assert_eq!(
        world.send("a", "b", Probe::tcp(80)).unwrap().verdict,
        Verdict::Allow
    );
}
