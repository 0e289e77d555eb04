//! `calicoctl what-if` on the embedded sled datastore, through the real binaries: the seed is
//! written into a sled database in a temp data dir; the `calicoctl` binary (with
//! `CALICO_DATASTORE=sled`) snapshots it, answers as text and as JSON with the matrix drawn
//! to an SVG file, and leaves every key and value as it was.

mod whatif_support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use calico_backends::proxy::database_path;
use calico_backends::{SledStore, Store};
use calico_sim::scenario::{self, Runner, ScenarioTarget};
use whatif_support::{calicoctl, flows_allowed_before, text, SEED};

fn run(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(calicoctl())
        .args(args)
        .env("CALICO_DATASTORE", "sled")
        .env("CALICO_DATA_DIR", data_dir)
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("ETCD_AUTHORITY")
        .output()
        .unwrap()
}

/// Every key and value under `/calico/`, and the store's revision, read by opening the
/// database (and closing it again, so calicoctl can open it).
async fn contents(data_dir: &Path) -> (Vec<(String, Vec<u8>)>, i64) {
    let store = SledStore::open(database_path(data_dir)).unwrap();
    let (kvs, revision) = store.list("/calico/").await.unwrap();
    let kvs = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    (kvs, revision)
}

#[tokio::test]
async fn what_if_reads_sled_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(database_path(dir.path())).unwrap());
        let mut cluster = Runner::new(store);
        cluster
            .run(&scenario::parse(SEED).unwrap(), |_| {})
            .await
            .unwrap();
    }
    let before = contents(dir.path()).await;

    let out = run(
        dir.path(),
        &[
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
        ],
    );
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

    // JSON on stdout and the matrix drawn to a file, in one run.
    let svg = dir.path().join("matrix.svg");
    let svg_arg = format!("svg={}", svg.display());
    let out = run(
        dir.path(),
        &[
            "--hostname",
            "host2",
            "what-if",
            "-o",
            "json",
            "-o",
            &svg_arg,
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
    assert_eq!(json["changes"].as_array().unwrap().len(), 2, "{json}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("workload_B"), "{picture}");

    // Nothing was written: every key, value and the revision are as before.
    assert_eq!(contents(dir.path()).await, before);
}
