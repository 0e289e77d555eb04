//! `ProcessNodeControl` against the real `calico-node` binary on a sled data dir: start
//! detaches it with a pid file, calicoctl's `open_local_store` then reaches the store through
//! the agent's socket, stop sends SIGTERM and the database is free again.

use std::path::Path;
use std::process::Command;

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

#[test]
fn the_linux_dataplane_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_calico-node"))
        .args(["--hostname", "h", "--dataplane", "linux", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("linux dataplane not available yet"),
        "{stderr}"
    );
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
