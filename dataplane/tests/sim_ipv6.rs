//! IPv6 workloads on one simulated host, plumbed as `calicoctl container add` does (default
//! route via the host's IPv6 address, which the host holds on eth0): the workload resolves
//! that gateway through the host's proxy-NDP entry on its veth, and without the entry nobody
//! answers (Linux answers a solicitation only for an address of the interface asked, or a
//! proxy entry there), whatever the sysctls say.

use std::net::IpAddr;

use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::{DesiredState, ProxyNeighbour};
use calico_dataplane::sim::{Hop, HostOutcome, NeighSource, Packet, SimDataplane, WireConfig};
use calico_dataplane::{Change, Dataplane, VethSpec, WorkloadPlumbing};
use futures::executor::block_on;

const HOST: &str = "calico-01";
const HOST_IP: &str = "172.31.250.1";
const HOST_IP6: &str = "fd5e:ca1:c0::1";
/// (namespace, endpoint id, address)
const D: (&str, &str, &str) = ("workload_D", "d0d0d0d0d0d0", "fd80:24e2:f998:72d6::d");
const E: (&str, &str, &str) = ("workload_E", "e0e0e0e0e0e0", "fd80:24e2:f998:72d6::e");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn iface(w: (&str, &str, &str)) -> String {
    format!("cali{}", &w.1[..11])
}

fn world() -> (SimDataplane, DesiredState) {
    let mut host = SimDataplane::new(
        HOST,
        WireConfig::eth0([
            format!("{HOST_IP}/24").parse().unwrap(),
            format!("{HOST_IP6}/64").parse().unwrap(),
        ]),
    );
    let mut keys: Vec<(String, String)> = [
        ("/calico/v1/Ready", "true"),
        ("/calico/v1/config/InterfacePrefix", "cali"),
        ("/calico/bgp/v1/global/as_num", "64511"),
        (
            "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64",
            r#"{"cidr": "fd80:24e2:f998:72d6::/64"}"#,
        ),
        ("/calico/v1/host/calico-01/bird_ip", HOST_IP),
        ("/calico/bgp/v1/host/calico-01/ip_addr_v4", HOST_IP),
        ("/calico/bgp/v1/host/calico-01/ip_addr_v6", HOST_IP6),
        ("/calico/v1/policy/profile/V6/tags", r#"["V6"]"#),
        (
            "/calico/v1/policy/profile/V6/rules",
            r#"{"inbound_rules": [{"src_tag": "V6"}], "outbound_rules": [{}]}"#,
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for w in [D, E] {
        host.add_namespace(w.0).unwrap();
        let spec = VethSpec {
            netns: w.0.to_string(),
            host_iface: iface(w),
            temp_iface: format!("tmp{}", &w.1[..11]),
            workload_iface: "eth1".to_string(),
            addrs: vec![format!("{}/128", w.2).parse().unwrap()],
            gateway_v4: None,
            gateway_v6: Some(HOST_IP6.parse().unwrap()),
        };
        let mac = block_on(host.add_veth(&spec)).unwrap();
        keys.push((
            format!("/calico/v1/host/{HOST}/workload/docker/{}/endpoint/{}", w.0, w.1),
            format!(
                r#"{{"state":"active","name":"{}","mac":"{mac}","profile_ids":["V6"],"ipv4_nets":[],"ipv6_nets":["{}/128"],"ipv4_gateway":"{HOST_IP}","ipv6_gateway":"{HOST_IP6}"}}"#,
                iface(w),
                w.2
            ),
        ));
    }
    let mut state = ClusterState::default();
    for (k, v) in &keys {
        state.apply(k, Some(v.as_bytes()));
    }
    let desired = compute(&state, HOST);
    block_on(host.apply(&desired)).unwrap();
    (host, desired)
}

fn ping(host: &SimDataplane, id: u16) -> HostOutcome {
    host.send_from_namespace(D.0, Packet::ping(ip(D.2), ip(E.2), id))
}

#[test]
fn each_v6_interface_gets_a_proxy_entry_for_the_gateway_and_observe_reports_it() {
    let (host, desired) = world();
    let want: Vec<ProxyNeighbour> = [D, E]
        .iter()
        .map(|w| ProxyNeighbour {
            ip: HOST_IP6.parse().unwrap(),
            dev: iface(*w),
        })
        .collect();
    assert_eq!(desired.proxy_neighbours, want.into_iter().collect());
    assert_eq!(host.observe_now(), desired);
}

#[test]
fn an_icmpv6_echo_resolves_the_gateway_through_proxy_ndp() {
    let (host, _) = world();
    let out = ping(&host, 1);
    assert!(
        matches!(out, HostOutcome::Delivered { .. }),
        "{}",
        out.explain()
    );
    let proxied = out.trace().iter().any(|h| {
        matches!(h, Hop::Neighbour { ns, ip: gw, source: NeighSource::ProxyArp { iface: by }, .. }
            if ns == D.0 && *gw == ip(HOST_IP6) && *by == iface(D))
    });
    assert!(proxied, "no proxy-NDP hop:\n{}", out.explain());
    assert!(out.explain().contains("proxy NDP by"), "{}", out.explain());
}

#[test]
fn without_the_proxy_entry_the_gateway_goes_unanswered() {
    let (mut host, mut desired) = world();
    desired.proxy_neighbours.clear();
    let report = block_on(host.apply(&desired)).unwrap();
    let removed = report
        .changes
        .iter()
        .filter(|c| matches!(c, Change::DelProxyNeighbour(_)))
        .count();
    assert_eq!(removed, 2, "{:?}", report.changes);
    // The sysctls are still on: proxy_ndp=1 alone answers nothing, as on Linux.
    let out = ping(&host, 2);
    match &out {
        HostOutcome::Dropped { reason, .. } => assert_eq!(
            reason,
            &format!(
                "no neighbour advertisement for {HOST_IP6} on eth1 in namespace {}: no proxy entry for {HOST_IP6} on {}",
                D.0,
                iface(D)
            )
        ),
        other => panic!("expected a drop, got {other}\n{}", other.explain()),
    }
}
