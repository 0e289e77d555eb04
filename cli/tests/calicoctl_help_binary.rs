//! The real `calicoctl` binary: help exits 0 on stdout without opening any datastore, usage
//! errors go to stderr with the command's usage lines and exit 1, global options work
//! anywhere, and the original's idempotent cases exit 0.

use std::process::{Command, Output};

fn calicoctl(envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calicoctl"));
    for var in [
        "ETCD_ENDPOINTS",
        "ETCD_AUTHORITY",
        "CALICO_DATASTORE",
        "CALICO_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied()).args(args);
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An etcd nobody listens on: any command that opened the datastore would fail.
const NO_DATASTORE: &[(&str, &str)] = &[("ETCD_ENDPOINTS", "http://127.0.0.1:1")];

#[test]
fn help_of_every_command_exits_zero_without_a_datastore() {
    for name in [
        "node",
        "status",
        "container",
        "profile",
        "endpoint",
        "pool",
        "bgp",
        "ipam",
        "config",
        "checksystem",
        "diags",
        "version",
    ] {
        for args in [vec![name, "--help"], vec!["help", name], vec![name, "-h"]] {
            let out = calicoctl(NO_DATASTORE, &args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?}: {}",
                text(&out.stderr)
            );
            let stdout = text(&out.stdout);
            assert!(
                stdout.starts_with(&format!("Usage:\n  calicoctl {name}")),
                "{args:?}:\n{stdout}"
            );
            assert!(stdout.contains("\nDescription:\n"), "{args:?}:\n{stdout}");
            assert_eq!(text(&out.stderr), "", "{args:?}");
        }
    }
    // -h in the middle of a line, behind global options.
    let out = calicoctl(
        NO_DATASTORE,
        &["--hostname", "h1", "node", "stop", "-h", "--force"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("calicoctl node stop [--force]"));
}

#[test]
fn usage_errors_print_the_command_usage_on_stderr_and_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CALICO_DATA_DIR", dir.path().to_str().unwrap())];
    let out = calicoctl(&env, &["--hostname", "h1", "node", "bgp", "peer"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("Error: "), "{err}");
    assert!(
        err.contains("\nUsage:\n  calicoctl node [--ip=<IP>]")
            && err.contains("  calicoctl node bgp peer show [--ipv4 | --ipv6] [--strict]\n"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");

    // An unknown command is known to be one before any datastore is opened.
    let out = calicoctl(NO_DATASTORE, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Error: unknown command \"frobnicate\""),
        "{err}"
    );
    assert!(err.contains("\nCommands:\n"), "{err}");

    let out = calicoctl(NO_DATASTORE, &["help", "frobnicate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("frobnicate"));

    let out = calicoctl(NO_DATASTORE, &["version", "--hostname"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--hostname needs a value"));
}

#[test]
fn globals_anywhere_and_idempotent_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CALICO_DATA_DIR", dir.path().to_str().unwrap())];
    let out = calicoctl(&env, &["profile", "add", "PROF_A", "--hostname", "h1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The same again: the original's message, exit 0.
    let out = calicoctl(&env, &["--hostname=h1", "profile", "add", "PROF_A"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Profile PROF_A already exists.\n");
    let out = calicoctl(
        &env,
        &[
            "-o",
            "json",
            "--hostname=h1",
            "profile",
            "show",
            "--datastore",
            "sled",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(shown[0]["name"], "PROF_A");
    let out = calicoctl(&env, &["pool", "remove", "10.9.0.0/16", "--hostname=h1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "10.9.0.0/16 is not a configured pool.\n");
}

#[test]
fn completion_script_is_valid_bash() {
    let out = calicoctl(NO_DATASTORE, &["completion", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("complete -F _calicoctl calicoctl"));
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    let node = Command::new(env!("CARGO_BIN_EXE_calico-node"))
        .args(["--completion", "bash"])
        .output()
        .unwrap();
    assert_eq!(node.status.code(), Some(0), "{}", text(&node.stderr));
    let script = text(&node.stdout);
    assert!(script.contains("calico-node"), "{script}");
    assert!(script.contains("--datastore"), "{script}");
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
}
