//! What-if: which flows a proposed calicoctl command would allow or deny, answered on a
//! simulated copy of the cluster (`calicoctl what-if`, `calico-sim what-if`).
//!
//! - [`build`]: the world from a datastore snapshot — every registered host running its
//!   agent, every endpoint plumbed as recorded — settled.
//! - [`flows`]: the ends (endpoints, and hosts with host endpoints), probes (echo, every port
//!   a rule names, `--probe`), the walk of each flow, on every core.
//! - [`affected`]: which endpoints (and on which side: flows to them, from them) and hosts
//!   the change can affect, from the agents' applied changes.
//! - [`report`]: the changed flows, summary, `--fail-on`; `svg`: the matrix as a picture.
//!
//! Data flow: snapshot → [`build::build`] (settled "before") → the kernels are put aside →
//! the proposed command runs with calicoctl's own code on the copy → each agent steps until
//! quiet, reporting what its calculator changed, then BGP settles ("after") →
//! [`affected::endpoints`] → the flows from an end affected outbound or to one affected
//! inbound are walked after, then with the kernels put aside swapped back in, before, for
//! their verdicts only → the flows whose verdict differs, walked after once more in full for
//! the rule that decides them.
//!
//! Policies and resource files need no machinery of their own: a proposed `apply -f` runs
//! through `calico_cli::ctl` like any command (its file travels in the request's `stdin`),
//! and a policy's chains and selector sets are in [`affected`]'s index beside profiles'
//! chains and tag sets.

pub mod affected;
pub mod build;
mod error;
pub mod flows;
pub mod report;
mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use calico_cli::ctl::whatif::{WhatIfOutput, WhatIfRequest};
use calico_cli::ctl::{self, Ctl};
use calico_core::cluster::ClusterState;
use calico_dataplane::sim::{Detail, Kernel, RouteProto, SimDataplane, WireConfig, ROOT_NS};
use ipnet::IpNet;

pub use error::WhatIfError;
pub use report::{FlowChange, Report};

use crate::scenario::{NodeRequests, SimNodeControl};
use crate::{agent, ops, Probe, SimError, World};
use affected::Observed;
use build::{Cluster, SnapshotResolver};

/// Which flows a what-if walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only flows with an endpoint the change can affect at one end (the default).
    Affected,
    /// Every flow between every pair of endpoints: the reference the shortcut is tested
    /// against.
    Full,
}

/// Answers `request` and renders it as asked: the text to print and whether `--fail-on`
/// matched. With `-o svg=FILE` the picture is written to FILE too (and the text report says
/// so; a JSON one stays plain JSON).
///
/// # Errors
/// As [`evaluate`]; writing the picture.
pub async fn answer(request: &WhatIfRequest) -> Result<(String, bool), WhatIfError> {
    let report = evaluate(request, Scope::Affected).await?;
    let gate = report.gate(request.fail_on);
    if let Some(path) = &request.svg {
        svg::draw(&report, path)?;
    }
    let text = match (&request.output, &request.svg) {
        (WhatIfOutput::Json, _) => report.json(),
        (WhatIfOutput::Text, None) => report.text(),
        (WhatIfOutput::Text, Some(path)) => {
            format!("{}matrix drawn to {}\n", report.text(), path.display())
        }
    };
    Ok((text, gate))
}

