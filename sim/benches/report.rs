//! The benchmark report (run by `scripts/bench`, a plain `fn main`): reads the raw output of
//! every bench binary from one directory and writes `BENCHMARKS.md` with the table
//! `| work | ours | baseline | ratio |` (both sides measured in the same run) and SVG plots of
//! settle time and peak memory against host count and of apply time against rule count.
//!
//! `cargo bench -p calico-sim --bench report -- <raw dir> <BENCHMARKS.md> <plot dir>`; the raw
//! directory holds `meta.txt` (machine, date, commit lines), `compute.txt`, `agent.txt`,
//! `etcd.txt`, `linux.txt`, `linux_route.txt`, `walks.txt`, `whatif.txt` and `settle-<hosts>.txt`. A file that is missing or a
//! line that is not found makes its row say so: the report never invents a number.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// The raw output of the bench binaries.
struct Raw {
    dir: PathBuf,
}

impl Raw {
    fn text(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file)).ok()
    }

    /// The first line of `file` containing `needle`.
    fn line(&self, file: &str, needle: &str) -> Option<String> {
        self.text(file)?
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    }

    /// The `nth` duration (in seconds) on the first line of `file` containing `needle`.
    fn secs(&self, file: &str, needle: &str, nth: usize) -> Option<f64> {
        durations(&self.line(file, needle)?).get(nth).copied()
    }

    /// The first duration after `marker` on the first line of `file` containing `needle`:
    /// for lines whose count of durations before it may change.
    fn secs_after(&self, file: &str, needle: &str, marker: &str) -> Option<f64> {
        let line = self.line(file, needle)?;
        let (_, rest) = line.split_once(marker)?;
        durations(rest).first().copied()
    }
}

/// Every duration on a line, in seconds: Rust's `Debug` form (`1.5ms`, `20µs`, `2.1s`) and
/// spaced units (`195.0 ms`, `4.74 s`).
fn durations(line: &str) -> Vec<f64> {
    let tokens: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',' | ';' | '='))
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let joined = match tokens.get(i + 1) {
            Some(unit) if token.parse::<f64>().is_ok() => format!("{token}{unit}"),
            _ => token.to_string(),
        };
        for candidate in [token.to_string(), joined] {
            if let Some(secs) = duration(&candidate) {
                out.push(secs);
                break;
            }
        }
    }
    out
}

fn duration(token: &str) -> Option<f64> {
    for (unit, scale) in [
        ("ns", 1e-9),
        ("µs", 1e-6),
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
    ] {
        if let Some(number) = token.strip_suffix(unit) {
            if let Ok(n) = number.parse::<f64>() {
                return Some(n * scale);
            }
        }
    }
    None
}

/// The number just before `unit` on `line` (`peak RSS 381 MiB` → 381).
fn number_before(line: &str, unit: &str) -> Option<f64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches([',', ')']) == unit)?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

/// One settle measurement.
struct Settle {
    hosts: u32,
    secs: f64,
    peak_mib: f64,
}

fn settles(raw: &Raw) -> (Vec<Settle>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&raw.dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let hosts = name
                        .strip_prefix("settle-")?
                        .strip_suffix(".txt")?
                        .parse()
                        .ok()?;
                    Some((hosts, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for (hosts, path) in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let line = text.lines().find(|l| l.starts_with("settle:"));
        let parsed = line.and_then(|l| {
            let after = l.split_once(" settle ")?.1;
            let secs = durations(after).first().copied()?;
            Some(Settle {
                hosts,
                secs,
                peak_mib: number_before(l, "MiB")?,
            })
        });
        match parsed {
            Some(s) => out.push(s),
            None => {
                let last = text.lines().last().unwrap_or("no output").to_string();
                notes.push(format!("{hosts} hosts: not measured ({last})"));
            }
        }
    }
    (out, notes)
}

/// `(rules, ours, raw restore)` points of the apply curve.
fn apply_curve(raw: &Raw) -> Vec<(f64, f64, f64)> {
    let Some(text) = raw.text("linux.txt") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("apply curve: ")?;
            let rules = rest.split_whitespace().next()?.parse().ok()?;
            let d = durations(rest);
            Some((rules, *d.first()?, *d.get(1)?))
        })
        .collect()
}

fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// One table row from two measured durations.
fn row(out: &mut String, work: &str, ours: Option<f64>, baseline: Option<(&str, Option<f64>)>) {
    let ours_s = ours.map_or("not measured".to_string(), fmt_secs);
    let (base_s, ratio) = match baseline {
        None => ("—".to_string(), "—".to_string()),
        Some((what, b)) => (
            format!(
                "{} ({what})",
                b.map_or("not measured".to_string(), fmt_secs)
            ),
            match (ours, b) {
                (Some(o), Some(b)) if b > 0.0 => fmt_ratio(o / b),
                _ => "—".to_string(),
            },
        ),
    };
    let _ = writeln!(out, "| {work} | {ours_s} | {base_s} | {ratio} |");
}

fn table(raw: &Raw, settles: &[Settle], settle_notes: &[String]) -> String {
    let mut t = String::from("| work | ours | baseline | ratio |\n|---|---|---|---|\n");
    let linux = "linux.txt";
    let full = raw.secs(linux, "rules in one iptables-restore", 0);
    row(
        &mut t,
        "full apply, 10,000 rules (a new dataplane: kernel read, plan, restore; fresh namespace, median of 9)",
        full,
        Some((
            "raw `iptables-restore --noflush` of the same text, fresh namespace, median of 9",
            raw.secs(linux, "raw iptables-restore", 0),
        )),
    );
    row(
        &mut t,
        "no-op apply, 10,000 rules",
        raw.secs(linux, "no-op apply (", 0),
        Some(("full apply", full)),
    );
    row(
        &mut t,
        "one-chain change, 10,000 rules",
        raw.secs(linux, "incremental apply changing one chain", 0),
        Some(("full apply", full)),
    );
    row(
        &mut t,
        "1,000 routes (rtnetlink)",
        raw.secs(linux, "routes via rtnetlink", 0),
        Some((
            "`ip -force -batch`",
            raw.secs(linux, "routes via one `ip -force -batch", 0),
        )),
    );
    compute_rows(&mut t, raw);
    row(
        &mut t,
        "one profile change, incremental",
        raw.secs("compute.txt", "incremental profile change:", 0),
        Some(("full compute", raw.secs("compute.txt", "full compute:", 0))),
    );
    row(
        &mut t,
        "compute, 1,000 selector policies over 10,000 labelled endpoints (100 local)",
        raw.secs("compute.txt", "policy compute:", 0),
        None,
    );
    row(
        &mut t,
        "one label change, incremental, with 1,000 selector policies",
        raw.secs("compute.txt", "incremental label change with", 0),
        Some((
            "full compute",
            raw.secs("compute.txt", "incremental label change with", 1),
        )),
    );
    let agent = |nth| raw.secs("agent.txt", "agent local=1000 remote=9000", nth);
    row(
        &mut t,
        "agent, 1,000 local / 9,000 remote endpoints: one endpoint added, event to dataplane",
        agent(2),
        Some(("snapshot + first apply", agent(0))),
    );
    row(
        &mut t,
        "agent, 1,000 local / 9,000 remote endpoints: one endpoint's profile change, event to \
         dataplane (target ≤ 20 ms)",
        agent(4),
        Some((
            "full recompute + full apply (snapshot + first apply)",
            agent(0),
        )),
    );
    for (n, target) in [("10000", "≤ 50 MiB"), ("100000", "≤ 150 MiB")] {
        let peak = raw
            .line("agent.txt", &format!("agent RSS holding {n} endpoints"))
            .and_then(|l| number_before(&l, "MiB"));
        let ours = peak.map_or("not measured".to_string(), |m| format!("{m:.0} MiB"));
        let _ = writeln!(
            t,
            "| agent peak RSS (VmHWM of its process) holding {n} endpoints, 100 local (target {target}) | {ours} | — | — |"
        );
    }
    route_row(&mut t, raw);
    row(
        &mut t,
        "etcd: create 10k endpoints (sequential)",
        raw.secs("etcd.txt", "sequential:", 0),
        Some((
            "`etcdctl put`, one process per key: 200 timed, extrapolated linearly to 10k",
            raw.secs("etcd.txt", "etcdctl put", 0),
        )),
    );
    row(
        &mut t,
        "etcd: list 20k",
        raw.secs("etcd.txt", "list x", 0),
        Some(("`etcdctl get --prefix`", raw.secs("etcd.txt", "list x", 1))),
    );
    row(
        &mut t,
        "what-if, one rule added to a profile of 10 members, 1,000-host / 10,000-endpoint \
         snapshot: build and settle the copy, change and settle, walk the affected flows after \
         and before (target ≤ 5 s)",
        raw.secs("whatif.txt", "what-if:", 0),
        Some((
            "every flow of the matrix walked instead, extrapolated from the measured walk rate",
            raw.secs_after("whatif.txt", "what-if:", "full matrix extrapolated:"),
        )),
    );
    for s in settles {
        let _ = writeln!(
            t,
            "| simulator settle, {} hosts × 10 workloads | {} (peak RSS {:.0} MiB) | — | — |",
            s.hosts,
            fmt_secs(s.secs),
            s.peak_mib
        );
    }
    for note in settle_notes {
        let _ = writeln!(t, "| simulator settle, {note} | — | — | — |");
    }
    t
}

