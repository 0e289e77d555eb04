//! `LinuxDataplane` and `LinuxPlumbing` on a real kernel (root), each test in namespaces of its
//! own: a "host" namespace running the dataplane and one namespace per workload.
//!
//! Every outer test creates the namespaces (deleted on drop, even on panic) and re-runs its
//! `inner_*` twin inside the host namespace; the inner twins do nothing in a normal run.
//!
//! The cluster: host 172.31.250.1 (on a veth standing in for the wire), workloads A and B with profile
//! PROF_A_B (inbound: from tag PROF_A_B; outbound: all) and C with PROF_C (inbound: all;
//! outbound: nothing).

mod linux_common;

use std::collections::BTreeSet;

use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::compute::names::{from_wl_chain, to_wl_chain};
use calico_core::desired::{BirdPeer, DesiredState, PeerKind, Route, TableId};
use calico_core::iptables::{Chain, IpFamily, Rule, Table, Target};
use calico_core::model::MacAddr;
use calico_dataplane::linux::{LinuxDataplane, LinuxPlumbing};
use calico_dataplane::sim::{SimDataplane, WireConfig};
use calico_dataplane::{Change, Dataplane, DataplaneError, VethSpec, WorkloadPlumbing};
use linux_common::{arg, can_run, is_inner, must, run_inside, succeeds, Netns, RunDir};

const HOST: &str = "calico-01";
const HOST_IP: &str = "172.31.250.1";

struct Workload {
    ns: String,
    id: &'static str,
    ip: &'static str,
    profile: &'static str,
}

impl Workload {
    fn host_iface(&self) -> String {
        format!("cali{}", &self.id[..11])
    }

    fn spec(&self) -> VethSpec {
        VethSpec {
            netns: self.ns.clone(),
            host_iface: self.host_iface(),
            temp_iface: format!("tmp{}", &self.id[..11]),
            workload_iface: "eth1".to_string(),
            addrs: vec![format!("{}/32", self.ip).parse().unwrap()],
            gateway_v4: Some(HOST_IP.parse().unwrap()),
            gateway_v6: None,
        }
    }

    fn endpoint_key(&self, profile: &str, mac: MacAddr) -> (String, String) {
        let key = format!(
            "/calico/v1/host/{HOST}/workload/docker/{}/endpoint/{}",
            self.ns, self.id
        );
        let value = format!(
            r#"{{"state":"active","name":"{}","mac":"{mac}","profile_ids":["{profile}"],"ipv4_nets":["{}/32"],"ipv6_nets":[],"ipv4_gateway":"{HOST_IP}","ipv6_gateway":null}}"#,
            self.host_iface(),
            self.ip
        );
        (key, value)
    }
}

fn workloads() -> [Workload; 3] {
    [
        Workload {
            ns: arg("NS_A"),
            id: "1f0e3a5c6d70",
            ip: "192.168.1.1",
            profile: "PROF_A_B",
        },
        Workload {
            ns: arg("NS_B"),
            id: "8a9b0c1d2e3f",
            ip: "192.168.1.2",
            profile: "PROF_A_B",
        },
        Workload {
            ns: arg("NS_C"),
            id: "c0c0c0c0c0c0",
            ip: "192.168.1.3",
            profile: "PROF_C",
        },
    ]
}