/// Runs the what-if of `request` on a simulated copy of its snapshot.
///
/// # Errors
/// A bad probe; the snapshot not simulating; the proposed command failing.
pub async fn evaluate(request: &WhatIfRequest, scope: Scope) -> Result<Report, WhatIfError> {
    let extra = request
        .probes
        .iter()
        .map(|spec| {
            spec.parse::<Probe>().map_err(|e| WhatIfError::Probe {
                spec: spec.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = std::time::Instant::now();
    let Cluster {
        mut world,
        namespaces,
        skipped,
        settling,
    } = build::build(&request.snapshot).await?;
    let before = ops::cluster_state(world.store().as_ref()).await?;
    let aside = std::time::Instant::now();
    let mut saved = save_kernels(&world);
    let put_aside = aside.elapsed();
    let built = started.elapsed();
    let running_before = running(&world);

    let command_host = request.hostname.clone();
    let command_output = run_command(&mut world, request, &before, &namespaces).await?;
    let mut observed = settle_observing(&mut world).await?;
    let running_after = running(&world);
    observed
        .whole_hosts
        .extend(running_before.symmetric_difference(&running_after).cloned());
    // The command's own plumbing (veths, addresses) is no agent change: compare the
    // namespaces of its host with the kernel put aside.
    if let (Some(old), Ok(host)) = (saved.get(&command_host), world.host(&command_host)) {
        let now = host.dataplane().lock();
        observed.namespaces.extend(
            changed_namespaces(old, &now)
                .into_iter()
                .map(|ns| (command_host.clone(), ns)),
        );
    }
    observed
        .bgp_destinations
        .extend(bgp_changes(&world, &saved));
    let after = ops::cluster_state(world.store().as_ref()).await?;

    let changed = started.elapsed();
    let members = flows::members(&before, &after);
    let probes = flows::probes(&before, &after, &extra);
    let affected: Option<Vec<affected::Sides>> = match scope {
        Scope::Full => None,
        Scope::Affected => {
            let sides = affected::endpoints(&before, &after, &observed, &namespaces.all());
            let hosts = affected::hosts(&before, &after, &observed);
            let side = |m: &flows::Member| match &m.end {
                flows::End::Workload(id) => sides.get(id).copied().unwrap_or_default(),
                flows::End::Host(h) if hosts.contains(h) => affected::Sides::BOTH,
                flows::End::Host(_) => affected::Sides::default(),
            };
            Some(members.iter().map(side).collect())
        }
    };
    let affected_count = affected
        .as_ref()
        .map_or(members.len(), |s| s.iter().filter(|s| s.any()).count());
    let flows = flows::flows(&members, &probes, affected.as_deref());
    let fabric = flows::Fabric::of(&world);
    // Both halves walk for verdicts only; the few flows whose verdict changed are walked
    // again after, in full, for the rule that decides them.
    let brief = Detail::Verdict;
    let mut after_outcomes = flows::evaluate(&fabric, &after, &namespaces, &members, &flows, brief);
    swap_kernels(&world, &mut saved);
    let before_outcomes = flows::evaluate(&fabric, &before, &namespaces, &members, &flows, brief);
    swap_kernels(&world, &mut saved);
    let changed_flows: Vec<usize> = (0..flows.len())
        .filter(|&i| before_outcomes[i].verdict != after_outcomes[i].verdict)
        .collect();
    let explained = flows::explain(
        &fabric,
        &after,
        &namespaces,
        &members,
        &flows,
        &changed_flows,
    );
    for (i, outcome) in changed_flows.into_iter().zip(explained) {
        // Same kernels, a fresh probe number: the same verdict (only conntrack could tell
        // the two walks apart, and the fresh number keeps the first walk's entries away).
        debug_assert_eq!(
            outcome.verdict, after_outcomes[i].verdict,
            "{}",
            outcome.reason
        );
        after_outcomes[i].reason = outcome.reason;
    }
    let timings = report::Timings {
        build: built,
        settle: settling,
        put_aside,
        change: changed - built,
        walks: started.elapsed() - changed,
    };

    let mut changes: Vec<FlowChange> = flows
        .iter()
        .zip(before_outcomes.iter().zip(after_outcomes.iter()))
        .filter(|(_, (b, a))| b.verdict != a.verdict)
        .map(|(flow, (b, a))| FlowChange {
            src: members[flow.src].label.clone(),
            src_addr: flow.src_addr,
            dst: members[flow.dst].label.clone(),
            dst_addr: flow.dst_addr,
            probe: flow.probe,
            before: b.verdict,
            after: a.verdict,
            reason: a.reason.clone(),
        })
        .collect();
    let matrix = matrix(
        &members,
        &flows,
        &before_outcomes,
        &after_outcomes,
        &changes,
    );
    changes.sort_by(|x, y| {
        (&x.src, &x.dst, x.probe, x.src_addr, x.dst_addr)
            .cmp(&(&y.src, &y.dst, y.probe, y.src_addr, y.dst_addr))
    });
    let report = Report {
        command: request.command.clone(),
        command_output,
        evaluated: flows.len(),
        endpoints: members.len(),
        affected: affected_count,
        changes,
        skipped,
        timings,
        matrix,
    };
    discard((world, saved, fabric, before, after, namespaces));
    Ok(report)
}

/// Frees the simulated cluster on a thread of its own, so the answer does not wait for it:
/// a big snapshot's world (every agent's calculator holds the whole cluster) takes seconds
/// to free, about as long as the walks.
fn discard<T: Send + 'static>(copy: T) {
    let freeing = std::thread::Builder::new().name("what-if free".into());
    // A thread that cannot start drops its closure, and the copy with it, right here: the
    // wait we tried to spare, nothing worse.
    let _ = freeing.spawn(move || drop(copy));
}

/// The before/after matrix between the endpoints with a changed flow (the first
/// [`report::MATRIX_MAX`] by label).
fn matrix(
    members: &[flows::Member],
    flows: &[flows::Flow],
    before: &[flows::Outcome],
    after: &[flows::Outcome],
    changes: &[FlowChange],
) -> report::Matrix {
    let labels: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| [c.src.as_str(), c.dst.as_str()])
        .collect();
    let labels: Vec<String> = labels
        .into_iter()
        .take(report::MATRIX_MAX)
        .map(str::to_string)
        .collect();
    let position = |member: usize| labels.iter().position(|l| *l == members[member].label);
    let mut cells: BTreeMap<(usize, usize), report::Cell> = BTreeMap::new();
    for ((flow, b), a) in flows.iter().zip(before).zip(after) {
        let (Some(row), Some(col)) = (position(flow.src), position(flow.dst)) else {
            continue;
        };
        let cell = cells.entry((row, col)).or_default();
        cell.probes += 1;
        cell.allowed_before += usize::from(b.verdict == crate::Verdict::Allow);
        cell.allowed_after += usize::from(a.verdict == crate::Verdict::Allow);
        cell.changed |= b.verdict != a.verdict;
    }
    report::Matrix { labels, cells }
}

/// Runs the proposed command as calicoctl on `request.hostname` would, against the world's
/// copy of the store and that host's simulated kernel; applies the agent starts and stops
/// it asked for.
async fn run_command(
    world: &mut World,
    request: &WhatIfRequest,
    before: &ClusterState,
    namespaces: &build::Namespaces,
) -> Result<String, WhatIfError> {
    let host = &request.hostname;
    let dataplane = match world.host(host) {
        Ok(h) => h.dataplane().clone(),
        // A host the snapshot does not register yet (`calicoctl node` proposed on it).
        Err(_) => SimDataplane::new(host, WireConfig::eth0(Vec::new())),
    };
    let orchestrators = before
        .endpoints
        .keys()
        .filter(|id| id.host == *host)
        .map(|id| (id.workload.clone(), id.orchestrator.clone()))
        .collect();
    let requests = NodeRequests::default();
    let ctl = Ctl {
        store: world.store().clone(),
        hostname: host.clone(),
        plumbing: Arc::new(dataplane.clone()),
        resolver: Arc::new(SnapshotResolver {
            host: host.clone(),
            dataplane,
            namespaces: namespaces.clone(),
            orchestrators,
        }),
        node: Arc::new(SimNodeControl {
            host: host.clone(),
            requests: requests.clone(),
        }),
    };
    let output = ctl::run_with_input(&ctl, &request.command, &request.stdin)
        .await
        .map_err(|e| WhatIfError::Command {
            command: request.command.join(" "),
            reason: e.to_string(),
        })?;
    for (host, start) in requests.take() {
        if start {
            world.start_agent(&host)?;
        } else {
            world.stop_agent(&host)?;
        }
    }
    Ok(output)
}

/// Steps every running agent until a round is quiet, keeping each step's applied changes
/// (what its calculator's deltas did to its kernel), then settles BGP.
async fn settle_observing(world: &mut World) -> Result<Observed, WhatIfError> {
    let hosts: Vec<String> = running(world).into_iter().collect();
    let mut observed = Observed::default();
    let mut quiet = false;
    for _ in 0..crate::world::MAX_SETTLE_ROUNDS {
        let mut busy = false;
        for host in &hosts {
            if let Some(step) = world.poll_agent(host).await? {
                busy |= agent::busy(&step);
                if step.resnapshot {
                    // A fresh snapshot re-applies what differs; count the host as changed.
                    observed.whole_hosts.insert(host.clone());
                }
                if step.changed() {
                    observed
                        .changes
                        .entry(host.clone())
                        .or_default()
                        .extend(step.changes);
                }
            }
        }
        if !busy {
            quiet = true;
            break;
        }
    }
    if !quiet {
        return Err(SimError::NotSettled {
            rounds: crate::world::MAX_SETTLE_ROUNDS,
            changing: "agents after the proposed change".into(),
        }
        .into());
    }
    let report = world.settle().await?;
    // Agents were quiet; anything they still did is not in `changes`, so trust nothing.
    observed.everything = report.dataplane_changes > 0;
    Ok(observed)
}

fn running(world: &World) -> BTreeSet<String> {
    world
        .hosts()
        .filter(|h| h.agent_running())
        .map(|h| h.name().to_string())
        .collect()
}

/// A copy of every host's kernel as it is now, copied on every core (a big snapshot's
/// kernels hold a million routes).
fn save_kernels(world: &World) -> BTreeMap<String, Kernel> {
    let hosts: Vec<(&str, &SimDataplane)> =
        world.hosts().map(|h| (h.name(), h.dataplane())).collect();
    let copied = crate::cores::split(&hosts, |_, part| {
        let copy = |(name, dataplane): &(&str, &SimDataplane)| {
            (name.to_string(), dataplane.lock().clone())
        };
        part.iter().map(copy).collect()
    });
    copied.into_iter().collect()
}

/// Exchanges every host's kernel with its saved copy (twice restores).
fn swap_kernels(world: &World, saved: &mut BTreeMap<String, Kernel>) {
    for host in world.hosts() {
        if let Some(kernel) = saved.get_mut(host.name()) {
            std::mem::swap(&mut *host.dataplane().lock(), kernel);
        }
    }
}

/// Destinations whose BGP-learnt route differs between a host's saved kernel and its
/// kernel now, on any host.
fn bgp_changes(world: &World, saved: &BTreeMap<String, Kernel>) -> BTreeSet<IpNet> {
    let learnt = |k: &Kernel| -> BTreeSet<(IpNet, Option<std::net::IpAddr>)> {
        k.ns(ROOT_NS)
            .map(|space| {
                space
                    .routes
                    .iter()
                    .filter(|r| r.proto == RouteProto::Bird || r.dev.is_none() && r.via.is_none())
                    .map(|r| (r.dst, r.via))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for host in world.hosts() {
        let Some(old) = saved.get(host.name()) else {
            continue;
        };
        let now = host.dataplane().lock();
        // Route tables share their routes with the copy put aside until one changes, so an
        // untouched table compares equal at once.
        if let (Ok(was), Ok(is)) = (old.ns(ROOT_NS), now.ns(ROOT_NS)) {
            if was.routes == is.routes {
                continue;
            }
        }
        let (old, new) = (learnt(old), learnt(&now));
        out.extend(old.symmetric_difference(&new).map(|(dst, _)| *dst));
    }
    out
}

/// Workload namespaces whose links (names, addresses, MACs, state) differ.
fn changed_namespaces(old: &Kernel, new: &Kernel) -> BTreeSet<String> {
    let links = |k: &Kernel| -> BTreeMap<String, Vec<calico_dataplane::sim::Link>> {
        let mut by_ns: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for link in k.links.values().filter(|l| l.ns != ROOT_NS) {
            let mut link = link.clone();
            link.id = 0;
            by_ns.entry(link.ns.clone()).or_default().push(link);
        }
        by_ns
    };
    let (old, new) = (links(old), links(new));
    old.keys()
        .chain(new.keys())
        .filter(|ns| old.get(*ns) != new.get(*ns))
        .cloned()
        .collect()
}

/// `calicoctl what-if ...` as the scenario runner runs it: `args` is the whole calicoctl
/// line (global options allowed), answered in this process on a snapshot of `ctl.store`.
/// A `--fail-on` match is [`ctl::CtlError::WhatIfGate`], as the binary reports it.
///
/// # Errors
/// As calicoctl's what-if: bad options, the snapshot, the proposed command.
pub async fn run_in_process(
    ctl: &Ctl,
    args: &[String],
    stdin: &str,
) -> Result<String, ctl::CtlError> {
    let (globals, args) = ctl::split_globals(args)?;
    let ctl = Ctl {
        hostname: globals.hostname.unwrap_or_else(|| ctl.hostname.clone()),
        ..ctl.clone()
    };
    let request = ctl::whatif::request(&ctl, &args, stdin).await?;
    let (text, gate) = answer(&request).await.map_err(|e| ctl::CtlError::WhatIf {
        action: "what-if".into(),
        reason: e.to_string(),
    })?;
    if gate {
        return Err(ctl::CtlError::WhatIfGate { report: text });
    }
    Ok(text)
}