/// Full compute at 1k / 10k / 100k endpoints; the baseline is the 1k time scaled linearly, so
/// a ratio of 1 is linear growth and below 1 is better than linear.
fn compute_rows(t: &mut String, raw: &Raw) {
    let at = |n: u32| raw.secs("compute.txt", &format!("compute size: {n} endpoints:"), 0);
    let small = at(1000);
    for n in [1000u32, 10_000, 100_000] {
        let ours = at(n);
        let per = ours.map_or("not measured".to_string(), |s| {
            format!(
                "{} ({} per endpoint)",
                fmt_secs(s),
                fmt_secs(s / f64::from(n))
            )
        });
        let (base, ratio) = match (ours, small) {
            (Some(o), Some(b)) if n > 1000 => {
                let linear = b * f64::from(n / 1000);
                (
                    format!(
                        "{} (1,000-endpoint time × {}, linear)",
                        fmt_secs(linear),
                        n / 1000
                    ),
                    fmt_ratio(o / linear),
                )
            }
            _ => ("—".to_string(), "—".to_string()),
        };
        let _ = writeln!(
            t,
            "| compute, {n} endpoints (100 per host, 100 local) | {per} | {base} | {ratio} |"
        );
    }
}

/// Endpoint on host1 → route in host2's kernel: p50 / p99, or why it did not run.
fn route_row(t: &mut String, raw: &Raw) {
    let work =
        "endpoint written on host1 → route in host2's kernel (real etcd, calico-node, BIRD; \
                a workload in a fresh /26, so the new block route; from `calicoctl container add` \
                returning), p50 / p99 of 20 (target p99 ≤ 50 ms)";
    let line = raw.line("linux_route.txt", "from return p50");
    let after = line.as_deref().and_then(|l| l.split_once("from return"));
    let ours = match after.map(|(_, rest)| durations(rest)) {
        Some(d) if d.len() >= 2 => format!("{} / {}", fmt_secs(d[0]), fmt_secs(d[1])),
        _ => match raw.line("linux_route.txt", "skipped") {
            Some(l) if l.contains("needs root") => "skipped (needs root)".to_string(),
            Some(l) => l,
            None => "not measured".to_string(),
        },
    };
    let _ = writeln!(t, "| {work} | {ours} | — | — |");
}

