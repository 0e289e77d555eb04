//! The `calicoctl` binary: datastore selection from the environment, `Error: ...` on stderr
//! with exit status 1, and no panic on any input.

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

#[test]
fn sled_datastore_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CALICO_DATA_DIR", dir.path().to_str().unwrap())];
    let out = calicoctl(&env, &["--hostname", "h1", "profile", "add", "PROF_A_B"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = calicoctl(&env, &["--hostname=h1", "profile", "show"]);
    assert_eq!(text(&out.stdout), "Name\nPROF_A_B\n");

    let out = calicoctl(&env, &["--hostname", "h1", "profile", "add", "a b"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Error: ") && err.contains("\"a b\""),
        "{err}"
    );

    // No agent was started under this data dir: status says so, with an empty peer table.
    let out = calicoctl(&env, &["--hostname", "h1", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("calico-node is not running"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn unreachable_etcd_is_named() {
    let out = calicoctl(
        &[("ETCD_ENDPOINTS", "http://127.0.0.1:1")],
        &["--hostname", "h1", "profile", "show"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Error: ") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn no_input_makes_it_panic() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("CALICO_DATA_DIR", dir.path().to_str().unwrap())];
    let inputs: &[&[&str]] = &[
        &[],
        &["--"],
        &["-o"],
        &["--ip"],
        &["node", "--ip="],
        &["container"],
        &["container", "add"],
        &["container", "x", "ip", "add", "::::"],
        &["profile", "\u{1b}[31m", "rule", "add", "inbound"],
        &[
            "profile", "P", "rule", "add", "inbound", "allow", "icmp", "type",
        ],
        &["pool", "range", "add", "1.2.3.4", "::1"],
        &["endpoint", "show", "--host"],
        &["bgp", "default-node-as", "65536.65536"],
        &["ipam", "info", "999.1.1.1"],
        &["--datastore", "bogus", "version"],
        &["config", "felix"],
    ];
    for args in inputs {
        let mut full = vec!["--hostname", "h1"];
        full.extend_from_slice(args);
        let out = calicoctl(&env, &full);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "{args:?} exited {code:?}: {}",
            text(&out.stderr)
        );
        if code == Some(1) {
            assert!(text(&out.stderr).starts_with("Error: "), "{args:?}");
        }
    }
}
