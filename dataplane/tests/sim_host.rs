//! One simulated host with three workloads plumbed like `calicoctl container add`, programmed
//! with the desired state `compute` derives from a cluster state, then probed with packets.
//!
//! A and B share profile PROF_A_B (inbound: from tag PROF_A_B; outbound: all). C has PROF_C
//! (inbound: all; outbound: nothing), so A→C is allowed but C may not start anything.

use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::DesiredState;
use calico_core::iptables::{CtState, IpFamily, Table};
use calico_core::model::MacAddr;
use calico_dataplane::sim::{
    Hop, HostOutcome, NeighSource, Packet, SimDataplane, WireConfig, ROOT_NS,
};
use calico_dataplane::{Change, Dataplane, DataplaneError, VethSpec, WorkloadPlumbing};
use futures::executor::block_on;

const HOST: &str = "calico-01";
const HOST_IP: &str = "172.31.250.1";

struct Workload {
    ns: &'static str,
    id: &'static str,
    ip: &'static str,
    profile: &'static str,
}

const A: Workload = Workload {
    ns: "workload_A",
    id: "1f0e3a5c6d70",
    ip: "192.168.1.1",
    profile: "PROF_A_B",
};
const B: Workload = Workload {
    ns: "workload_B",
    id: "8a9b0c1d2e3f",
    ip: "192.168.1.2",
    profile: "PROF_A_B",
};
const C: Workload = Workload {
    ns: "workload_C",
    id: "c0c0c0c0c0c0",
    ip: "192.168.1.3",
    profile: "PROF_C",
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn host_iface(w: &Workload) -> String {
    format!("cali{}", &w.id[..11])
}

fn spec(w: &Workload) -> VethSpec {
    VethSpec {
        netns: w.ns.to_string(),
        host_iface: host_iface(w),
        temp_iface: format!("tmp{}", &w.id[..11]),
        workload_iface: "eth1".to_string(),
        addrs: vec![format!("{}/32", w.ip).parse().unwrap()],
        gateway_v4: Some(HOST_IP.parse().unwrap()),
        gateway_v6: None,
    }
}

fn base_keys(masquerade: bool) -> Vec<(String, String)> {
    let pool = if masquerade {
        r#"{"cidr": "192.168.0.0/16", "masquerade": true}"#
    } else {
        r#"{"cidr": "192.168.0.0/16"}"#
    };
    [
        ("/calico/v1/Ready", "true"),
        ("/calico/v1/config/InterfacePrefix", "cali"),
        ("/calico/bgp/v1/global/as_num", "64511"),
        ("/calico/bgp/v1/global/node_mesh", r#"{"enabled": true}"#),
        ("/calico/v1/ipam/v4/pool/192.168.0.0-16", pool),
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

fn endpoint_key(w: &Workload, mac: MacAddr) -> (String, String) {
    let key = format!(
        "/calico/v1/host/{HOST}/workload/docker/{}/endpoint/{}",
        w.ns, w.id
    );
    let value = format!(
        r#"{{"state":"active","name":"{}","mac":"{mac}","profile_ids":["{}"],"ipv4_nets":["{}/32"],"ipv6_nets":[],"ipv4_gateway":"{HOST_IP}","ipv6_gateway":null}}"#,
        host_iface(w),
        w.profile,
        w.ip
    );
    (key, value)
}

struct World {
    host: SimDataplane,
    desired: DesiredState,
}

/// Plumbs A, B and C and applies the computed desired state.
fn world_with(masquerade: bool) -> World {
    let mut host = SimDataplane::new(
        HOST,
        WireConfig::eth0([format!("{HOST_IP}/24").parse().unwrap()]),
    );
    let mut keys = base_keys(masquerade);
    for w in [&A, &B, &C] {
        host.add_namespace(w.ns).unwrap();
        let mac = block_on(host.add_veth(&spec(w))).unwrap();
        keys.push(endpoint_key(w, mac));
    }
    let mut state = ClusterState::default();
    for (k, v) in &keys {
        state.apply(k, Some(v.as_bytes()));
    }
    let desired = compute(&state, HOST);
    let report = block_on(host.apply(&desired)).unwrap();
    assert!(!report.changes.is_empty());
    World { host, desired }
}

fn world() -> World {
    world_with(false)
}

fn tcp(from: &Workload, to: &Workload, sport: u16, dport: u16) -> Packet {
    Packet::tcp(ip(from.ip), ip(to.ip), sport, dport)
}

fn expect_delivered(out: &HostOutcome, ns: &str) {
    match out {
        HostOutcome::Delivered { ns: got, iface, .. } => {
            assert_eq!(
                (got.as_str(), iface.as_str()),
                (ns, "eth1"),
                "{}",
                out.explain()
            )
        }
        other => panic!(
            "expected delivery in {ns}, got {other}\n{}",
            other.explain()
        ),
    }
}

fn expect_dropped(out: &HostOutcome) -> String {
    match out {
        HostOutcome::Dropped { reason, .. } => reason.clone(),
        other => panic!("expected a drop, got {other}\n{}", other.explain()),
    }
}

#[test]
fn allowed_flow_is_delivered_with_a_full_trace() {
    let w = world();
    let out = w.host.send_from_namespace(A.ns, tcp(&A, &B, 40000, 80));
    expect_delivered(&out, B.ns);
    let trace = out.trace();
    // The gateway is the host's own address: the host answers ARP for it on any interface.
    let arp = trace.iter().any(|h| {
        matches!(h, Hop::Neighbour { ns, ip: gw, source: NeighSource::Arp { answered_by }, .. }
            if ns == A.ns && *gw == ip(HOST_IP) && *answered_by == host_iface(&A))
    });
    assert!(arp, "no ARP hop:\n{}", out.explain());
    // The host resolves B through the static neighbour entry the apply installed.
    let static_neigh = trace.iter().any(|h| {
        matches!(h, Hop::Neighbour { ns, ip: n, source: NeighSource::Static, .. }
            if ns == ROOT_NS && *n == ip(B.ip))
    });
    assert!(static_neigh, "no static neighbour hop:\n{}", out.explain());
    let forward = out
        .decisions()
        .find(|d| d.hook == "FORWARD")
        .expect("a FORWARD decision");
    let text = forward.to_string();
    assert!(
        text.contains("ACCEPT by rule") && text.contains("policy allowed traffic from workload"),
        "{text}"
    );
    assert!(
        forward.path.iter().any(|c| c == "cali-pri-PROF_A_B"),
        "{:?}",
        forward.path
    );
}

#[test]
fn default_drop_names_the_deciding_rule() {
    let w = world();
    // C's outbound policy has no rules: its own chain drops it.
    let out = w.host.send_from_namespace(C.ns, tcp(&C, &A, 40000, 80));
    let reason = expect_dropped(&out);
    let rule = out.dropping_rule().expect("a rule dropped it");
    assert_eq!(rule.chain, format!("cali-fw-{}", host_iface(&C)));
    let comment = rule.comment.clone().unwrap_or_default();
    assert!(comment.starts_with("default drop if no match"), "{comment}");
    assert!(rule.line.ends_with("-j DROP"), "{}", rule.line);
    assert!(reason.contains(&rule.line), "{reason}");
}

#[test]
fn inbound_policy_drops_traffic_from_outside_the_tag() {
    let w = world();
    // A→C is allowed by both sides; B→... fine. Now a tag miss: a remote host outside
    // PROF_A_B sends to A over the wire.
    let out = w.host.receive_on_wire(
        Packet::tcp(ip("192.168.7.7"), ip(A.ip), 5, 80),
        "02:00:00:00:00:99".parse().unwrap(),
    );
    expect_dropped(&out);
    let rule = out.dropping_rule().expect("a rule dropped it");
    assert_eq!(rule.chain, format!("cali-tw-{}", host_iface(&A)));
}

#[test]
fn conntrack_lets_replies_through_that_would_be_dropped_alone() {
    let w = world();
    let request = tcp(&A, &C, 40000, 22);
    expect_delivered(&w.host.send_from_namespace(A.ns, request), C.ns);
    // C may not open a connection to A...
    expect_dropped(&w.host.send_from_namespace(C.ns, tcp(&C, &A, 22, 40001)));
    // ...but its answer to A's connection is ESTABLISHED and passes.
    let reply = w.host.send_from_namespace(C.ns, request.reply());
    expect_delivered(&reply, A.ns);
    let established = reply.trace().iter().any(|h| {
        matches!(
            h,
            Hop::Conntrack {
                state: CtState::Established,
                ..
            }
        )
    });
    assert!(established, "{}", reply.explain());
    // A later packet of A's flow is ESTABLISHED too.
    let again = w.host.send_from_namespace(A.ns, request);
    expect_delivered(&again, C.ns);
    w.host.flush_conntrack();
    expect_dropped(&w.host.send_from_namespace(C.ns, request.reply()));
}

/// The conntrack state the packet was classified with on this host.
fn ct_state(out: &HostOutcome) -> CtState {
    out.trace()
        .iter()
        .find_map(|h| match h {
            Hop::Conntrack { state, .. } => Some(*state),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no conntrack hop:\n{}", out.explain()))
}

#[test]
fn ping_reply_matches_its_request_and_a_ping_back_is_a_new_flow() {
    let w = world();
    let ping = Packet::ping(ip(A.ip), ip(C.ip), 1);
    let out = w.host.send_from_namespace(A.ns, ping);
    expect_delivered(&out, C.ns);
    assert_eq!(ct_state(&out), CtState::New);
    let reply = w.host.send_from_namespace(C.ns, ping.reply());
    expect_delivered(&reply, A.ns);
    assert_eq!(ct_state(&reply), CtState::Established);
    // C's outbound policy denies pings it starts: with the A→C flow still tracked, a C→A
    // ping (a new run with its own id, or even reusing A's) is a NEW flow, and dropped.
    for id in [2, 1] {
        let back = w
            .host
            .send_from_namespace(C.ns, Packet::ping(ip(C.ip), ip(A.ip), id));
        expect_dropped(&back);
        assert_eq!(ct_state(&back), CtState::New, "id {id}");
        let rule = back.dropping_rule().expect("a rule dropped it");
        assert_eq!(rule.chain, format!("cali-fw-{}", host_iface(&C)));
    }
    // A's next ping run is a new flow of its own; the first one is still ESTABLISHED.
    let again = w
        .host
        .send_from_namespace(A.ns, Packet::ping(ip(A.ip), ip(C.ip), 2));
    expect_delivered(&again, C.ns);
    assert_eq!(ct_state(&again), CtState::New);
    let same = w.host.send_from_namespace(A.ns, ping);
    assert_eq!(ct_state(&same), CtState::Established);
}

#[test]
fn rp_filter_drops_a_spoofed_source() {
    let w = world();
    let spoofed = Packet::tcp(ip(B.ip), ip(C.ip), 1, 22);
    let reason = expect_dropped(&w.host.send_from_namespace(A.ns, spoofed));
    assert!(reason.starts_with("rp_filter:"), "{reason}");
    assert!(reason.contains(&host_iface(&B)), "{reason}");
}

#[test]
fn forged_source_mac_is_dropped_by_the_mac_rule() {
    let w = world();
    w.host
        .set_link_mac(A.ns, "eth1", "02:66:66:66:66:66".parse().unwrap())
        .unwrap();
    let out = w.host.send_from_namespace(A.ns, tcp(&A, &B, 1, 80));
    expect_dropped(&out);
    let rule = out.dropping_rule().expect("a rule dropped it");
    assert_eq!(rule.comment.as_deref(), Some("incorrect source mac"));
    assert!(rule.line.contains("-m mac ! --mac-source"), "{}", rule.line);
}

#[test]
fn apply_is_idempotent_and_observe_matches() {
    let mut w = world();
    let again = block_on(w.host.apply(&w.desired)).unwrap();
    assert_eq!(again.changes, Vec::<Change>::new());
    let observed = block_on(w.host.observe()).unwrap();
    assert_eq!(observed, w.desired);
}

#[test]
fn drift_is_seen_by_observe_and_repaired_by_apply() {
    let mut w = world();
    assert!(w
        .host
        .flush_chain(IpFamily::V4, Table::Filter, "cali-FORWARD"));
    assert!(w
        .host
        .delete_route(ROOT_NS, format!("{}/32", B.ip).parse().unwrap()));
    // Without our chain, FORWARD's ACCEPT policy lets C's traffic through...
    let leak = w.host.send_from_namespace(C.ns, tcp(&C, &A, 1, 80));
    expect_delivered(&leak, A.ns);
    // ...and B is unreachable.
    let reason = expect_dropped(&w.host.send_from_namespace(A.ns, tcp(&A, &B, 1, 80)));
    assert_eq!(
        reason,
        format!("no route to {} in namespace {ROOT_NS}", B.ip)
    );
    assert_ne!(block_on(w.host.observe()).unwrap(), w.desired);

    let report = block_on(w.host.apply(&w.desired)).unwrap();
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.to_string() == "rewrite chain filter/v4 cali-FORWARD"),
        "{:?}",
        report.changes
    );
    assert!(
        report
            .changes
            .iter()
            .any(|c| c.to_string().starts_with("add route 192.168.1.2/32")),
        "{:?}",
        report.changes
    );
    assert_eq!(block_on(w.host.observe()).unwrap(), w.desired);
    w.host.flush_conntrack();
    expect_dropped(&w.host.send_from_namespace(C.ns, tcp(&C, &A, 2, 80)));
    expect_delivered(&w.host.send_from_namespace(A.ns, tcp(&A, &B, 1, 80)), B.ns);
}

#[test]
fn bgp_route_sends_traffic_out_the_wire() {
    let w = world();
    w.host
        .add_bgp_route("192.168.2.0/26".parse().unwrap(), ip("172.31.250.2"))
        .unwrap();
    let out = w
        .host
        .send_from_namespace(A.ns, Packet::tcp(ip(A.ip), ip("192.168.2.5"), 1, 80));
    match &out {
        HostOutcome::Transmitted {
            iface, next_hop, ..
        } => {
            assert_eq!(iface, "eth0");
            assert_eq!(*next_hop, ip("172.31.250.2"));
        }
        other => panic!("expected transmission, got {other}\n{}", other.explain()),
    }
    let exported: Vec<String> = w
        .host
        .routes_for_export()
        .iter()
        .map(|r| r.dst.to_string())
        .collect();
    assert_eq!(
        exported,
        ["192.168.1.1/32", "192.168.1.2/32", "192.168.1.3/32"]
    );
    assert!(w.host.remove_bgp_route("192.168.2.0/26".parse().unwrap()));
    assert_eq!(w.host.bgp_routes().len(), 0);
}

#[test]
fn masquerade_rewrites_the_source_and_the_reply_comes_back() {
    let w = world_with(true);
    w.host
        .replace_route(
            ROOT_NS,
            calico_dataplane::sim::KernelRoute::via(
                "0.0.0.0/0".parse().unwrap(),
                ip("172.31.250.254"),
                Some("eth0"),
                calico_dataplane::sim::RouteProto::Static,
            ),
        )
        .unwrap();
    let request = Packet::tcp(ip(A.ip), ip("8.8.8.8"), 40000, 53);
    let out = w.host.send_from_namespace(A.ns, request);
    let sent = match &out {
        HostOutcome::Transmitted {
            packet, next_hop, ..
        } => {
            assert_eq!(*next_hop, ip("172.31.250.254"));
            *packet
        }
        other => panic!("expected transmission, got {other}\n{}", other.explain()),
    };
    assert_eq!(sent.src, ip(HOST_IP), "{}", out.explain());
    let back = w
        .host
        .receive_on_wire(sent.reply(), "02:00:00:00:00:fe".parse().unwrap());
    expect_delivered(&back, A.ns);
    if let HostOutcome::Delivered { packet, .. } = back {
        assert_eq!(packet, request.reply());
    }
}

#[test]
fn plumbing_is_all_or_nothing() {
    let w = world();
    let links_before = w.host.links(ROOT_NS);
    let mut missing = spec(&A);
    missing.netns = "nowhere".to_string();
    missing.host_iface = "cali99999999999".to_string();
    missing.temp_iface = "tmp99999999999".to_string();
    let err = block_on(w.host.add_veth(&missing)).unwrap_err();
    assert!(
        matches!(err, DataplaneError::NamespaceNotFound { .. }),
        "{err}"
    );
    assert_eq!(w.host.links(ROOT_NS), links_before);

    // The workload already has eth1: the rename fails after the move, and everything is undone.
    let mut taken = missing.clone();
    taken.netns = A.ns.to_string();
    let a_links = w.host.links(A.ns);
    let err = block_on(w.host.add_veth(&taken)).unwrap_err();
    assert!(
        matches!(err, DataplaneError::InterfaceExists { .. }),
        "{err}"
    );
    assert_eq!(w.host.links(ROOT_NS), links_before);
    assert_eq!(w.host.links(A.ns), a_links);

    // A host interface name that is taken is refused, and the existing one stays.
    let mut dup = spec(&B);
    dup.netns = A.ns.to_string();
    dup.workload_iface = "eth2".to_string();
    let err = block_on(w.host.add_veth(&dup)).unwrap_err();
    assert!(
        matches!(err, DataplaneError::InterfaceExists { .. }),
        "{err}"
    );
    assert_eq!(w.host.links(ROOT_NS), links_before);
    expect_delivered(&w.host.send_from_namespace(A.ns, tcp(&A, &B, 1, 80)), B.ns);
}

#[test]
fn remove_veth_takes_both_ends_and_their_routes() {
    let w = world();
    block_on(w.host.remove_veth(&host_iface(&B))).unwrap();
    block_on(w.host.remove_veth(&host_iface(&B))).unwrap();
    assert!(w.host.links(B.ns).iter().all(|l| l.name == "lo"));
    assert!(w
        .host
        .routes(ROOT_NS)
        .iter()
        .all(|r| r.dev.as_deref() != Some(host_iface(&B).as_str())));
    let reason = expect_dropped(&w.host.send_from_namespace(A.ns, tcp(&A, &B, 1, 80)));
    assert!(reason.starts_with("no route to 192.168.1.2"), "{reason}");
}

#[test]
fn a_namespace_without_network_has_only_lo() {
    let host = SimDataplane::new(HOST, WireConfig::eth0([]));
    host.add_namespace("bare").unwrap();
    let err = host.add_namespace("bare").unwrap_err();
    assert!(err.to_string().contains("bare"), "{err}");
    let names: Vec<String> = host.links("bare").into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo"]);
    let reason = expect_dropped(
        &host.send_from_namespace("bare", Packet::ping(ip("127.0.0.1"), ip("10.0.0.1"), 1)),
    );
    assert_eq!(reason, "no route to 10.0.0.1 in namespace bare");
    assert!(block_on(host.namespace_exists("/var/run/netns/bare")).unwrap());
    host.remove_namespace("bare").unwrap();
    assert!(!block_on(host.namespace_exists("bare")).unwrap());
}

#[test]
fn a_dummy_gateway_is_answered_by_proxy_arp_only_when_enabled() {
    let w = world();
    let iface = host_iface(&A);
    let gw = ip("169.254.1.1");
    let dummy = calico_dataplane::sim::KernelRoute::via(
        "0.0.0.0/0".parse().unwrap(),
        gw,
        Some("eth1"),
        calico_dataplane::sim::RouteProto::Static,
    );
    w.host.replace_route(A.ns, dummy).unwrap();
    // The host needs a route to 169.254.1.1 through another interface.
    w.host
        .replace_route(
            ROOT_NS,
            calico_dataplane::sim::KernelRoute::via(
                "0.0.0.0/0".parse().unwrap(),
                ip("172.31.250.254"),
                Some("eth0"),
                calico_dataplane::sim::RouteProto::Static,
            ),
        )
        .unwrap();
    let out = w.host.send_from_namespace(A.ns, tcp(&A, &B, 1, 80));
    expect_delivered(&out, B.ns);
    let proxied = out.trace().iter().any(|h| {
        matches!(h, Hop::Neighbour { ip: n, source: NeighSource::ProxyArp { iface: by }, .. }
            if *n == gw && *by == iface)
    });
    assert!(proxied, "{}", out.explain());

    let key = format!("net.ipv4.conf.{iface}.proxy_arp");
    w.host.set_sysctl(&key, "0").unwrap();
    w.host.with_kernel(|k| {
        if let Ok(ns) = k.ns_mut(A.ns) {
            ns.neighbours.clear();
        }
    });
    let reason = expect_dropped(&w.host.send_from_namespace(A.ns, tcp(&A, &B, 2, 80)));
    assert_eq!(
        reason,
        format!(
            "no ARP reply for {gw} on eth1 in namespace {}: {key} is off",
            A.ns
        )
    );
}