fn base_keys() -> Vec<(String, String)> {
    [
        ("/calico/v1/Ready", "true"),
        ("/calico/v1/config/InterfacePrefix", "cali"),
        ("/calico/bgp/v1/global/as_num", "64511"),
        ("/calico/bgp/v1/global/node_mesh", r#"{"enabled": true}"#),
        ("/calico/v1/ipam/v4/pool/192.168.0.0-16", r#"{"cidr": "192.168.0.0/16"}"#),
        ("/calico/v1/host/calico-01/bird_ip", HOST_IP),
        ("/calico/v1/host/calico-01/config/marker", "created"),
        ("/calico/bgp/v1/host/calico-01/ip_addr_v4", HOST_IP),
        ("/calico/v1/policy/profile/PROF_A_B/tags", r#"["PROF_A_B"]"#),
        (
            "/calico/v1/policy/profile/PROF_A_B/rules",
            r#"{"inbound_rules": [{"action": "allow", "src_tag": "PROF_A_B"}], "outbound_rules": [{"action": "allow"}]}"#,
        ),
        ("/calico/v1/policy/profile/PROF_C/tags", r#"["PROF_C"]"#),
        (
            "/calico/v1/policy/profile/PROF_C/rules",
            r#"{"inbound_rules": [{"action": "allow"}], "outbound_rules": []}"#,
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Runs `f` on a current-thread tokio runtime: the dataplane's netlink connection is a task of
/// the caller's runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The inner side: the host namespace's dataplane with the three workloads plumbed.
struct World {
    dp: LinuxDataplane,
    wls: [Workload; 3],
    macs: Vec<MacAddr>,
}

impl World {
    fn new() -> Self {
        // The host's "wire": a veth pair (no dummy module needed) holding the host address.
        must(
            "ip",
            &[
                "link", "add", "wire0", "type", "veth", "peer", "name", "wire1",
            ],
        );
        must(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", "wire0"],
        );
        must("ip", &["link", "set", "wire0", "up"]);
        must("ip", &["link", "set", "wire1", "up"]);
        must("ip", &["link", "set", "lo", "up"]);
        let plumbing = LinuxPlumbing::new();
        let wls = workloads();
        let macs = wls
            .iter()
            .map(|w| block_on(plumbing.add_veth(&w.spec())).unwrap())
            .collect();
        World {
            dp: LinuxDataplane::new(arg("RUN_DIR")),
            wls,
            macs,
        }
    }

    /// The desired state with `profiles[i]` for workload i.
    fn desired(&self, profiles: [&str; 3]) -> DesiredState {
        let mut state = ClusterState::default();
        let mut keys = base_keys();
        for ((w, mac), profile) in self.wls.iter().zip(&self.macs).zip(profiles) {
            keys.push(w.endpoint_key(profile, *mac));
        }
        for (k, v) in &keys {
            state.apply(k, Some(v.as_bytes()));
        }
        compute(&state, HOST)
    }

    fn default_desired(&self) -> DesiredState {
        self.desired([
            self.wls[0].profile,
            self.wls[1].profile,
            self.wls[2].profile,
        ])
    }
}

/// Creates the host and workload namespaces and runs `inner` in the host one.
fn outer(test: &str, inner: &str) {
    if !can_run(test) {
        return;
    }
    let host = Netns::new();
    let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
    let run = RunDir::new();
    run_inside(
        &host.name,
        inner,
        &[
            ("NS_A", a.name.clone()),
            ("NS_B", b.name.clone()),
            ("NS_C", c.name.clone()),
            ("RUN_DIR", run.path().to_string_lossy().into_owned()),
        ],
    );
}

const FILTER4: TableId = TableId {
    family: IpFamily::V4,
    table: Table::Filter,
};

/// The chains declared (`:name`) in a restore input.
fn declared(input: &str) -> BTreeSet<String> {
    input
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The programs started, as command lines, since the log was last taken.
fn started(dp: &LinuxDataplane) -> Vec<String> {
    dp.command_log()
        .take()
        .iter()
        .map(|i| i.command_line())
        .collect()
}

/// A simulated host with the same workload interfaces as `w`'s, which applied `desired`.
fn sim_twin(w: &World, desired: &DesiredState) -> SimDataplane {
    let wire = WireConfig::eth0([format!("{HOST_IP}/24").parse().unwrap()]);
    let sim = SimDataplane::new(HOST, wire);
    for wl in &w.wls {
        sim.add_namespace(&wl.ns).unwrap();
        block_on(sim.add_veth(&wl.spec())).unwrap();
    }
    sim.apply_now(desired).unwrap();
    sim
}

/// The same changes, in any order (the dataplanes order independent changes differently).
fn assert_same_changes(a: &[Change], b: &[Change]) {
    let text = |cs: &[Change]| cs.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(a.len(), b.len(), "{:#?}\n{:#?}", text(a), text(b));
    for change in a {
        assert!(b.contains(change), "{change} only in {:#?}", text(a));
    }
}

#[test]
fn apply_is_idempotent_incremental_and_repairs_drift_after_observe() {
    outer(
        "apply_is_idempotent_incremental_and_repairs_drift_after_observe",
        "inner_apply",
    );
}

#[test]
fn inner_apply() {
    if !is_inner("inner_apply") {
        return;
    }
    let mut w = World::new();
    let desired = w.default_desired();
    assert!(desired.tables.contains_key(&FILTER4));

    // First apply: everything is installed and visible to the usual tools, each route and
    // neighbour with one netlink request and no `ip` process.
    assert!(!desired.neighbours.is_empty());
    w.dp.command_log().enable();
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert!(!report.changes.is_empty());
    assert_eq!(
        w.dp.netlink_writes(),
        (desired.routes.len() + desired.neighbours.len()) as u64
    );
    let ips: Vec<String> =
        w.dp.command_log()
            .take()
            .iter()
            .filter(|i| i.program == "ip")
            .map(|i| i.command_line())
            .collect();
    assert_eq!(ips, Vec::<String>::new());
    let neigh = must("ip", &["neigh", "show", "nud", "permanent"]);
    for n in &desired.neighbours {
        assert!(
            neigh.contains(&format!("{} dev {} lladdr {}", n.ip, n.dev, n.mac)),
            "{neigh}"
        );
    }
    let save = must("iptables-save", &["-t", "filter"]);
    assert!(save.contains(":cali-FORWARD - [0:0]"), "{save}");
    assert!(
        save.lines()
            .any(|l| l.starts_with("-A FORWARD -m comment --comment \"cali:")
                && l.ends_with("-j cali-FORWARD")),
        "{save}"
    );
    let sets = must("ipset", &["list", "-n"]);
    assert!(
        sets.lines().any(|l| l.starts_with("cali4-t-PROF_A_B")),
        "{sets}"
    );
    let routes = must("ip", &["route", "show", "proto", "80"]);
    for wl in &w.wls {
        assert!(
            routes.contains(&format!("{} dev {}", wl.ip, wl.host_iface())),
            "{routes}"
        );
    }
    assert_eq!(must("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    let observed = block_on(w.dp.observe()).unwrap();
    assert_eq!(observed, desired);

    // BIRD runs with the rendered config and reports its protocols.
    let rows = w.dp.bgp_status().unwrap();
    assert!(rows.iter().any(|r| r.proto == "Kernel"), "{rows:?}");

    // Second apply: nothing to change, no process at all (not even a save: the tables and
    // sets are diffed against what the observe above read), no netlink write.
    w.dp.command_log().take();
    let writes = w.dp.netlink_writes();
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(report.changes, Vec::<Change>::new());
    assert_eq!(w.dp.netlink_writes(), writes);
    assert_eq!(started(&w.dp), Vec::<String>::new());

    // A moves to PROF_C: exactly A's chains are rewritten in the filter restore.
    let moved = w.desired(["PROF_C", "PROF_A_B", "PROF_C"]);
    let report = block_on(w.dp.apply(&moved)).unwrap();
    // The simulator, holding the same state, reports the same step with the same changes.
    let sim = sim_twin(&w, &desired);
    let sim_report = sim.apply_now(&moved).unwrap();
    assert_same_changes(&sim_report.changes, &report.changes);
    let log = w.dp.command_log().take();
    assert!(
        log.iter()
            .all(|i| !i.program.ends_with("-save") && i.args != ["save"]),
        "{log:?}"
    );
    let restores: Vec<&str> = log
        .iter()
        .filter(|i| i.program == "iptables-restore")
        .filter_map(|i| i.stdin.as_deref())
        .collect();
    assert_eq!(restores.len(), 1, "{log:?}");
    let a = w.wls[0].host_iface();
    assert_eq!(
        declared(restores[0]),
        BTreeSet::from([from_wl_chain(&a), to_wl_chain(&a)]),
        "{}",
        restores[0]
    );
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.to_string().starts_with("update ipset cali4-t-PROF_A_B")),
        "{report:?}"
    );
    assert_eq!(block_on(w.dp.observe()).unwrap(), moved);

    // Drift: a route deleted and a chain flushed by hand are seen by observe and repaired by
    // the apply that follows it (the resync of the agent).
    let b = &w.wls[1];
    must(
        "ip",
        &[
            "route",
            "del",
            &format!("{}/32", b.ip),
            "dev",
            &b.host_iface(),
        ],
    );
    must("iptables", &["-w", "-F", "cali-FORWARD"]);
    let drifted = block_on(w.dp.observe()).unwrap();
    assert_ne!(drifted, moved);
    assert_eq!(drifted.routes.len(), moved.routes.len() - 1);
    let writes = w.dp.netlink_writes();
    let report = block_on(w.dp.apply(&moved)).unwrap();
    assert_eq!(w.dp.netlink_writes(), writes + 1, "{report:?}");
    assert!(
        report.changes.contains(&Change::AddRoute(Route {
            dst: format!("{}/32", b.ip).parse().unwrap(),
            dev: b.host_iface(),
        })),
        "{report:?}"
    );
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.to_string() == "rewrite chain filter/v4 cali-FORWARD"),
        "{report:?}"
    );
    assert_eq!(block_on(w.dp.observe()).unwrap(), moved);

    // Nothing wanted: every chain, set, route and neighbour of ours goes; foreign state
    // (a chain, a route of another protocol on our interface) stays.
    must("iptables", &["-w", "-N", "FOREIGN"]);
    must(
        "ip",
        &[
            "route",
            "add",
            "192.168.9.9/32",
            "dev",
            &a,
            "proto",
            "static",
        ],
    );
    let report = block_on(w.dp.apply(&DesiredState::default())).unwrap();
    assert!(!report.changes.is_empty());
    let save = must("iptables-save", &[]);
    assert!(!save.contains("cali"), "{save}");
    assert!(save.contains(":FOREIGN"), "{save}");
    assert!(!must("ipset", &["list", "-n"]).contains("cali"));
    assert_eq!(must("ip", &["route", "show", "proto", "80"]).trim(), "");
    let foreign = must("ip", &["route", "show", "proto", "static"]);
    assert!(
        foreign.contains(&format!("192.168.9.9 dev {a}")),
        "{foreign}"
    );
    let neigh = must("ip", &["neigh", "show", "nud", "permanent"]);
    assert!(!neigh.contains("192.168.1."), "{neigh}");
    assert_eq!(block_on(w.dp.observe()).unwrap(), DesiredState::default());
    assert!(w.dp.stop_bird().is_empty());
}

#[test]
fn apply_trusts_what_it_wrote_until_observe_or_a_failure() {
    outer(
        "apply_trusts_what_it_wrote_until_observe_or_a_failure",
        "inner_cache",
    );
}

#[test]
fn inner_cache() {
    if !is_inner("inner_cache") {
        return;
    }
    let mut w = World::new();
    let desired = w.default_desired();
    w.dp.command_log().enable();
    block_on(w.dp.apply(&desired)).unwrap();
    // The first apply had nothing to go on: it read the kernel.
    let first = started(&w.dp);
    for save in ["iptables-save", "ip6tables-save", "ipset save"] {
        assert!(first.iter().any(|c| c == save), "{save}: {first:?}");
    }

    // Behind the dataplane's back: a chain flushed and a set member deleted.
    must("iptables", &["-w", "-F", "cali-FORWARD"]);
    must("ipset", &["del", "cali4-t-PROF_A_B", w.wls[1].ip]);
    let flushed = |save: &str| !save.lines().any(|l| l.starts_with("-A cali-FORWARD "));

    // A plain apply trusts what it wrote last: it starts nothing and the drift stays.
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(report.changes, Vec::<Change>::new());
    assert_eq!(started(&w.dp), Vec::<String>::new());
    assert!(flushed(&must("iptables-save", &["-t", "filter"])));

    // observe reads the kernel and sees both; the apply after it repairs exactly those.
    let drifted = block_on(w.dp.observe()).unwrap();
    assert_ne!(drifted.tables[&FILTER4], desired.tables[&FILTER4]);
    assert_eq!(
        drifted.ipsets["cali4-t-PROF_A_B"].members.len(),
        desired.ipsets["cali4-t-PROF_A_B"].members.len() - 1
    );
    w.dp.command_log().take();
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(
        report.changes,
        vec![
            Change::UpdateIpSet(desired.ipsets["cali4-t-PROF_A_B"].clone()),
            Change::RewriteChain {
                table: FILTER4,
                chain: desired.tables[&FILTER4].chains["cali-FORWARD"].clone(),
            },
        ]
    );
    let log = w.dp.command_log().take();
    let programs: Vec<&str> = log.iter().map(|i| i.program.as_str()).collect();
    assert_eq!(programs, ["ipset", "iptables-restore"], "{log:?}");
    assert_eq!(
        declared(log[1].stdin.as_deref().unwrap_or_default()),
        BTreeSet::from(["cali-FORWARD".to_string()])
    );
    assert!(!flushed(&must("iptables-save", &["-t", "filter"])));
    assert_eq!(block_on(w.dp.observe()).unwrap(), desired);

    // A restore the kernel refuses (a jump to a chain that does not exist) forgets the record:
    // the next apply reads the kernel again, finds the refused transaction left nothing
    // behind, and the one after that trusts its record again.
    let mut refused = desired.clone();
    let filter = refused.tables.get_mut(&FILTER4).unwrap();
    filter.chains.insert(
        "cali-broken".to_string(),
        Chain {
            name: "cali-broken".to_string(),
            rules: vec![
                Rule::new(vec![], Target::Jump("cali-nowhere".to_string())).with_comment("refused")
            ],
        },
    );
    w.dp.command_log().take();
    let err = block_on(w.dp.apply(&refused)).unwrap_err();
    assert!(matches!(err, DataplaneError::Command { .. }), "{err}");
    assert!(!must("iptables-save", &["-t", "filter"]).contains("cali-broken"));
    w.dp.command_log().take();
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(report.changes, Vec::<Change>::new());
    // The three reads run at the same time: their order in the log is not fixed.
    let mut reads = started(&w.dp);
    reads.sort();
    assert_eq!(reads, ["ip6tables-save", "ipset save", "iptables-save"]);
    block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(started(&w.dp), Vec::<String>::new());
    assert!(w.dp.stop_bird().is_empty());
}

#[test]
fn plumbed_workloads_ping_when_policy_allows_and_not_otherwise() {
    outer(
        "plumbed_workloads_ping_when_policy_allows_and_not_otherwise",
        "inner_ping",
    );
}

fn ping(from: &Workload, to: &Workload) -> bool {
    succeeds(
        "ip",
        &["netns", "exec", &from.ns, "ping", "-c1", "-W1", to.ip],
    )
}

#[test]
fn inner_ping() {
    if !is_inner("inner_ping") {
        return;
    }
    let mut w = World::new();
    let desired = w.default_desired();
    block_on(w.dp.apply(&desired)).unwrap();
    let [a, b, c] = &w.wls;
    assert!(ping(a, b), "A -> B should be allowed (same profile)");
    assert!(ping(b, a), "B -> A should be allowed (same profile)");
    assert!(ping(a, c), "A -> C should be allowed (C accepts all)");
    assert!(!ping(c, a), "C -> A should be denied (C may send nothing)");
    assert!(!ping(c, b), "C -> B should be denied (C may send nothing)");

    // B moves to PROF_C: it may no longer send, but still accepts everything.
    let moved = w.desired(["PROF_A_B", "PROF_C", "PROF_C"]);
    block_on(w.dp.apply(&moved)).unwrap();
    assert!(!ping(b, a), "B -> A should be denied once B has PROF_C");
    assert!(ping(a, b), "A -> B should stay allowed (B accepts all)");
    assert!(w.dp.stop_bird().is_empty());
}

#[test]
fn plumbing_adds_and_removes_a_workload_all_or_nothing() {
    outer(
        "plumbing_adds_and_removes_a_workload_all_or_nothing",
        "inner_plumbing",
    );
}

#[test]
fn inner_plumbing() {
    if !is_inner("inner_plumbing") {
        return;
    }
    let plumbing = LinuxPlumbing::new();
    let [a, b, _] = workloads();
    assert!(block_on(plumbing.namespace_exists(&a.ns)).unwrap());
    assert!(block_on(plumbing.namespace_exists(&format!("/var/run/netns/{}", a.ns))).unwrap());
    assert!(!block_on(plumbing.namespace_exists("calirs-no-such-ns")).unwrap());

    let mac = block_on(plumbing.add_veth(&a.spec())).unwrap();
    let link = must("ip", &["-n", &a.ns, "link", "show", "eth1"]);
    assert!(link.contains(&mac.to_string()), "{link}");
    let addrs = must("ip", &["-n", &a.ns, "addr", "show", "eth1"]);
    assert!(addrs.contains("192.168.1.1/32"), "{addrs}");
    let routes = must("ip", &["-n", &a.ns, "route"]);
    assert!(
        routes.contains(&format!("default via {HOST_IP} dev eth1")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{HOST_IP} dev eth1 scope link")),
        "{routes}"
    );
    assert!(must("ip", &["link", "show", &a.host_iface()]).contains("UP"));

    // A second address, then its removal.
    let extra = "192.168.1.11/32".parse().unwrap();
    block_on(plumbing.add_addr(&a.ns, "eth1", extra)).unwrap();
    assert!(must("ip", &["-n", &a.ns, "addr", "show", "eth1"]).contains("192.168.1.11/32"));
    block_on(plumbing.remove_addr(&a.ns, "eth1", extra)).unwrap();
    assert!(!must("ip", &["-n", &a.ns, "addr", "show", "eth1"]).contains("192.168.1.11/32"));

    // Adding the same host interface again is refused before anything is created.
    let err = block_on(plumbing.add_veth(&a.spec())).unwrap_err();
    assert!(
        matches!(&err, DataplaneError::InterfaceExists { iface } if *iface == a.host_iface()),
        "{err}"
    );

    // B's namespace already has an eth1: the rename fails and no veth is left behind.
    must(
        "ip",
        &[
            "-n", &b.ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
        ],
    );
    let err = block_on(plumbing.add_veth(&b.spec())).unwrap_err();
    assert!(matches!(err, DataplaneError::Command { .. }), "{err}");
    let host_links = must("ip", &["link", "show"]);
    assert!(!host_links.contains(&b.host_iface()), "{host_links}");
    assert!(!host_links.contains("tmp8a9b0c1d2e3"), "{host_links}");
    let ns_links = must("ip", &["-n", &b.ns, "link", "show"]);
    assert!(!ns_links.contains("tmp8a9b0c1d2e3"), "{ns_links}");

    // A namespace that does not exist is named.
    let mut gone = b.spec();
    gone.netns = "calirs-no-such-ns".to_string();
    let err = block_on(plumbing.add_veth(&gone)).unwrap_err();
    assert!(
        matches!(err, DataplaneError::NamespaceNotFound { .. }),
        "{err}"
    );

    // Removal takes both ends; removing again is not an error.
    block_on(plumbing.remove_veth(&a.host_iface())).unwrap();
    assert!(!must("ip", &["link", "show"]).contains(&a.host_iface()));
    assert!(!must("ip", &["-n", &a.ns, "link", "show"]).contains("eth1"));
    block_on(plumbing.remove_veth(&a.host_iface())).unwrap();
}

#[test]
fn bird_is_reloaded_restarted_and_missing_interfaces_are_retried() {
    outer(
        "bird_is_reloaded_restarted_and_missing_interfaces_are_retried",
        "inner_bird",
    );
}

#[test]
fn inner_bird() {
    if !is_inner("inner_bird") {
        return;
    }
    let mut w = World::new();
    let mut desired = w.default_desired();
    let a = w.wls[0].host_iface();
    block_on(w.dp.apply(&desired)).unwrap();
    let proxy_arp = format!("/proc/sys/net/ipv4/conf/{a}/proxy_arp");
    assert_eq!(must("cat", &[&proxy_arp]).trim(), "1");

    // A new mesh peer: the config is rewritten and BIRD reloaded, and it shows the session.
    let cfg = desired.bird_v4.as_mut().expect("a v4 BIRD config");
    cfg.peers.insert(BirdPeer {
        kind: PeerKind::Mesh,
        ip: "172.31.250.2".parse().unwrap(),
        as_num: cfg.local_as,
    });
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(
        report.changes,
        vec![Change::WriteBirdConfig {
            v6: false,
            config: desired.bird_v4.clone(),
        }]
    );
    let rows = w.dp.bgp_status().unwrap();
    assert!(
        rows.iter()
            .any(|r| r.name == "Mesh_172_31_250_2" && r.proto == "BGP"),
        "{rows:?}"
    );

    // BIRD killed: observe no longer reports its config, and apply starts it again.
    let pid_file = std::path::Path::new(&arg("RUN_DIR")).join("bird.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    must("kill", &["-9", pid.trim()]);
    // SIGKILL is delivered asynchronously: wait (bounded) until the process is gone or a zombie.
    let status = format!("/proc/{}/status", pid.trim());
    for _ in 0..100 {
        match std::fs::read_to_string(&status) {
            Ok(s) if !s.contains("zombie") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => break,
        }
    }
    assert_eq!(block_on(w.dp.observe()).unwrap().bird_v4, None);
    let report = block_on(w.dp.apply(&desired)).unwrap();
    assert_eq!(report.changes, vec![Change::StartBird { v6: false }]);
    assert_eq!(block_on(w.dp.observe()).unwrap(), desired);

    // A workload whose interface is not there yet is skipped, not an error, and retried.
    let mut later = desired.clone();
    let not_yet = Route {
        dst: "192.168.1.99/32".parse().unwrap(),
        dev: "calinotyet0".to_string(),
    };
    later.routes.insert(not_yet.clone());
    let report = block_on(w.dp.apply(&later)).unwrap();
    assert!(
        !report.changes.contains(&Change::AddRoute(not_yet.clone())),
        "{report:?}"
    );
    assert_eq!(
        report.waiting.iter().collect::<Vec<_>>(),
        ["calinotyet0"],
        "reported as waiting, as the simulator does"
    );
    must(
        "ip",
        &[
            "link",
            "add",
            "calinotyet0",
            "type",
            "veth",
            "peer",
            "name",
            "calinotyet1",
        ],
    );
    must("ip", &["link", "set", "calinotyet0", "up"]);
    let report = block_on(w.dp.apply(&later)).unwrap();
    assert_eq!(report.changes, vec![Change::AddRoute(not_yet)]);
    assert!(report.waiting.is_empty(), "{report:?}");
    assert!(w.dp.stop_bird().is_empty());
}
