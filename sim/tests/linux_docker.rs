//! The seed, verbatim (`sim/scenarios/seed.scenario`), with real Docker containers: a dockerd
//! of the test's own on a non-default socket (`DOCKER_HOST`), `docker run --net=none
//! --name=workload_A -tid` workloads, two namespaced hosts with a real etcd, calico-node and
//! BIRD. calicoctl finds each container by name through Docker alone: no connectivity before
//! the profile, A and B talk after `profile set`, the third container is cut off, pings run
//! inside the containers (`docker exec ... ping`), and everything is gone afterwards.

mod docker_support;
mod linux_common;

use std::time::Instant;

use calico_sim::linux::LinuxCluster;
use calico_sim::scenario::{parse, ScenarioTarget};
use docker_support::{DockerEngine, DockerSeed};

const SEED: &str = include_str!("../scenarios/seed.scenario");

/// The engine, or `None` (with the reason printed) where dockerd cannot start here; under
/// `CI` that is a failure, as for the other Linux tests.
fn engine(test: &str) -> Option<DockerEngine> {
    match DockerEngine::start() {
        Ok(engine) => Some(engine),
        Err(reason) => {
            let msg = format!("{test}: dockerd cannot start here: {reason}");
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("skipping {msg}");
            None
        }
    }
}

#[tokio::test]
async fn seed_with_docker_containers_on_a_non_default_socket() {
    let test = "seed_with_docker_containers_on_a_non_default_socket";
    let Some(config) = linux_common::setup(test) else {
        return;
    };
    let started = Instant::now();
    let Some(engine) = engine(test) else {
        return;
    };
    assert_ne!(engine.host(), "unix:///var/run/docker.sock");
    engine.import_busybox().unwrap_or_else(|e| panic!("{e}"));
    let engine_ready = started.elapsed();
    let cluster = LinuxCluster::new(config).unwrap_or_else(|e| panic!("{e}"));
    let mut seed = DockerSeed::new(cluster, engine);

    let lines = parse(SEED).unwrap_or_else(|e| panic!("the seed does not parse: {e}"));
    let mut reports = Vec::new();
    let scenario_started = Instant::now();
    if let Err(e) = seed.run(&lines, |r| reports.push(r.clone())).await {
        panic!(
            "{e}\nlines before it:\n{reports:#?}\n{}",
            seed.diagnostics().await
        );
    }
    let scenario = scenario_started.elapsed();

    // Every expect ran on real traffic with the verdict the seed asks for.
    let verdicts: Vec<(&str, &str)> = reports
        .iter()
        .filter(|r| r.text.starts_with("expect"))
        .map(|r| {
            let want = r.text.rsplit(' ').next().unwrap_or_default();
            let got = r.detail.split(':').next().unwrap_or_default();
            (want, got)
        })
        .collect();
    assert_eq!(verdicts.len(), 9, "{reports:#?}");
    assert!(
        verdicts.iter().all(|(want, got)| want == got),
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts.iter().filter(|(w, _)| *w == "allow").count(),
        3,
        "{verdicts:?}"
    );

    // The endpoints are Docker's: orchestrator `docker`, the full container id.
    for (host, name, ip, profile) in [
        ("host1", "workload_A", "192.168.1.1", "PROF_A_B"),
        ("host2", "workload_B", "192.168.1.2", "PROF_A_B"),
        ("host1", "workload_C", "192.168.1.3", ""),
    ] {
        let id = seed.engine.id(name).unwrap_or_else(|e| panic!("{e}"));
        let out = seed
            .calicoctl(host, &["container", name, "endpoint", "show"])
            .await;
        assert!(out.success, "{}", out.stderr);
        let row = out
            .stdout
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("no endpoint of container {id} in:\n{}", out.stdout));
        assert!(
            row.contains("docker") && row.contains(ip) && row.contains(host),
            "{row}"
        );
        assert_eq!(row.contains("PROF_A_B"), !profile.is_empty(), "{row}");
    }

    // Routes to the other host's containers were learnt over BGP: host1 owns the block
    // 192.168.1.0/26 (one aggregated route on host2), host2's 192.168.1.2 is borrowed from it
    // (its own /32 on host1). The route the kernel uses is the most specific that matches.
    let h1 = seed.cluster.host_netns("host1").unwrap().to_string();
    let h2 = seed.cluster.host_netns("host2").unwrap().to_string();
    for (ns, addr, want) in [
        (&h1, "192.168.1.2", "192.168.1.2 via 172.31.250.2"),
        (&h2, "192.168.1.1", "192.168.1.0/26 via 172.31.250.1"),
        (&h2, "192.168.1.3", "192.168.1.0/26 via 172.31.250.1"),
    ] {
        let (ok, routes) = linux_common::exec(ns, "ip", &["route", "show", "match", addr]);
        assert!(ok);
        let used = routes
            .lines()
            .max_by_key(|line| {
                let dst = line.split_whitespace().next().unwrap_or_default();
                match dst.split_once('/') {
                    Some((_, len)) => len.parse::<u8>().unwrap_or(0),
                    None if dst == "default" => 0,
                    None => 32,
                }
            })
            .unwrap_or_default();
        assert!(
            used.starts_with(want) && used.contains("proto bird"),
            "{ns}: the route used for {addr} is not BGP-learnt as {want:?}: {routes:?}"
        );
    }

    // A container the engine does not have, and an engine that is not there: one line each,
    // naming the container and the socket asked; nothing is written.
    let socket = seed.engine.host().trim_start_matches("unix://").to_string();
    let out = seed
        .calicoctl("host1", &["container", "add", "workload_Z", "192.168.1.9"])
        .await;
    assert!(!out.success, "{}", out.stdout);
    let err = out.stderr.trim();
    assert!(
        err.lines().count() == 1 && err.contains("workload_Z") && err.contains(&socket),
        "{err}"
    );
    let gone = format!("{socket}.absent");
    let out = seed
        .calicoctl_with(
            "host1",
            &format!("unix://{gone}"),
            &["container", "workload_A", "endpoint", "show"],
        )
        .await;
    assert!(!out.success, "{}", out.stdout);
    let err = out.stderr.trim();
    assert!(
        err.lines().count() == 1 && err.contains("workload_A") && err.contains(&gone),
        "{err}"
    );
    let out = seed.calicoctl("host1", &["endpoint", "show"]).await;
    assert!(!out.stdout.contains("192.168.1.9"), "{}", out.stdout);

    // Everything this test started is gone: agents, BIRD, namespaces, etcd, containers,
    // dockerd, containerd and its shims, cgroups, temp dirs.
    let teardown_started = Instant::now();
    let DockerSeed {
        mut cluster,
        mut engine,
        ..
    } = seed;
    let cluster_errors = cluster.teardown();
    assert!(cluster_errors.is_empty(), "{cluster_errors:?}");
    let engine_errors = engine.teardown();
    assert!(engine_errors.is_empty(), "{engine_errors:?}");
    assert_eq!(engine.own_processes(), Vec::<u32>::new());
    eprintln!(
        "{test}: engine up and image imported in {engine_ready:?}, seed ran in {scenario:?}, \
         teardown took {:?}, {:?} in all",
        teardown_started.elapsed(),
        started.elapsed()
    );
}
