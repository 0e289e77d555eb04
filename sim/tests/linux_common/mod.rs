//! Shared helpers of the `linux_*` tests: the root and tool check (fail under `CI`, skip
//! otherwise), fresh `calicoctl`/`calico-node` binaries, and running scenario text on a
//! [`LinuxRunner`].

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use calico_sim::linux::{ClusterConfig, LinuxRunner};
use calico_sim::scenario::{parse, LineReport, ScenarioTarget};

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The cluster config when the Linux tests can run here: root, the tools, and the calico-cli
/// binaries (built here, so they are never stale). Without them the test fails when `CI` is
/// set and is skipped with a message otherwise.
pub fn setup(test: &str) -> Option<ClusterConfig> {
    let mut missing = Vec::new();
    if !sh_ok("test \"$(id -u)\" = 0") {
        missing.push("root".to_string());
    }
    for tool in [
        "ip",
        "iptables-save",
        "iptables-restore",
        "ip6tables-restore",
        "ipset",
        "bird",
        "birdc",
        "ping",
        "etcd",
    ] {
        if !sh_ok(&format!("command -v {tool}")) {
            missing.push(tool.to_string());
        }
    }
    if !missing.is_empty() {
        let msg = format!(
            "{test}: needs {} (run scripts/install-deps as root)",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("skipping {msg}");
        return None;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-p", "calico-cli", "--bins"])
        .output()
        .expect("running cargo build -p calico-cli --bins");
    assert!(
        out.status.success(),
        "cargo build -p calico-cli --bins failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        ClusterConfig::next_to(Path::new(env!("CARGO_BIN_EXE_calico-sim")))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Runs scenario `text` on `runner`, returning every line's report; panics naming the unmet
/// line.
pub async fn run_text(runner: &mut LinuxRunner, text: &str) -> Vec<LineReport> {
    let lines = parse(text).unwrap_or_else(|e| panic!("scenario does not parse: {e}"));
    let mut reports = Vec::new();
    let result = runner.run(&lines, |r| reports.push(r.clone())).await;
    if let Err(e) = result {
        panic!("{e}\nlines before it:\n{reports:#?}");
    }
    reports
}

/// `ip netns exec <ns> program args...`: (success, stdout).
pub fn exec(ns: &str, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .expect("running ip netns exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The packet count of the first rule of `chain` in `ns` that mentions `needle`
/// (`iptables -L -v -n -x`).
pub fn packets(ns: &str, chain: &str, needle: &str) -> u64 {
    let (ok, text) = exec(ns, "iptables", &["-L", chain, "-v", "-n", "-x"]);
    assert!(ok, "iptables -L {chain} in {ns}");
    text.lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule with {needle} in {chain} of {ns}:\n{text}"))
}

/// `Ok` when this kernel can make an IPIP tunnel (`ip tunnel add tunl0 mode ipip` in a
/// scratch namespace), else why not (`CONFIG_NET_IPIP` unset: "No such device").
pub fn ipip_supported() -> Result<(), String> {
    let ns = format!("calirs-ipip-probe-{}", std::process::id());
    let run = |args: &[&str]| Command::new("ip").args(args).output();
    let made = run(&["netns", "add", &ns]).map_err(|e| format!("ip netns add: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "ip netns add {ns}: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let added = run(&["-n", &ns, "tunnel", "add", "tunl0", "mode", "ipip"]);
    let exists = run(&["-n", &ns, "link", "show", "tunl0"]).is_ok_and(|o| o.status.success());
    let _ = run(&["netns", "del", &ns]);
    match added {
        Ok(o) if o.status.success() || exists => Ok(()),
        Ok(o) => Err(format!(
            "`ip tunnel add tunl0 mode ipip` fails: {} (kernel without CONFIG_NET_IPIP)",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("ip tunnel add: {e}")),
    }
}
