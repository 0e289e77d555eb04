//! LinuxDataplane benchmark (root): a full apply of 10,000 rules by a new dataplane (kernel
//! read, plan, one `iptables-restore`) against a raw `iptables-restore --noflush` of the same
//! text, each round in a fresh namespace; one `iptables -A` process per rule (1,000 timed,
//! extrapolated); then a no-op apply and an
//! incremental apply that changes one chain (both diffed against what the dataplane wrote, no
//! `iptables-save`), and a resync (`observe`, which reads the kernel, then a no-op apply); then 1,000 routes installed through rtnetlink (the
//! dataplane's route module: one connection, dump, plan, pipelined requests) against one
//! `ip -batch` process and against one `ip route add` process per route. Runs inside a network
//! namespace of its own (`ip netns exec`, re-running this binary), so the host's rules and
//! routes are never touched.
//!
//! `cargo bench -p calico-dataplane --bench linux`

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calico_core::desired::{DesiredState, Route, TableId, TableState};
use calico_core::iptables::{Chain, IpFamily, Match, Rule, Table, Target};
use calico_core::plan::Change;
use calico_core::render::iptables::render_table;
use calico_dataplane::linux::{iptables, route, LinuxDataplane};
use calico_dataplane::Dataplane;
use ipnet::IpNet;

const INNER: &str = "CALIRS_BENCH_INNER";
const CHAINS: usize = 100;
const RULES_PER_CHAIN: usize = 100;
const SINGLE_PROCESSES: usize = 1_000;
const ROUTES: usize = 1_000;
const ROUNDS: usize = 5;
/// Rounds of the full apply and its baseline, each in a fresh namespace (half a second each;
/// the two differ by a tenth, less than the noise of one round on a loaded machine).
const FULL_ROUNDS: usize = 9;
const ROUTE_DEV: &str = "calibench0";

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
    state_with(CHAINS, changed)
}

