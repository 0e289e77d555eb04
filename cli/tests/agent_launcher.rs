//! `ProcessNodeControl` against the real `calico-node` binary on a sled data dir: start
//! detaches it with a pid file, calicoctl's `open_local_store` then reaches the store through
//! the agent's socket, stop sends SIGTERM and the database is free again.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use calico_backends::proxy::{open_local_store, socket_path};
use calico_cli::agent::launcher::ProcessNodeControl;
use calico_cli::ctl::{NodeControl, NodeStartOptions};

fn control(data_dir: &Path) -> ProcessNodeControl {
    let mut control = ProcessNodeControl::new(data_dir);
    control.binary = Some(env!("CARGO_BIN_EXE_calico-node").into());
    control.extra_args = ["--datastore", "sled", "--dataplane", "sim"]
        .map(String::from)
        .to_vec();
    control
}

fn options() -> NodeStartOptions {
    NodeStartOptions {
        hostname: "host1".into(),
        ip: "172.31.250.1".parse().unwrap(),
        ip6: None,
        foreground: false,
        log_dir: None,
        policy_only: false,
    }
}

fn pid(control: &ProcessNodeControl) -> u32 {
    std::fs::read_to_string(control.pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_serves_the_store_and_stop_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path());
    assert!(!control.status().await.unwrap().running);

    control.start(&options()).await.unwrap();
    let status = control.status().await.unwrap();
    assert!(status.running, "{status:?}");
    let first_pid = pid(&control);
    assert!(status.detail.contains(&first_pid.to_string()), "{status:?}");

    // calicoctl while the agent runs: through the socket (sled allows one process).
    wait_for(|| socket_path(dir.path()).exists()).await;
    let store = open_local_store(dir.path()).await.unwrap();
    assert!(format!("{store:?}").contains("RemoteStore"), "{store:?}");
    store
        .put("/calico/v1/Ready", b"true".to_vec())
        .await
        .unwrap();
    drop(store);

    // Starting again replaces the running agent.
    control.start(&options()).await.unwrap();
    let second_pid = pid(&control);
    assert_ne!(first_pid, second_pid);
    assert!(!alive(first_pid), "the first agent was stopped");

    control.stop().await.unwrap();
    assert!(!control.status().await.unwrap().running);
    assert!(!control.pid_file().exists());
    assert!(
        !socket_path(dir.path()).exists(),
        "the socket is removed on SIGTERM"
    );

    // The database is free again and kept what was written through the agent.
    let store = open_local_store(dir.path()).await.unwrap();
    assert!(format!("{store:?}").contains("SledStore"), "{store:?}");
    let ready = store.get("/calico/v1/Ready").await.unwrap().unwrap();
    assert_eq!(ready.value, b"true");

    let log = std::fs::read_to_string(&control.log_file).unwrap();
    assert!(log.contains("calico-node starting"), "{log}");
}

#[tokio::test]
async fn stop_without_an_agent_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path());
    std::fs::write(control.pid_file(), "999999999\n").unwrap();
    control.stop().await.unwrap();
    assert!(!control.pid_file().exists(), "a stale pid file is removed");
}

#[tokio::test]
async fn the_binary_prints_a_dry_run_plan_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_local_store(dir.path()).await.unwrap();
        for (key, value) in [
            ("/calico/v1/Ready", "true"),
            ("/calico/v1/config/InterfacePrefix", "cali"),
            ("/calico/v1/host/host1/bird_ip", "172.31.250.1"),
            ("/calico/bgp/v1/host/host1/ip_addr_v4", "172.31.250.1"),
        ] {
            store.put(key, value.as_bytes().to_vec()).await.unwrap();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_calico-node"))
        .args([
            "--hostname",
            "host1",
            "--datastore",
            "sled",
            "--dataplane",
            "sim",
        ])
        .arg("--dry-run")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--log-file")
        .arg(dir.path().join("node.log"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    // Read the first line, then keep draining until the agent exits.
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first_tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        lines.count()
    });
    let first = first_rx.recv().unwrap();
    assert!(first.starts_with("host1: would "), "{first}");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(log.contains("dry run"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

/// Whether `pid` is a live, non-zombie process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Polls `cond` (a hang guard bounded at 10 s, not a timing assertion).
async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 10 s");
}
