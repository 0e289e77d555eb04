//! Endpoint written on host1 → route in host2's kernel, over real etcd, real calico-node and
//! real BIRD on namespaced hosts (the [`LinuxRunner`] harness of the `linux_*` tests). Root
//! only: prints `skipped (needs root ...)` otherwise.
//!
//! With block aggregation a workload in a block host1 already owns is covered by the block
//! route host2 has, so nothing changes in host2's kernel. Each sample therefore adds a workload
//! on host1 at an address in a fresh /26 (192.168.<100 + k>.1): calicoctl claims the block for
//! host1, host1's calico-node has BIRD originate the block, and host2's BIRD writes
//! `192.168.<100 + k>.0/26 via 172.31.250.1 proto bird`. `ip monitor route` in host2's
//! namespace reports the route the moment it is written; the time is taken from `calicoctl
//! container add` returning (its etcd writes are done then) and, as an upper bound, from its
//! start (process start, veth plumbing and the writes included).
//!
//! `cargo bench -p calico-sim --bench linux_route` (builds `calicoctl`/`calico-node` in the
//! release profile first, so they are never stale, unless `CALICO_BENCH_PREBUILT` is set, as
//! `scripts/bench` sets it after building them with the benches).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use calico_sim::linux::{ClusterConfig, LinuxRunner};
use calico_sim::scenario::{parse, ScenarioTarget};

const SAMPLES: usize = 20;
/// How long one route may take before the sample counts as lost.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

const SETUP: &str = "\
host host1 172.31.250.1
host host2 172.31.250.2
host1$ calicoctl node --ip=172.31.250.1
host2$ calicoctl node --ip=172.31.250.2
settle
";

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why this machine cannot run the bench, if it cannot.
fn missing() -> Option<String> {
    if !sh_ok("test \"$(id -u)\" = 0") {
        return Some("needs root".into());
    }
    let tools: Vec<&str> = ["ip", "iptables-restore", "ipset", "bird", "birdc", "etcd"]
        .into_iter()
        .filter(|t| !sh_ok(&format!("command -v {t}")))
        .collect();
    (!tools.is_empty()).then(|| format!("needs {} (scripts/install-deps)", tools.join(", ")))
}

/// Lines of `ip monitor route` in namespace `ns`, each with the instant it was read.
struct Monitor {
    child: std::process::Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Monitor {
    fn start(ns: &str) -> Monitor {
        let mut child = Command::new("ip")
            .args(["-n", ns, "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ip monitor route");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// When a route to `dst` was added, waiting at most `ROUTE_TIMEOUT`.
    fn wait_for(&self, dst: &str) -> Option<Instant> {
        let deadline = Instant::now() + ROUTE_TIMEOUT;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, line) = self.lines.recv_timeout(left).ok()?;
            if line.split_whitespace().next() == Some(dst) {
                return Some(at);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One sample: workload `name` on host1 at `ip`; (from calicoctl start, from its return).
async fn sample(
    runner: &mut LinuxRunner,
    monitor: &Monitor,
    name: &str,
    block: u8,
) -> Result<(Duration, Duration), String> {
    let lines = parse(&format!("workload host1 {name}\n")).map_err(|e| e.to_string())?;
    runner
        .run(&lines, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    // Routes seen before this sample's write belong to earlier samples.
    while monitor.lines.try_recv().is_ok() {}
    let args: Vec<String> = ["container", "add", name, &format!("192.168.{block}.1")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let start = Instant::now();
    let out = runner
        .cluster()
        .calicoctl("host1", &args)
        .await
        .map_err(|e| e.to_string())?;
    let returned = Instant::now();
    if !out.success {
        return Err(format!(
            "calicoctl container add {name}: {}",
            out.stderr.trim()
        ));
    }
    let dst = format!("192.168.{block}.0/26");
    let at = monitor
        .wait_for(&dst)
        .ok_or_else(|| format!("no route to {dst} in host2 within {ROUTE_TIMEOUT:?}"))?;
    Ok((
        at.saturating_duration_since(start),
        at.saturating_duration_since(returned),
    ))
}

async fn bench() -> Result<String, String> {
    // `scripts/bench` built calicoctl and calico-node with the benches (next to this binary's
    // calico-sim); a plain `cargo bench` run builds them here so they are never stale.
    if std::env::var_os("CALICO_BENCH_PREBUILT").is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--release", "-q", "-p", "calico-cli", "--bins"])
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !built.success() {
            return Err("cargo build --release -p calico-cli --bins failed".into());
        }
    }
    let config = ClusterConfig::next_to(Path::new(env!("CARGO_BIN_EXE_calico-sim")))
        .map_err(|e| e.to_string())?;
    let mut runner = LinuxRunner::new(config).map_err(|e| e.to_string())?;
    let lines = parse(SETUP).map_err(|e| e.to_string())?;
    runner
        .run(&lines, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let ns = runner
        .cluster()
        .host_netns("host2")
        .ok_or("host2 has no namespace")?
        .to_string();
    let monitor = Monitor::start(&ns);
    // The first block also waits for the BGP session to come up: not a sample.
    sample(&mut runner, &monitor, "warmup", 99).await?;
    let mut from_start = Vec::new();
    let mut from_return = Vec::new();
    for k in 0..SAMPLES {
        let block = u8::try_from(100 + k).map_err(|e| e.to_string())?;
        let (s, r) = sample(&mut runner, &monitor, &format!("lat{k}"), block).await?;
        from_start.push(ms(s));
        from_return.push(ms(r));
    }
    let in_order: Vec<String> = from_return.iter().map(|r| format!("{r:.0}")).collect();
    let before_return = from_return.iter().filter(|r| **r == 0.0).count();
    for v in [&mut from_start, &mut from_return] {
        v.sort_by(f64::total_cmp);
    }
    Ok(format!(
        "route in host2's kernel after calicoctl container add on host1 (new /26 block, {SAMPLES} samples): \
         from return p50 {:.1} ms p99 {:.1} ms (max {:.1} ms, {before_return} seen before return); \
         from calicoctl start p50 {:.1} ms p99 {:.1} ms; from return, in sample order (ms): {}",
        percentile(&from_return, 50.0),
        percentile(&from_return, 99.0),
        from_return[SAMPLES - 1],
        percentile(&from_start, 50.0),
        percentile(&from_start, 99.0),
        in_order.join(" "),
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Some(reason) = missing() {
        println!("linux route latency: skipped ({reason})");
        return;
    }
    match bench().await {
        Ok(line) => println!("{line}"),
        Err(e) => {
            println!("linux route latency: failed ({e})");
            std::process::exit(1);
        }
    }
}
