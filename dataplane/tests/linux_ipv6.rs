//! IPv6 workloads under `LinuxDataplane` on a real kernel (root), in namespaces of this test:
//! two v6 workloads plumbed by `LinuxPlumbing` with their default route via the host's IPv6
//! address, which the host holds on its "wire". They ping each other only while the proxy-NDP
//! entries for that gateway are on their veths: the kernel answers a solicitation for an
//! address of another interface only from a proxy entry (`proxy_ndp=1` alone answers nothing).

mod linux_common;

use std::collections::BTreeSet;

use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::{DesiredState, ProxyNeighbour};
use calico_dataplane::linux::{LinuxDataplane, LinuxPlumbing};
use calico_dataplane::{Change, Dataplane, VethSpec, WorkloadPlumbing};
use linux_common::{arg, can_run, is_inner, must, run_inside, succeeds, Netns, RunDir};

const HOST: &str = "calico-01";
const HOST_IP: &str = "172.31.250.1";
const HOST_IP6: &str = "fd5e:ca1:c0::1";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn v6_workloads_reach_each_other_through_proxy_ndp_entries() {
    let test = "v6_workloads_reach_each_other_through_proxy_ndp_entries";
    if !can_run(test) {
        return;
    }
    let host = Netns::new();
    let (d, e) = (Netns::new(), Netns::new());
    let run = RunDir::new();
    run_inside(
        &host.name,
        "inner_v6",
        &[
            ("NS_D", d.name.clone()),
            ("NS_E", e.name.clone()),
            ("RUN_DIR", run.path().to_string_lossy().into_owned()),
        ],
    );
}

/// (namespace, host interface, address)
fn workloads() -> [(String, String, String); 2] {
    [
        (
            arg("NS_D"),
            "calid0d0d0d0d0d".into(),
            "fd80:24e2:f998:72d6::d".into(),
        ),
        (
            arg("NS_E"),
            "calie0e0e0e0e0e".into(),
            "fd80:24e2:f998:72d6::e".into(),
        ),
    ]
}

