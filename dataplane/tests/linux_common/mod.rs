//! Shared helpers of the Linux tests: root and tool checks, namespaces deleted on drop, and
//! re-running one test of this binary inside a namespace (`ip netns exec`), since the
//! dataplane acts on the namespace of its process.
//!
//! Namespaces are named `calirs-t<pid>-<n>`; hosts use 172.31.250.0/24, workloads 192.168.0.0/16.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Env var naming the inner test that should act (the others return at once).
pub const INNER_ENV: &str = "CALIRS_LINUX_INNER";
/// Env var prefix for values handed to the inner test.
pub const ARG_ENV: &str = "CALIRS_LINUX_ARG_";

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn sh(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the Linux tests can run here: root and every tool. Without them, a test fails when
/// `CI` is set (CI must run them) and is skipped with a message otherwise.
pub fn can_run(test: &str) -> bool {
    let mut missing = Vec::new();
    if sh("id", &["-u"]).as_deref().map(str::trim) != Some("0") {
        missing.push("root".to_string());
    }
    for tool in [
        "ip",
        "iptables-restore",
        "ip6tables-restore",
        "iptables-save",
        "ipset",
        "bird",
        "birdc",
        "ping",
    ] {
        if sh("sh", &["-c", &format!("command -v {tool}")]).is_none() {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: needs {} (run scripts/install-deps as root)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping {msg}");
    false
}

/// Whether this process is the inner run of `test`.
pub fn is_inner(test: &str) -> bool {
    std::env::var(INNER_ENV).as_deref() == Ok(test)
}

/// A value handed to the inner test.
pub fn arg(name: &str) -> String {
    std::env::var(format!("{ARG_ENV}{name}")).unwrap_or_else(|_| panic!("inner test needs {name}"))
}

/// A network namespace of this test, deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Self {
        let name = format!(
            "calirs-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} failed");
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A run dir for BIRD; on drop, kills any BIRD whose pid file is in it.
#[derive(Debug)]
pub struct RunDir {
    pub dir: tempfile::TempDir,
}

impl RunDir {
    pub fn new() -> Self {
        RunDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        for name in ["bird.pid", "bird6.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(name)) {
                let pid = pid.trim();
                if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) {
                    let _ = Command::new("kill").arg(pid).status();
                }
            }
        }
    }
}

/// Runs `test` of this test binary inside namespace `ns` with `args`, and fails with its
/// output unless it ran and passed.
pub fn run_inside(ns: &str, test: &str, args: &[(&str, String)]) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, test);
    for (k, v) in args {
        cmd.env(format!("{ARG_ENV}{k}"), v);
    }
    let out = cmd.output().expect("running the inner test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inner test {test} failed in {ns}:\n{stdout}\n{stderr}"
    );
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn must(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a command succeeds.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
