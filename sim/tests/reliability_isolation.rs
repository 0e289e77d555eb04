//! Anti-spoofing and isolation on the simulator (the Linux twins are in
//! `linux_spoofing.rs`): a workload sending with another workload's address is dropped on
//! its own host; with DefaultEndpointToHostAction DROP a workload reaches no port of its
//! host while its peers still reach it. (The deleted-profile case is the scenario
//! `sim/scenarios/isolation.scenario`, run on both dataplanes.)

use std::net::IpAddr;
use std::sync::Arc;

use calico_backends::{MemStore, Store};
use calico_dataplane::sim::{HostOutcome, Packet};
use calico_sim::scenario::{self, Runner, ScenarioTarget};
use calico_sim::walk::Walk;

/// A, B and C in one profile, so only spoofing or host protection can drop C's packets.
pub const SETUP: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
workload host1 workload_A
workload host2 workload_B
workload host1 workload_C
host1$ calicoctl container add workload_A 192.168.1.1
host2$ calicoctl container add workload_B 192.168.1.2
host1$ calicoctl container add workload_C 192.168.1.3
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
host1$ calicoctl container workload_C profile set PROF_A_B
expect workload_C -> workload_B icmp allow
expect workload_A -> host1 tcp/22 allow
";

/// What must hold once host1's DefaultEndpointToHostAction is DROP (DNS and DHCP to the
/// host stay open, as Felix leaves them).
pub const HOST_DROP: &str = "\
expect workload_A -> host1 tcp/22 deny
expect workload_A -> host1 udp/8053 deny
expect workload_A -> host1 udp/53 allow
expect workload_A -> host1 icmp deny
expect workload_C -> host1 tcp/8179 deny
expect workload_A -> workload_B icmp allow
expect workload_B -> workload_A tcp/80 allow
";

async fn run(runner: &mut Runner, text: &str) {
    let lines = scenario::parse(text).unwrap();
    let mut seen = Vec::new();
    if let Err(e) = runner.run(&lines, |r| seen.push(r.line)).await {
        panic!("{e}\nafter: {seen:#?}");
    }
}

/// Whether the request of `walk` was delivered into namespace `ns`.
fn delivered_to(walk: &Walk, ns: &str) -> bool {
    walk.legs.iter().any(|leg| {
        matches!(&leg.outcome, HostOutcome::Delivered { ns: got, .. } if got == ns)
            && leg.direction == calico_sim::walk::Direction::Request
    })
}

#[tokio::test]
async fn a_forged_source_address_is_dropped_on_the_sending_host() {
    let mut runner = Runner::new(Arc::new(MemStore::new()));
    run(&mut runner, SETUP).await;
    let world = runner.world();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let honest = world
        .send_from(
            "workload_C",
            Packet::icmp(ip("192.168.1.3"), ip("192.168.1.2"), 8, 0),
        )
        .unwrap();
    assert!(
        delivered_to(&honest, "workload_B"),
        "control: C as itself must reach B\n{honest}"
    );
    for forged in ["192.168.1.1", "192.168.1.2", "192.168.1.77", "10.0.0.1"] {
        for packet in [
            Packet::icmp(ip(forged), ip("192.168.1.2"), 8, 0),
            Packet::tcp(ip(forged), ip("192.168.1.2"), 40000, 80),
            Packet::udp(ip(forged), ip("192.168.1.2"), 40000, 53),
        ] {
            let walk = world.send_from("workload_C", packet).unwrap();
            assert!(
                !delivered_to(&walk, "workload_B"),
                "C's packet forged from {forged} reached B:\n{walk}"
            );
            let dropped_at_home = walk.legs.first().is_some_and(|leg| {
                leg.host == "host1" && matches!(leg.outcome, HostOutcome::Dropped { .. })
            });
            assert!(dropped_at_home, "not dropped on C's own host:\n{walk}");
        }
    }
}

#[tokio::test]
async fn endpoint_to_host_drop_closes_every_host_port_and_nothing_else() {
    let store = Arc::new(MemStore::new());
    let mut runner = Runner::new(store.clone());
    run(&mut runner, SETUP).await;
    store
        .put(
            "/calico/v1/host/host1/config/DefaultEndpointToHostAction",
            b"DROP".to_vec(),
        )
        .await
        .unwrap();
    run(&mut runner, HOST_DROP).await;
}