fn desired(macs: &[String]) -> DesiredState {
    let mut keys: Vec<(String, String)> = [
        ("/calico/v1/Ready", "true"),
        ("/calico/v1/config/InterfacePrefix", "cali"),
        (
            "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64",
            r#"{"cidr": "fd80:24e2:f998:72d6::/64"}"#,
        ),
        ("/calico/v1/policy/profile/V6/tags", r#"["V6"]"#),
        (
            "/calico/v1/policy/profile/V6/rules",
            r#"{"inbound_rules": [{"src_tag": "V6"}], "outbound_rules": [{}]}"#,
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for ((ns, iface, addr), mac) in workloads().iter().zip(macs) {
        keys.push((
            format!("/calico/v1/host/{HOST}/workload/docker/{ns}/endpoint/{iface}"),
            format!(
                r#"{{"state":"active","name":"{iface}","mac":"{mac}","profile_ids":["V6"],"ipv4_nets":[],"ipv6_nets":["{addr}/128"],"ipv4_gateway":"{HOST_IP}","ipv6_gateway":"{HOST_IP6}"}}"#
            ),
        ));
    }
    let mut state = ClusterState::default();
    for (k, v) in &keys {
        state.apply(k, Some(v.as_bytes()));
    }
    compute(&state, HOST)
}

/// Whether `from` gets an echo reply from `to` within three one-second tries: the first
/// echo waits for neighbour discovery, and the kernel delays proxy-NDP answers by up to
/// `proxy_delay` (0.8 s by default), so one try of one second sometimes fell short.
fn ping6(from: &str, to: &str) -> bool {
    (0..3).any(|_| succeeds("ip", &["netns", "exec", from, "ping", "-c1", "-W1", to]))
}

/// Our proxy entries as `ip -6 neigh show proxy` lists them.
fn listed_proxies() -> BTreeSet<String> {
    must("ip", &["-6", "neigh", "show", "proxy"])
        .lines()
        .filter(|l| l.contains(" dev cali"))
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn inner_v6() {
    if !is_inner("inner_v6") {
        return;
    }
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
    must(
        "ip",
        &[
            "addr",
            "add",
            &format!("{HOST_IP6}/64"),
            "dev",
            "wire0",
            "nodad",
        ],
    );
    for link in ["wire0", "wire1", "lo"] {
        must("ip", &["link", "set", link, "up"]);
    }
    let plumbing = LinuxPlumbing::new();
    let wls = workloads();
    let macs: Vec<String> = wls
        .iter()
        .map(|(ns, iface, addr)| {
            let spec = VethSpec {
                netns: ns.clone(),
                host_iface: iface.clone(),
                temp_iface: format!("tmp{}", &iface[4..]),
                workload_iface: "eth1".to_string(),
                addrs: vec![format!("{addr}/128").parse().unwrap()],
                gateway_v4: None,
                gateway_v6: Some(HOST_IP6.parse().unwrap()),
            };
            block_on(plumbing.add_veth(&spec)).unwrap().to_string()
        })
        .collect();
    // The veths' link-local addresses finish DAD first: until then the host has no source
    // for its own solicitations on them.
    for _ in 0..50 {
        if must("ip", &["-6", "addr", "show", "tentative"])
            .trim()
            .is_empty()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut want = desired(&macs);
    // BGP plays no part in one host; BIRD is tested elsewhere.
    want.bird_v4 = None;
    want.bird_v6 = None;
    let mut dp = LinuxDataplane::new(arg("RUN_DIR"));
    let [(d_ns, d_if, d_ip), (e_ns, e_if, e_ip)] = &wls;

    block_on(dp.apply(&want)).unwrap();
    let expected: BTreeSet<String> = [d_if, e_if]
        .iter()
        .map(|i| format!("{HOST_IP6} dev {i}"))
        .collect();
    assert_eq!(listed_proxies(), expected);
    let observed = block_on(dp.observe()).unwrap();
    assert_eq!(observed.proxy_neighbours, want.proxy_neighbours);
    assert!(ping6(d_ns, e_ip), "D -> E over IPv6 should be allowed");
    assert!(ping6(e_ns, d_ip), "E -> D over IPv6 should be allowed");
    // A second apply of the same state writes nothing.
    let writes = dp.netlink_writes();
    assert_eq!(block_on(dp.apply(&want)).unwrap().changes, Vec::new());
    assert_eq!(dp.netlink_writes(), writes);

    // Without the entries the workloads' gateway goes unanswered; the sysctls stay on.
    let mut bare = want.clone();
    bare.proxy_neighbours.clear();
    let changes = block_on(dp.apply(&bare)).unwrap().changes;
    let removed: BTreeSet<ProxyNeighbour> = changes
        .iter()
        .filter_map(|c| match c {
            Change::DelProxyNeighbour(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, want.proxy_neighbours);
    assert_eq!(listed_proxies(), BTreeSet::new());
    must("ip", &["-n", d_ns, "-6", "neigh", "flush", "dev", "eth1"]);
    assert!(
        !ping6(d_ns, e_ip),
        "D -> E needs the proxy entry for its gateway"
    );

    // Drift: an entry deleted behind our back is seen by observe and put back by apply.
    block_on(dp.apply(&want)).unwrap();
    must(
        "ip",
        &["-6", "neigh", "del", "proxy", HOST_IP6, "dev", d_if],
    );
    let observed = block_on(dp.observe()).unwrap();
    assert_eq!(observed.proxy_neighbours.len(), 1);
    block_on(dp.apply(&want)).unwrap();
    assert_eq!(listed_proxies(), expected);
    must("ip", &["-n", d_ns, "-6", "neigh", "flush", "dev", "eth1"]);
    assert!(ping6(d_ns, e_ip), "D -> E again once the entry is back");
}
