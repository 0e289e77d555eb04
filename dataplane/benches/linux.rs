//! LinuxDataplane benchmark (root): 10,000 rules in one `iptables-restore` against one
//! `iptables -A` process per rule (1,000 timed, extrapolated), then an incremental apply that
//! changes one chain, and a no-op apply. Runs inside a network namespace of its own
//! (`ip netns exec`, re-running this binary), so the host's rules are never touched.
//!
//! `cargo bench -p calico-dataplane --bench linux`

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use calico_core::desired::{DesiredState, TableId, TableState};
use calico_core::iptables::{Chain, IpFamily, Match, Rule, Table, Target};
use calico_dataplane::linux::LinuxDataplane;
use calico_dataplane::Dataplane;
use futures::executor::block_on;
use ipnet::IpNet;

const INNER: &str = "CALIRS_BENCH_INNER";
const CHAINS: usize = 100;
const RULES_PER_CHAIN: usize = 100;
const SINGLE_PROCESSES: usize = 1_000;

const FILTER4: TableId = TableId {
    family: IpFamily::V4,
    table: Table::Filter,
};

fn rule(chain: usize, i: usize, action: Target) -> Rule {
    let net: IpNet = format!("10.{}.{}.{}/32", chain % 250, i / 250, i % 250)
        .parse()
        .expect("valid address");
    Rule::new(vec![Match::Source { net, negate: false }], action)
        .with_comment(format!("bench rule {i}"))
}

fn state(changed: bool) -> DesiredState {
    let mut chains = BTreeMap::new();
    for c in 0..CHAINS {
        let name = format!("cali-bench-{c}");
        let rules = (0..RULES_PER_CHAIN)
            .map(|i| {
                let action = if changed && c == 0 && i == 0 {
                    Target::Drop
                } else {
                    Target::Accept
                };
                rule(c, i, action)
            })
            .collect();
        chains.insert(name.clone(), Chain { name, rules });
    }
    let mut desired = DesiredState::default();
    desired.tables.insert(
        FILTER4,
        TableState {
            chains,
            hooks: BTreeMap::new(),
        },
    );
    desired
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn inner() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("calirs-bench-{}", std::process::id()));
    let mut dp = LinuxDataplane::new(&dir);
    let full = state(false);
    let total = CHAINS * RULES_PER_CHAIN;

    let start = Instant::now();
    block_on(dp.apply(&full)).map_err(|e| e.to_string())?;
    let restore = start.elapsed();
    println!(
        "apply of {total} rules in one iptables-restore: {:.1} ms",
        ms(restore)
    );

    let start = Instant::now();
    let report = block_on(dp.apply(&full)).map_err(|e| e.to_string())?;
    println!(
        "no-op apply (read back {total} rules, nothing written, {} changes): {:.1} ms",
        report.changes.len(),
        ms(start.elapsed())
    );

    let start = Instant::now();
    let report = block_on(dp.apply(&state(true))).map_err(|e| e.to_string())?;
    println!(
        "incremental apply changing one chain ({:?}): {:.1} ms",
        report.changes,
        ms(start.elapsed())
    );

    block_on(dp.apply(&DesiredState::default())).map_err(|e| e.to_string())?;

    // One process per rule, as a naive agent would.
    if !run("iptables", &["-w", "-N", "cali-single"]) {
        return Err("iptables -N cali-single failed".to_string());
    }
    let start = Instant::now();
    for i in 0..SINGLE_PROCESSES {
        let src = format!("10.0.{}.{}/32", i / 250, i % 250);
        let ok = run(
            "iptables",
            &[
                "-w",
                "-A",
                "cali-single",
                "-s",
                &src,
                "-m",
                "comment",
                "--comment",
                "bench",
                "-j",
                "ACCEPT",
            ],
        );
        if !ok {
            return Err(format!("iptables -A rule {i} failed"));
        }
    }
    let single = start.elapsed();
    let extrapolated = single.as_secs_f64() * (total as f64 / SINGLE_PROCESSES as f64);
    println!(
        "{SINGLE_PROCESSES} `iptables -A` processes: {:.1} ms; extrapolated to {total}: {:.1} s",
        ms(single),
        extrapolated
    );
    println!(
        "ratio one-process-per-rule / one restore for {total} rules: {:.0}x",
        extrapolated / restore.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    if std::env::var_os(INNER).is_some() {
        if let Err(e) = inner() {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        eprintln!("skipping linux bench: needs root");
        return;
    }
    let ns = format!("calirs-b{}", std::process::id());
    if !run("ip", &["netns", "add", &ns]) {
        eprintln!("ip netns add {ns} failed");
        std::process::exit(1);
    }
    let exe = std::env::current_exe().expect("bench binary path");
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .env(INNER, "1")
        .status();
    let _ = run("ip", &["netns", "del", &ns]);
    match status {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("benchmark run failed: {other:?}");
            std::process::exit(1);
        }
    }
}
