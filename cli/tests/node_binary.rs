//! `calicoctl node` options and the sled lock, through the real binaries on a temp data dir
//! (no agent is started here, so no root is needed): `--runtime=none` configures the host and
//! prints how to run calico-node, image options are warned about or refused, and a command
//! that meets the database held by another process waits for it, or says who holds it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use calico_backends::proxy::LOCK_WAIT;
use calico_backends::SledStore;

fn calicoctl(data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calicoctl"));
    for var in ["ETCD_ENDPOINTS", "ETCD_AUTHORITY", "CALICO_DATASTORE"] {
        cmd.env_remove(var);
    }
    cmd.env("CALICO_DATA_DIR", data_dir)
        .args(["--hostname", "h1"])
        .args(args);
    cmd
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    calicoctl(data_dir, args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn runtime_none_configures_the_host_and_prints_the_agent_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "node",
            "--ip=172.31.250.1",
            "--runtime=none",
            "--node-image=calico/node:v0.10.0",
            "--no-pull",
            "--log-dir",
            "/var/log/calico-test-unused",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("calico-node was not started"), "{stdout}");
    assert!(
        stdout.contains("calico-node --hostname h1")
            && stdout.contains("--log-dir /var/log/calico-test-unused")
            && !stdout.contains("--log-file"),
        "the foreground command with the chosen log dir:\n{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Warning: --node-image=calico/node:v0.10.0 ignored")
            && stderr.contains("Warning: --no-pull ignored"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("calico-node.pid").exists(),
        "no agent was started"
    );
    // The host is registered all the same (the database is free: nobody serves it).
    let out = run(dir.path(), &["node", "show"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("172.31.250.1"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn options_without_meaning_here_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    for (option, named) in [
        ("--libnetwork", "--libnetwork"),
        (
            "--libnetwork-image=calico/node-libnetwork",
            "--libnetwork-image",
        ),
        ("--kubernetes", "--kubernetes"),
        ("--kube-plugin-version=v0.1", "--kube-plugin-version"),
        ("--rkt", "--rkt"),
        ("--backend=gobgp", "gobgp"),
        ("--runtime=rkt", "rkt"),
    ] {
        let out = run(
            dir.path(),
            &["node", "--ip=172.31.250.1", "--runtime=none", option],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{option}: {}",
            text(&out.stdout)
        );
        let err = text(&out.stderr);
        assert!(
            err.starts_with("Error: ") && err.contains(named) && err.lines().count() == 1,
            "{option}: {err}"
        );
    }
    let out = run(dir.path(), &["node", "show"]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "no host was registered:\n{}",
        text(&out.stdout)
    );
}

#[test]
fn a_command_waits_for_a_briefly_held_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("datastore");
    let held = SledStore::open(&db).unwrap();
    let child = calicoctl(dir.path(), &["profile", "add", "P1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Released well within LOCK_WAIT (a margin of seconds, not a timing assertion).
    std::thread::sleep(LOCK_WAIT / 10);
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(dir.path(), &["profile", "show"]);
    assert!(text(&out.stdout).contains("P1"), "{}", text(&out.stdout));
}

#[test]
fn a_database_held_without_a_server_is_a_clear_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let _held = SledStore::open(dir.path().join("datastore")).unwrap();
    let out = run(dir.path(), &["profile", "add", "P1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("held by another process")
            && err.contains("calico-node")
            && err.contains("calico.sock")
            && !err.contains("WouldBlock"),
        "{err}"
    );
}