fn plot_settle(path: &Path, settles: &[Settle]) -> Result<(), String> {
    let root = SVGBackend::new(path, (800, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(400);
    let max_hosts = settles.iter().map(|s| s.hosts).max().unwrap_or(1) as f64 * 1.05;
    let series = [
        (
            left,
            "settle time (s)",
            settles.iter().map(|s| s.secs).collect::<Vec<_>>(),
        ),
        (
            right,
            "peak RSS (MiB)",
            settles.iter().map(|s| s.peak_mib).collect::<Vec<_>>(),
        ),
    ];
    for (area, title, ys) in series {
        let max_y = ys.iter().copied().fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_hosts, 0.0..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("hosts (10 workloads each)")
            .draw()
            .map_err(|e| e.to_string())?;
        let points: Vec<(f64, f64)> = settles
            .iter()
            .zip(&ys)
            .map(|(s, y)| (f64::from(s.hosts), *y))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), &BLUE))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn plot_apply(path: &Path, curve: &[(f64, f64, f64)]) -> Result<(), String> {
    let root = SVGBackend::new(path, (600, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_x = curve.iter().map(|c| c.0).fold(1.0, f64::max) * 1.05;
    let max_y = curve.iter().map(|c| c.1.max(c.2) * 1e3).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("full apply (ms) vs rules", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("rules")
        .draw()
        .map_err(|e| e.to_string())?;
    for (color, label, pick) in [
        (BLUE, "ours (LinuxDataplane::apply)", 1usize),
        (RED, "raw iptables-restore --noflush", 2usize),
    ] {
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|c| (c.0, if pick == 1 { c.1 } else { c.2 } * 1e3))
            .collect();
        chart
            .draw_series(LineSeries::new(points, &color))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [dir, md, plots] = args.as_slice() else {
        println!("usage: report <raw dir> <BENCHMARKS.md> <plot dir> (run by scripts/bench)");
        return;
    };
    let raw = Raw {
        dir: PathBuf::from(dir),
    };
    let (settles, notes) = settles(&raw);
    let curve = apply_curve(&raw);
    let plots = PathBuf::from(plots);
    // Links in the report are relative to the report's own directory.
    let md_dir = Path::new(md).parent().unwrap_or(Path::new(""));
    let link = |path: &Path| {
        path.strip_prefix(md_dir)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    if let Err(e) = std::fs::create_dir_all(&plots) {
        eprintln!("report: creating {}: {e}", plots.display());
        std::process::exit(1);
    }
    let mut figures = String::new();
    if !settles.is_empty() {
        let path = plots.join("settle.svg");
        match plot_settle(&path, &settles) {
            Ok(()) => {
                let _ = writeln!(
                    figures,
                    "![settle time and peak memory vs hosts]({})\n",
                    link(&path)
                );
            }
            Err(e) => eprintln!("report: plotting {}: {e}", path.display()),
        }
    }
    if !curve.is_empty() {
        let path = plots.join("apply.svg");
        match plot_apply(&path, &curve) {
            Ok(()) => {
                let _ = writeln!(
                    figures,
                    "![full apply time vs rule count]({})\n",
                    link(&path)
                );
            }
            Err(e) => eprintln!("report: plotting {}: {e}", path.display()),
        }
    } else {
        let _ = writeln!(
            figures,
            "(No apply curve: the Linux dataplane bench needs root and did not run.)\n"
        );
    }
    let meta = raw.text("meta.txt").unwrap_or_default();
    let mut out = String::from("# Benchmarks\n\nWritten by `scripts/bench`; every number below and its baseline come from the same run.\n\n");
    for line in meta.lines() {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n{}", table(&raw, &settles, &notes));
    out.push_str(&figures);
    out.push_str(
        "Settle sizes are those of `BENCH_HOSTS` (default 100 300 1000, to keep the whole run \
         under 15 minutes; `BENCH_HOSTS=\"100 300 1000 2000\" scripts/bench` adds 2,000 hosts, \
         about 4 more minutes and 9 GiB). The agent rows run on the simulated dataplane; the \
         route row is the only one through real BIRD and a real kernel.\n\n",
    );
    out.push_str("## Raw output\n\n");
    for file in [
        "linux.txt",
        "linux_route.txt",
        "compute.txt",
        "agent.txt",
        "etcd.txt",
        "walks.txt",
        "whatif.txt",
    ] {
        let text = raw.text(file).unwrap_or_else(|| "not run\n".to_string());
        let _ = write!(out, "### {file}\n\n```\n{}```\n\n", text);
    }
    for s in &settles {
        let _ = writeln!(
            out,
            "- settle {} hosts: {} s, peak RSS {:.0} MiB",
            s.hosts, s.secs, s.peak_mib
        );
    }
    if let Err(e) = std::fs::write(md, out) {
        eprintln!("report: writing {md}: {e}");
        std::process::exit(1);
    }
    println!("report: wrote {md} and plots in {}", plots.display());
}

/// A ratio with two decimals, or three significant digits below 0.01 (so a tiny ratio does
/// not print as 0.00x).
fn fmt_ratio(r: f64) -> String {
    if r > 0.0 && r < 0.01 {
        format!("{r:.1e}x")
    } else {
        format!("{r:.2}x")
    }
}
