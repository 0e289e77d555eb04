//! The README's demo: the seed's two-host lifecycle (`scenarios/seed.scenario`) on embedded
//! sled and the simulator, narrating after each user action what the system did: keys
//! written, chains and routes installed, routes learned over BGP, and reachability.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::Arc;

use calico_backends::Store;
use calico_core::desired::DesiredState;
use calico_core::plan::{plan, Change};
use ipnet::IpNet;

use crate::scenario::{self, Runner, ScenarioTarget, Step};

/// The seed scenario the demo narrates.
pub const SEED: &str = include_str!("../scenarios/seed.scenario");

/// Longest value shown for a datastore key.
const MAX_VALUE_CHARS: usize = 110;

/// What one host held before a step: dataplane state and BGP-learned routes.
struct HostSnapshot {
    state: DesiredState,
    bgp: BTreeMap<IpNet, IpAddr>,
}

/// Runs the seed on `store`, writing the narration to `out` as it goes.
///
/// # Errors
/// When a scenario line is unmet (which would be a bug: the seed is the product's contract).
pub async fn run(store: Arc<dyn Store>, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let lines = scenario::parse(SEED)?;
    let mut runner = Runner::new(store.clone());
    let mut comment = String::new();
    let bold = std::io::stdout().is_terminal();
    let raw: Vec<&str> = SEED.lines().collect();
    let mut next_raw = 0;
    for line in &lines {
        // The scenario's own comments above this line narrate why it matters.
        let notes: Vec<&str> = raw[next_raw..line.number.saturating_sub(1)]
            .iter()
            .filter_map(|l| l.trim().strip_prefix('#'))
            .map(str::trim)
            .collect();
        next_raw = line.number;
        let before_keys = listing(&store).await?;
        let before_hosts = snapshot(&runner);
        let detail = runner.step(line).await?;
        if matches!(line.step, Step::Calicoctl { .. }) {
            runner
                .step(&scenario::Line {
                    step: Step::Settle,
                    ..line.clone()
                })
                .await?;
        }
        comment.clear();
        if !notes.is_empty() {
            writeln!(comment, "\n# {}", notes.join("\n# "))?;
        }
        if notes.is_empty() {
            comment.push('\n');
        }
        if bold {
            writeln!(comment, "\x1b[1m{}\x1b[0m", line.text)?;
        } else {
            writeln!(comment, "{}", line.text)?;
        }
        match &line.step {
            Step::Expect { .. } => writeln!(comment, "  {detail}")?,
            Step::Calicoctl { .. } if !detail.is_empty() => {
                for l in detail.lines() {
                    writeln!(comment, "  | {l}")?;
                }
            }
            _ => {}
        }
        narrate_keys(&mut comment, &before_keys, &listing(&store).await?)?;
        narrate_hosts(&mut comment, &before_hosts, &snapshot(&runner))?;
        out.write_all(comment.as_bytes())?;
    }
    writeln!(
        out,
        "\nThe seed's lifecycle completed: every expectation held."
    )?;
    Ok(())
}

async fn listing(store: &Arc<dyn Store>) -> anyhow::Result<BTreeMap<String, String>> {
    let (kvs, _) = store.list("/calico/").await?;
    Ok(kvs
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
        .collect())
}

fn snapshot(runner: &Runner) -> BTreeMap<String, HostSnapshot> {
    runner
        .world()
        .hosts()
        .map(|h| {
            let dp = h.dataplane();
            (
                h.name().to_string(),
                HostSnapshot {
                    state: dp.observe_now(),
                    bgp: dp.bgp_routes(),
                },
            )
        })
        .collect()
}

fn shorten(value: &str) -> String {
    if value.chars().count() <= MAX_VALUE_CHARS {
        return value.to_string();
    }
    let cut: String = value.chars().take(MAX_VALUE_CHARS).collect();
    format!("{cut}…")
}

fn narrate_keys(
    out: &mut String,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> std::fmt::Result {
    let mut lines = Vec::new();
    for (key, value) in after {
        match before.get(key) {
            None => lines.push(format!("    + {key} = {}", shorten(value))),
            Some(old) if old != value => lines.push(format!("    ~ {key} = {}", shorten(value))),
            _ => {}
        }
    }
    lines.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| format!("    - {k}")),
    );
    if !lines.is_empty() {
        writeln!(out, "  datastore:")?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn narrate_hosts(
    out: &mut String,
    before: &BTreeMap<String, HostSnapshot>,
    after: &BTreeMap<String, HostSnapshot>,
) -> std::fmt::Result {
    for (host, now) in after {
        let empty = HostSnapshot {
            state: DesiredState::default(),
            bgp: BTreeMap::new(),
        };
        let was = before.get(host).unwrap_or(&empty);
        let changes = plan(&now.state, &was.state).changes;
        let sysctls = changes
            .iter()
            .filter(|c| matches!(c, Change::SetSysctl { .. }))
            .count();
        let mut lines: Vec<String> = changes
            .iter()
            .filter(|c| !matches!(c, Change::SetSysctl { .. }))
            .map(|c| format!("    {c}"))
            .collect();
        if sysctls > 0 {
            lines.push(format!(
                "    set {sysctls} sysctls (forwarding, proxy_arp, rp_filter, ...)"
            ));
        }
        for (dst, via) in &now.bgp {
            if was.bgp.get(dst) != Some(via) {
                lines.push(format!("    BGP: learned {dst} via {via} (proto bird)"));
            }
        }
        for dst in was.bgp.keys().filter(|d| !now.bgp.contains_key(*d)) {
            lines.push(format!("    BGP: withdrawn {dst}"));
        }
        if !lines.is_empty() {
            writeln!(out, "  {host}:")?;
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}
