//! The seed's two-host lifecycle (seed/000: node start, `--net=none` workloads, container add,
//! profile add, profile set) on a simulated world, driven through the datastore and the
//! workload plumbing directly, checking routes, BGP and reachability at every step.

use std::net::{IpAddr, Ipv4Addr};

use calico_core::model::EndpointId;
use calico_dataplane::sim::{RouteProto, ROOT_NS};
use calico_sim::{ops, Probe, Verdict, World};
use ipnet::IpNet;

const HOST1_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 2);
const HOST2_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 3);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// `(dst, proto, via)` of every /32 in the host's main table.
fn host_routes(world: &World, host: &str) -> Vec<(IpNet, RouteProto, Option<IpAddr>)> {
    world
        .host(host)
        .unwrap()
        .dataplane()
        .routes(ROOT_NS)
        .into_iter()
        .filter(|r| r.dst.prefix_len() == 32)
        .map(|r| (r.dst, r.proto, r.via))
        .collect()
}

async fn container_add(world: &World, host: &str, workload: &str, ip: Ipv4Addr) -> EndpointId {
    let h = world.host(host).unwrap();
    ops::container_add(
        world.store().as_ref(),
        h.plumbing(),
        host,
        h.ip(),
        workload,
        ip,
    )
    .await
    .unwrap()
}

fn verdict(world: &World, src: &str, dst: &str, probe: Probe) -> Verdict {
    world.send(src, dst, probe).unwrap().verdict
}

#[tokio::test]
async fn seed_lifecycle_on_two_hosts() {
    let mut world = World::with_mem_store();
    world.add_host("host1", HOST1_IP).unwrap();
    world.add_host("host2", HOST2_IP).unwrap();

    // 1. calicoctl node on both hosts.
    let store = world.store().clone();
    ops::node_start(store.as_ref(), "host1", HOST1_IP)
        .await
        .unwrap();
    ops::node_start(store.as_ref(), "host2", HOST2_IP)
        .await
        .unwrap();
    world.start_agent("host1").unwrap();
    world.start_agent("host2").unwrap();
    let report = world.settle().await.unwrap();
    assert!(report.dataplane_changes > 0, "{report:?}");
    assert_eq!(host_routes(&world, "host1"), vec![]);
    assert_eq!(host_routes(&world, "host2"), vec![]);
    let peers = world.bgp_peers("host1").unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].protocol, "Mesh_172_31_250_3");
    assert_eq!(peers[0].peer_type(), "node-to-node mesh");
    assert_eq!(peers[0].info(), "Established");

    // 2. docker run --net=none.
    world.add_workload("host1", "workload_A").unwrap();
    world.add_workload("host2", "workload_B").unwrap();

    // 3. calicoctl container add.
    let a = container_add(&world, "host1", "workload_A", Ipv4Addr::new(192, 168, 1, 1)).await;
    let b = container_add(&world, "host2", "workload_B", Ipv4Addr::new(192, 168, 1, 2)).await;
    world.settle().await.unwrap();
    let h1 = host_routes(&world, "host1");
    assert_eq!(
        h1,
        vec![
            (net("192.168.1.1/32"), RouteProto::Calico, None),
            (
                net("192.168.1.2/32"),
                RouteProto::Bird,
                Some(IpAddr::V4(HOST2_IP))
            ),
        ]
    );
    let h2 = host_routes(&world, "host2");
    assert_eq!(
        h2,
        vec![
            (
                net("192.168.1.1/32"),
                RouteProto::Bird,
                Some(IpAddr::V4(HOST1_IP))
            ),
            (net("192.168.1.2/32"), RouteProto::Calico, None),
        ]
    );
    let walk = world
        .send("workload_A", "workload_B", Probe::ping())
        .unwrap();
    assert_eq!(walk.verdict, Verdict::Deny, "{walk}");
    let deciding = walk.deciding.clone().unwrap_or_default();
    assert!(deciding.contains("default drop if no match"), "{walk}");
    assert!(deciding.contains("cali-"), "{walk}");

    // 4. calicoctl profile add PROF_A_B.
    ops::profile_add(store.as_ref(), "PROF_A_B").await.unwrap();
    world.settle().await.unwrap();
    assert_eq!(
        verdict(&world, "workload_A", "workload_B", Probe::ping()),
        Verdict::Deny
    );

    // 5. calicoctl container workload_A/B profile set PROF_A_B.
    let prof = vec!["PROF_A_B".to_string()];
    ops::set_profiles(store.as_ref(), &a, &prof).await.unwrap();
    ops::set_profiles(store.as_ref(), &b, &prof).await.unwrap();
    world.settle().await.unwrap();
    for probe in [Probe::ping(), Probe::tcp(80)] {
        let walk = world.send("workload_A", "workload_B", probe).unwrap();
        assert_eq!(walk.verdict, Verdict::Allow, "{walk}");
        assert!(walk.deciding.is_some(), "{walk}");
        let walk = world.send("workload_B", "workload_A", probe).unwrap();
        assert_eq!(walk.verdict, Verdict::Allow, "{walk}");
        // Addresses work as well as names.
        assert_eq!(
            verdict(&world, "192.168.1.1", "192.168.1.2", probe),
            Verdict::Allow
        );
    }

    // A third workload on host1 without the profile is cut off both ways.
    world.add_workload("host1", "workload_C").unwrap();
    container_add(&world, "host1", "workload_C", Ipv4Addr::new(192, 168, 1, 3)).await;
    world.settle().await.unwrap();
    for probe in [Probe::ping(), Probe::tcp(80)] {
        for (src, dst) in [
            ("workload_C", "workload_A"),
            ("workload_A", "workload_C"),
            ("workload_C", "workload_B"),
            ("workload_B", "workload_C"),
        ] {
            let walk = world.send(src, dst, probe).unwrap();
            assert_eq!(walk.verdict, Verdict::Deny, "{walk}");
        }
    }

    // Cutting the BGP session withdraws the learned routes: no route any more.
    world.cut_session("host1", "host2");
    world.settle().await.unwrap();
    assert!(world
        .host("host1")
        .unwrap()
        .dataplane()
        .bgp_routes()
        .is_empty());
    assert_eq!(world.bgp_peers("host1").unwrap()[0].bird_state(), "start");
    let walk = world
        .send("workload_A", "workload_B", Probe::ping())
        .unwrap();
    assert_eq!(walk.verdict, Verdict::Deny, "{walk}");
    assert!(
        walk.deciding
            .clone()
            .unwrap_or_default()
            .contains("no route"),
        "{walk}"
    );

    world.heal_session("host1", "host2");
    world.settle().await.unwrap();
    assert_eq!(
        verdict(&world, "workload_A", "workload_B", Probe::ping()),
        Verdict::Allow
    );
}
