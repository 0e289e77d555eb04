//! Overlays on the simulator: a cross-host workload packet in a VXLAN or IPIP pool leaves
//! its host wrapped in an outer host→host packet (UDP 4789, or IP protocol 4), is taken out
//! by the receiving host's tunnel device, and the walk's trace shows both tunnel hops; the
//! tunnel routes are the agent's (not BIRD's); IPIP from a machine that is no Calico host is
//! dropped by `cali-INPUT`.

use std::sync::Arc;

use calico_backends::{MemStore, Store};
use calico_core::model::{MacAddr, Protocol};
use calico_dataplane::sim::{
    Hop, HostOutcome, Inner, Packet, RouteProto, Verdict as NfVerdict, L4, ROOT_NS,
};
use calico_sim::scenario::{parse, Runner, ScenarioTarget};
use calico_sim::{Probe, Verdict};

const SETUP: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
host1$ calicoctl pool add 10.77.0.0/16 --FLAG
workload host1 workload_A
workload host2 workload_B
host1$ calicoctl container add workload_A 10.77.1.1
host2$ calicoctl container add workload_B 10.77.2.1
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
settle
";

async fn world_with(flag: &str) -> Runner {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut runner = Runner::new(store);
    let lines = parse(&SETUP.replace("FLAG", flag)).unwrap();
    runner.run(&lines, |_| {}).await.unwrap();
    runner
}

fn tunnel_hops(walk: &calico_sim::Walk) -> Vec<(String, String)> {
    walk.hops()
        .filter_map(|(host, _, hop)| match hop {
            Hop::Tunnel { detail } => Some((host.to_string(), detail.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn vxlan_carries_workload_traffic_in_udp_4789_both_ways() {
    let runner = world_with("vxlan").await;
    let world = runner.world();
    let walk = world
        .send("workload_A", "workload_B", Probe::ping())
        .unwrap();
    assert_eq!(walk.verdict, Verdict::Allow, "{walk}");
    let hops = tunnel_hops(&walk);
    // Request: encapsulated on host1, decapsulated on host2; the reply the other way.
    assert_eq!(hops.len(), 4, "{walk}");
    assert_eq!(hops[0].0, "host1");
    assert!(hops[0].1.contains("VXLAN vni 4096"), "{}", hops[0].1);
    assert!(hops[0].1.contains("udp 172.31.250.1:"), "{}", hops[0].1);
    assert!(hops[0].1.contains("-> 172.31.250.2:4789"), "{}", hops[0].1);
    assert_eq!(
        hops[1],
        ("host2".into(), "decapsulated by vxlan.calico".into())
    );
    assert_eq!(hops[2].0, "host2");
    assert_eq!(
        hops[3],
        ("host1".into(), "decapsulated by vxlan.calico".into())
    );
    // On the wire only host addresses: the frame host1 transmits is the outer packet.
    let wire = walk
        .legs
        .iter()
        .find_map(|leg| match &leg.outcome {
            HostOutcome::Transmitted { packet, .. } if leg.host == "host1" => Some(*packet),
            _ => None,
        })
        .unwrap();
    assert_eq!(wire.dst.to_string(), "172.31.250.2");
    assert_eq!(wire.protocol, Protocol::Udp);
    assert_eq!(
        wire.inner.map(|i| i.dst.to_string()),
        Some("10.77.2.1".into())
    );

    let routes = world.host("host1").unwrap().dataplane().routes(ROOT_NS);
    let to_b: Vec<_> = routes
        .iter()
        .filter(|r| {
            r.dst
                .contains(&"10.77.2.1".parse::<std::net::IpAddr>().unwrap())
        })
        .collect();
    assert!(
        to_b.iter().any(|r| r.proto == RouteProto::Overlay
            && r.dev.as_deref() == Some("vxlan.calico")
            && r.onlink),
        "{to_b:?}"
    );
    assert!(
        !routes.iter().any(|r| r.proto == RouteProto::Bird
            && r.dst.to_string().starts_with("10.77.")
            && !r.is_blackhole()),
        "BIRD installed a route of the VXLAN pool: {routes:?}"
    );
}

#[tokio::test]
async fn ipip_carries_workload_traffic_and_drops_ipip_from_strangers() {
    let runner = world_with("ipip").await;
    let world = runner.world();
    let walk = world
        .send("workload_A", "workload_B", Probe::ping())
        .unwrap();
    assert_eq!(walk.verdict, Verdict::Allow, "{walk}");
    let hops = tunnel_hops(&walk);
    assert_eq!(hops.len(), 4, "{walk}");
    assert!(
        hops[0].1.starts_with("encapsulated in IPIP on tunl0"),
        "{}",
        hops[0].1
    );
    assert!(
        hops[0].1.contains("172.31.250.1 -> 172.31.250.2"),
        "{}",
        hops[0].1
    );
    assert_eq!(hops[1], ("host2".into(), "decapsulated by tunl0".into()));

    // The same inner packet, tunnelled from an address that is no Calico host.
    let host2 = world.host("host2").unwrap().dataplane();
    let inner = Packet::ping(
        "10.77.1.1".parse().unwrap(),
        "10.77.2.1".parse().unwrap(),
        4242,
    );
    let outer = |src: &str| Packet {
        src: src.parse().unwrap(),
        dst: "172.31.250.2".parse().unwrap(),
        protocol: Protocol::Number(4),
        l4: L4::Opaque,
        inner: Some(Inner::of(&inner)),
    };
    let stranger = host2.receive_on_wire(outer("172.31.250.9"), MacAddr([2, 0, 0, 0, 0, 9]));
    let rule = stranger.dropping_rule().map(|r| r.to_string());
    assert!(
        rule.as_deref()
            .is_some_and(|r| r.contains("drop ipip from unknown hosts")),
        "{stranger}"
    );
    let peer = host2.receive_on_wire(outer("172.31.250.1"), MacAddr([2, 0, 0, 0, 0, 1]));
    assert!(peer.is_delivered(), "{peer}");
    assert!(
        peer.decisions().all(|d| d.verdict != NfVerdict::Drop),
        "{peer}"
    );
}