/// `chain_count` chains of [`RULES_PER_CHAIN`] rules each.
fn state_with(chain_count: usize, changed: bool) -> DesiredState {
    let mut chains = BTreeMap::new();
    for c in 0..chain_count {
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

/// Time of one `iptables-restore --noflush` of `text`.
fn raw_restore(text: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to iptables-restore: {e}"))?;
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for iptables-restore: {e}"))?;
    if !status.success() {
        return Err(format!("raw iptables-restore failed: {status}"));
    }
    Ok(start.elapsed())
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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn inner() -> Result<(), String> {
    iptables()?;
    routes()
}

/// Which fresh-namespace measurement an inner run makes (the value of [`INNER`]).
const MODE_OURS: &str = "full-apply";
const MODE_RAW: &str = "raw-restore";

/// Full apply of 10,000 rules by a new `LinuxDataplane` in a fresh namespace, as an agent's
/// first apply: it reads the kernel (`iptables-save`, `ip6tables-save`, `ipset save`), plans,
/// renders and restores. Prints the time in ms.
fn full_apply_once() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("calirs-bench-{}", std::process::id()));
    let mut dp = LinuxDataplane::new(&dir);
    let full = state(false);
    let start = Instant::now();
    block_on(dp.apply(&full)).map_err(|e| e.to_string())?;
    let took = start.elapsed();
    // The same plan and restore text again, without the kernel: the part of the apply that is
    // neither a tool's process nor the restore.
    let start = Instant::now();
    let plan = iptables::plan_table(
        FILTER4,
        full.tables.get(&FILTER4),
        &iptables::InstalledTable::default(),
    );
    let planned = start.elapsed();
    assert!(!plan.input.is_empty(), "the plan writes the rules");
    println!("{:.3} {:.3}", ms(took), ms(planned));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The baseline: the same rules' restore text (rendered before the clock starts) fed to one
/// `iptables-restore --noflush` in a fresh namespace. Prints the time in ms.
fn raw_restore_once() -> Result<(), String> {
    let full = state(false);
    let text = render_table(FILTER4, &full.tables[&FILTER4]);
    println!("{:.3}", ms(raw_restore(&text)?));
    Ok(())
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Full apply against the raw restore, each round in two fresh namespaces (ours, then raw,
/// alternating so load drifts hit both), medians of [`FULL_ROUNDS`].
fn full_apply_rounds(exe: &std::path::Path) -> Result<(), String> {
    let total = CHAINS * RULES_PER_CHAIN;
    let (mut ours, mut raw, mut plans) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..FULL_ROUNDS {
        for mode in [MODE_OURS, MODE_RAW] {
            let ns = format!("calirs-b{}-{round}{}", std::process::id(), &mode[..1]);
            let out = in_fresh_namespace(&ns, exe, mode)?;
            let numbers: Vec<f64> = out
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{mode} printed {out:?}: {e}"))?;
            match (mode, numbers.as_slice()) {
                (MODE_OURS, [took, planned]) => {
                    ours.push(*took);
                    plans.push(*planned);
                }
                (MODE_RAW, [took]) => raw.push(*took),
                _ => return Err(format!("{mode} printed {out:?}")),
            }
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (ours_ms, raw_ms) = (median(ours.clone()), median(raw.clone()));
    println!(
        "apply of {total} rules in one iptables-restore (new dataplane in a fresh namespace: kernel read + plan + render + restore; median of {FULL_ROUNDS}): {ours_ms:.1} ms (rounds: {}; plan and restore text alone, no kernel: median {:.1} ms)",
        fmt(&ours),
        median(plans)
    );
    println!(
        "raw iptables-restore --noflush of the same {total} rules (fresh namespace, text rendered beforehand; median of {FULL_ROUNDS}): {raw_ms:.1} ms; ratio apply/raw {:.2}x (rounds: {})",
        ours_ms / raw_ms,
        fmt(&raw)
    );
    Ok(())
}

/// Runs this binary with `INNER=mode` in a new namespace `ns` (deleted after) and returns its
/// stdout.
fn in_fresh_namespace(ns: &str, exe: &std::path::Path, mode: &str) -> Result<String, String> {
    if !run("ip", &["netns", "add", ns]) {
        return Err(format!("ip netns add {ns} failed"));
    }
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .env(INNER, mode)
        .stderr(Stdio::inherit())
        .output();
    let _ = run("ip", &["netns", "del", ns]);
    let out = out.map_err(|e| format!("running {mode} in {ns}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{mode} in {ns} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn iptables() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("calirs-bench-{}", std::process::id()));
    let mut dp = LinuxDataplane::new(&dir);
    let full = state(false);
    let total = CHAINS * RULES_PER_CHAIN;
    let start = Instant::now();
    block_on(dp.apply(&full)).map_err(|e| e.to_string())?;
    let restore = start.elapsed();

    let start = Instant::now();
    let report = block_on(dp.apply(&full)).map_err(|e| e.to_string())?;
    println!(
        "no-op apply ({total} rules diffed against what was written, {} changes): {:.1} ms",
        report.changes.len(),
        ms(start.elapsed())
    );

    let start = Instant::now();
    let report = block_on(dp.apply(&state(true))).map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let summary: Vec<String> = report
        .changes
        .iter()
        .map(|c| match c {
            Change::RewriteChain { chain, .. } => {
                format!(
                    "chain {} rewritten, {} rules",
                    chain.name,
                    chain.rules.len()
                )
            }
            other => other.to_string(),
        })
        .collect();
    println!(
        "incremental apply changing one chain ({}): {:.1} ms",
        summary.join("; "),
        ms(took)
    );

    let start = Instant::now();
    block_on(dp.observe()).map_err(|e| e.to_string())?;
    let report = block_on(dp.apply(&state(true))).map_err(|e| e.to_string())?;
    println!(
        "resync: observe (reads back {total} rules) + no-op apply ({} changes): {:.1} ms",
        report.changes.len(),
        ms(start.elapsed())
    );

    block_on(dp.apply(&DesiredState::default())).map_err(|e| e.to_string())?;

    // Apply time against rule count, ours and the raw restore of the same text.
    for chain_count in [10, 25, 50, 100] {
        let desired = state_with(chain_count, false);
        let start = Instant::now();
        block_on(dp.apply(&desired)).map_err(|e| e.to_string())?;
        let ours = start.elapsed();
        block_on(dp.apply(&DesiredState::default())).map_err(|e| e.to_string())?;
        let raw = raw_restore(&render_table(FILTER4, &desired.tables[&FILTER4]))?;
        for flag in ["-F", "-X"] {
            for c in 0..chain_count {
                run("iptables", &["-w", flag, &format!("cali-bench-{c}")]);
            }
        }
        println!(
            "apply curve: {} rules: ours {:.1} ms, raw iptables-restore {:.1} ms",
            chain_count * RULES_PER_CHAIN,
            ms(ours),
            ms(raw)
        );
    }

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

fn route_dst(i: usize) -> String {
    format!("192.168.{}.{}/32", 100 + i / 250, 1 + i % 250)
}

fn wanted_routes() -> BTreeSet<Route> {
    (0..ROUTES)
        .map(|i| Route {
            dst: route_dst(i).parse().expect("valid route"),
            dev: ROUTE_DEV.to_string(),
        })
        .collect()
}

/// How many of our routes the kernel holds, by `ip route show proto 80`.
fn count_our_routes() -> usize {
    Command::new("ip")
        .args(["route", "show", "proto", "80"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

fn flush_our_routes() -> Result<(), String> {
    // A namespace without any route has no main table yet, and `ip route flush` fails there.
    if count_our_routes() == 0 {
        return Ok(());
    }
    if run("ip", &["route", "flush", "proto", "80"]) && count_our_routes() == 0 {
        Ok(())
    } else {
        Err("flushing proto 80 routes failed".to_string())
    }
}

/// Read, plan and write `want` over one netlink connection, as an apply does.
async fn rtnetlink_install(want: &BTreeSet<Route>) -> Result<u64, String> {
    let mut netlink = route::Netlink::open().map_err(|e| e.to_string())?;
    let links = netlink.links().await.map_err(|e| e.to_string())?;
    let have = netlink.routes(&links).await.map_err(|e| e.to_string())?;
    let none = BTreeSet::new();
    let plan = route::plan_routes(want, &none, &have, &none, &links);
    let done = netlink.execute(&plan, &links).await;
    let writes = netlink.writes();
    netlink.close().await;
    match done.errors.into_iter().next() {
        Some(e) => Err(e.to_string()),
        None => Ok(writes),
    }
}

fn ip_batch_install() -> Result<(), String> {
    let input: String = (0..ROUTES)
        .map(|i| {
            format!(
                "route replace {} dev {ROUTE_DEV} proto 80 scope link\n",
                route_dst(i)
            )
        })
        .collect();
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("ip -batch failed: {status}"))
    }
}

fn ip_processes_install() -> Result<(), String> {
    for i in 0..ROUTES {
        let dst = route_dst(i);
        let args = [
            "route", "add", &dst, "dev", ROUTE_DEV, "proto", "80", "scope", "link",
        ];
        if !run("ip", &args) {
            return Err(format!("ip route add {dst} failed"));
        }
    }
    Ok(())
}

/// Times `install` over `ROUNDS` rounds from an empty table, checking every route arrived;
/// returns the median.
fn time_rounds(
    what: &str,
    rounds: usize,
    mut install: impl FnMut() -> Result<(), String>,
) -> Result<Duration, String> {
    let mut times = Vec::new();
    for _ in 0..rounds {
        flush_our_routes()?;
        let start = Instant::now();
        install()?;
        times.push(start.elapsed());
        let n = count_our_routes();
        if n != ROUTES {
            return Err(format!("{what}: {n} routes installed, expected {ROUTES}"));
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{ROUTES} routes via {what}: median {:.1} ms (min {:.1}, max {:.1}, {rounds} rounds)",
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    Ok(median)
}

fn routes() -> Result<(), String> {
    let link_ok = run(
        "ip",
        &[
            "link",
            "add",
            ROUTE_DEV,
            "type",
            "veth",
            "peer",
            "name",
            "calibench1",
        ],
    ) && run("ip", &["link", "set", ROUTE_DEV, "up"]);
    if !link_ok {
        return Err(format!("creating {ROUTE_DEV} failed"));
    }
    let want = wanted_routes();
    let netlink = time_rounds(
        "rtnetlink (one connection, dump + plan + writes)",
        ROUNDS,
        || {
            let writes = block_on(rtnetlink_install(&want))?;
            if writes != ROUTES as u64 {
                return Err(format!("{writes} netlink writes, expected {ROUTES}"));
            }
            Ok(())
        },
    )?;

    // Already installed: the dump finds them all and nothing is written.
    let start = Instant::now();
    let writes = block_on(rtnetlink_install(&want))?;
    println!(
        "no-op rtnetlink pass over {ROUTES} installed routes ({writes} writes): {:.1} ms",
        ms(start.elapsed())
    );

    let batch = time_rounds("one `ip -force -batch -` process", ROUNDS, ip_batch_install)?;
    // Seconds per round and only an illustration (hundreds of times slower): one round.
    let single = time_rounds(
        "one `ip route add` process per route",
        1,
        ip_processes_install,
    )?;
    println!(
        "ratios for {ROUTES} routes: ip -batch / rtnetlink {:.1}x; one process per route / rtnetlink {:.0}x",
        batch.as_secs_f64() / netlink.as_secs_f64(),
        single.as_secs_f64() / netlink.as_secs_f64()
    );
    flush_our_routes()?;
    // Deleting the veth takes its peer with it.
    let _ = run("ip", &["link", "del", ROUTE_DEV]);
    Ok(())
}

fn main() {
    if let Some(mode) = std::env::var_os(INNER) {
        let done = match mode.to_str() {
            Some(MODE_OURS) => full_apply_once(),
            Some(MODE_RAW) => raw_restore_once(),
            _ => inner(),
        };
        if let Err(e) = done {
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
    let exe = std::env::current_exe().expect("bench binary path");
    if let Err(e) = full_apply_rounds(&exe) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
    let ns = format!("calirs-b{}", std::process::id());
    if !run("ip", &["netns", "add", &ns]) {
        eprintln!("ip netns add {ns} failed");
        std::process::exit(1);
    }
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
