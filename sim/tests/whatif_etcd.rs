//! `calicoctl what-if` against a real etcd (started by this test on 127.0.0.1), through the
//! real binaries: the seed's two hosts are set up with calicoctl's own code and their
//! agents (calico-node's reconcile loop over simulated kernels) watching that etcd; the
//! `calicoctl` binary then snapshots etcd and hands the question to `calico-sim what-if`.
//! The answers name the flows and rules, and etcd's revision does not move.

mod whatif_support;

#[path = "../../backends/tests/support/etcd_server.rs"]
mod etcd_server;

use std::process::{Command, Output};
use std::sync::Arc;

use calico_backends::{EtcdConfig, EtcdStore, Store};
use calico_sim::scenario::{self, Runner, ScenarioTarget};
use etcd_server::EtcdServer;
use whatif_support::{calicoctl, flows_allowed_before, text, SEED};

fn run(etcd: &EtcdServer, args: &[&str]) -> Output {
    Command::new(calicoctl())
        .args(args)
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .env_remove("ETCD_AUTHORITY")
        .env_remove("CALICO_DATASTORE")
        .output()
        .unwrap()
}

/// Every key and value under `/calico/`, and etcd's revision.
async fn contents(store: &EtcdStore) -> (Vec<(String, Vec<u8>)>, i64) {
    let (kvs, revision) = store.list("/calico/").await.unwrap();
    let kvs = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    (kvs, revision)
}

#[tokio::test]
async fn what_if_reads_etcd_answers_through_the_simulator_and_writes_nothing() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let store = Arc::new(
        EtcdStore::connect(EtcdConfig::new(vec![etcd.endpoint()]))
            .await
            .unwrap(),
    );
    let mut cluster = Runner::new(store.clone());
    cluster
        .run(&scenario::parse(SEED).unwrap(), |_| {})
        .await
        .unwrap();
    let before = contents(&store).await;

    let deny_icmp = [
        "--hostname",
        "host1",
        "what-if",
        "--",
        "profile",
        "PROF_A_B",
        "rule",
        "add",
        "inbound",
        "--at=1",
        "deny",
        "icmp",
    ];
    let out = run(&etcd, &deny_icmp);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{} (a stale calicoctl? `cargo build -p calico-cli --bins`)",
        text(&out.stderr)
    );
    let flows = flows_allowed_before(&stdout);
    assert_eq!(
        flows,
        [
            "workload_A -> workload_B icmp: allow -> deny",
            "workload_B -> workload_A icmp: allow -> deny"
        ],
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("DROP by rule 2 of cali-pri-PROF_A_B: -A cali-pri-PROF_A_B -p icmp")
            .count(),
        2,
        "the new rule decides: {stdout}"
    );
    assert!(!stdout.contains("tcp"), "no TCP flow: {stdout}");
    assert!(
        stdout.contains("2 newly denied, 0 newly allowed"),
        "{stdout}"
    );

    // As a CI gate: exit 3 when flows are lost, 0 when none are gained.
    let mut gate = deny_icmp.to_vec();
    gate.insert(3, "--fail-on=lost");
    let out = run(&etcd, &gate);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("allow -> deny"));
    gate[3] = "--fail-on=gained";
    assert_eq!(run(&etcd, &gate).status.code(), Some(0));

    // Taking workload_B out of the profile, on its host, as JSON.
    let out = run(
        &etcd,
        &[
            "--hostname",
            "host2",
            "what-if",
            "-o",
            "json",
            "--",
            "container",
            "workload_B",
            "profile",
            "remove",
            "PROF_A_B",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = json["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{json}");
    for change in changes {
        let ends = [&change["source"], &change["destination"]];
        assert!(ends.contains(&&serde_json::json!("workload_B")), "{change}");
        assert_eq!(
            (&change["before"], &change["after"]),
            (&"allow".into(), &"deny".into())
        );
    }

    // A bad probe is a one-line error, exit 1.
    let out = run(
        &etcd,
        &["what-if", "--probe=tcp", "--", "profile", "add", "X"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid probe \"tcp\""), "{stderr}");

    // Nothing was written: every key, value and the revision are as before.
    assert_eq!(contents(&store).await, before);
}
