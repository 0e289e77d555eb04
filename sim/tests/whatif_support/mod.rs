//! What the what-if tests through the real binaries share: the seed scenario and where
//! `calicoctl` is.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

/// The seed document's two hosts, workloads and profile.
pub const SEED: &str = "host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
workload host1 workload_A
workload host2 workload_B
host1$ calicoctl container add workload_A 192.168.1.1
host2$ calicoctl container add workload_B 192.168.1.2
host1$ calicoctl profile add PROF_A_B
host1$ calicoctl container workload_A profile set PROF_A_B
host2$ calicoctl container workload_B profile set PROF_A_B
expect workload_A -> workload_B icmp allow
";

/// `calicoctl`, built next to `calico-sim` (as `cargo test --workspace` and
/// `cargo build -p calico-cli --bins` leave it).
pub fn calicoctl() -> PathBuf {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_calico-sim"));
    let ctl = sim.with_file_name("calicoctl");
    assert!(
        ctl.is_file(),
        "{} missing: build it with `cargo build -p calico-cli --bins`",
        ctl.display()
    );
    ctl
}

/// A command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of a what-if's text answer for flows allowed before the change
/// (`a -> b proto: allow -> deny`).
pub fn flows_allowed_before(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.contains(": allow -> "))
        .collect()
}
