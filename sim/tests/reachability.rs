//! THE property: for random clusters and changes, every probe between every ordered pair of
//! workloads gets the verdict from the packet walk through the simulated kernels (rules as
//! rendered, routes as BGP carried them) that the policy oracle predicts from the data model.
//! And a walk that only counts its verdict (what-if's bulk walks) finds the same one.

use calico_core::iptables::IpFamily;
use calico_dataplane::sim::Detail;
use calico_sim::gen::{self, ClusterSpec};
use calico_sim::whatif::flows::Fabric;
use calico_sim::{ops, Oracle, Probe, World};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

async fn check(spec: &ClusterSpec) -> Result<(), TestCaseError> {
    let fail = |e: calico_sim::SimError| TestCaseError::fail(format!("{e}: {e:?}"));
    let mut world = World::with_mem_store();
    let ids = ops::build_cluster(&mut world, spec).await.map_err(fail)?;
    world.settle().await.map_err(fail)?;
    let store = world.store().clone();
    for op in &spec.ops {
        ops::apply_op(store.as_ref(), &ids, op)
            .await
            .map_err(fail)?;
    }
    world.settle().await.map_err(fail)?;

    let state = ops::cluster_state(store.as_ref()).await.map_err(fail)?;
    let oracle = Oracle::new(&state);
    let fabric = Fabric::of(&world);
    // Verdict-only walks get probe numbers far from the world's own (a few hundred here), so
    // neither meets the other's conntrack entries.
    let mut brief_seq = 10_000;
    for src in &spec.workloads {
        for dst in &spec.workloads {
            if src.name == dst.name {
                continue;
            }
            for probe in Probe::standard() {
                let walk = world.send(&src.name, &dst.name, probe).map_err(fail)?;
                let from = world.resolve(&src.name, None).map_err(fail)?;
                let to = world
                    .resolve_destination(&dst.name, Some(from.addr))
                    .map_err(fail)?;
                brief_seq += 1;
                let brief = fabric
                    .walk_probe(from, to, probe, brief_seq, Detail::Verdict)
                    .map_err(fail)?;
                prop_assert_eq!(
                    brief.verdict,
                    walk.verdict,
                    "verdict-only walk differs\n{}\ncluster: {:#?}",
                    walk,
                    spec
                );
                let expected = oracle.decide_workloads(&src.name, &dst.name, probe, IpFamily::V4);
                prop_assert_eq!(
                    walk.verdict,
                    expected.verdict,
                    "\n{}\noracle: {}\ncluster: {:#?}",
                    walk,
                    expected,
                    spec
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn packet_walk_agrees_with_the_oracle(spec in gen::cluster()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(check(&spec))?;
    }
}
