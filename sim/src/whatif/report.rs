//! What a what-if found, printed as text (one line per changed flow, then a summary) or JSON.

use std::fmt::Write as _;
use std::net::IpAddr;

use calico_cli::ctl::whatif::FailOn;

use crate::{Probe, Verdict};

/// One flow whose verdict the change flips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowChange {
    pub src: String,
    pub src_addr: IpAddr,
    pub dst: String,
    pub dst_addr: IpAddr,
    pub probe: Probe,
    pub before: Verdict,
    pub after: Verdict,
    /// What decides the flow after the change: the rule, or the missing route.
    pub reason: String,
}

/// The answer to one what-if.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The proposed calicoctl arguments.
    pub command: Vec<String>,
    /// What the proposed command printed (on the simulated copy).
    pub command_output: String,
    /// Flows walked before and after.
    pub evaluated: usize,
    /// Endpoints in the snapshot or created by the change.
    pub endpoints: usize,
    /// Endpoints the change can affect (every flow evaluated has one at an end).
    pub affected: usize,
    /// Flows whose verdict changed, sorted by source, destination and probe.
    pub changes: Vec<FlowChange>,
    /// What the snapshot held that was not simulated.
    pub skipped: Vec<String>,
    /// Where the time went (for benchmarks; not printed).
    pub timings: Timings,
    /// The before/after matrix between the endpoints that have a changed flow (at most
    /// [`MATRIX_MAX`] of them), for `-o svg`.
    pub matrix: Matrix,
}

/// Endpoints a drawn matrix holds at most (the first by label).
pub const MATRIX_MAX: usize = 40;

/// Reachability between a few endpoints before and after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matrix {
    /// Row and column labels, sorted.
    pub labels: Vec<String>,
    /// `(row, column)` → the cell; a missing pair had no flow evaluated.
    pub cells: std::collections::BTreeMap<(usize, usize), Cell>,
}

/// The probes of one source → destination pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cell {
    pub probes: usize,
    pub allowed_before: usize,
    pub allowed_after: usize,
    /// Whether any probe's verdict changed.
    pub changed: bool,
}

/// Wall-clock time of each phase of a what-if.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// Building the simulated copy from the snapshot and settling it.
    pub build: std::time::Duration,
    /// Of which: the agents and BGP settling it.
    pub settle: std::time::Duration,
    /// Of which: putting every settled kernel aside (the "before" the walks come back to).
    pub put_aside: std::time::Duration,
    /// Running the proposed command and settling again (agents, then BGP).
    pub change: std::time::Duration,
    /// Walking the flows, after then before.
    pub walks: std::time::Duration,
}

impl Report {
    /// Flows allowed before and denied after.
    pub fn newly_denied(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.after == Verdict::Deny)
            .count()
    }

    /// Flows denied before and allowed after.
    pub fn newly_allowed(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.after == Verdict::Allow)
            .count()
    }

    /// Whether `--fail-on=<kind>` fails on this report.
    pub fn gate(&self, fail_on: Option<FailOn>) -> bool {
        match fail_on {
            None => false,
            Some(FailOn::Lost) => self.newly_denied() > 0,
            Some(FailOn::Gained) => self.newly_allowed() > 0,
            Some(FailOn::Any) => !self.changes.is_empty(),
        }
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} flows evaluated ({} of {} endpoints affected), {} newly denied, {} newly allowed",
            self.evaluated,
            self.affected,
            self.endpoints,
            self.newly_denied(),
            self.newly_allowed()
        )
    }

    /// `src -> dst proto[/port]: allow -> deny` per changed flow with its deciding rule
    /// indented under it, then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for skipped in &self.skipped {
            let _ = writeln!(out, "not simulated: {skipped}");
        }
        for c in &self.changes {
            let _ = writeln!(
                out,
                "{} -> {} {}: {} -> {}",
                c.src,
                c.dst,
                probe_label(c.probe),
                c.before,
                c.after
            );
            let _ = writeln!(
                out,
                "    {} -> {}; after: {}",
                c.src_addr, c.dst_addr, c.reason
            );
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// The report as one JSON object.
    pub fn json(&self) -> String {
        let changes: Vec<serde_json::Value> = self
            .changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "source": c.src,
                    "source_ip": c.src_addr.to_string(),
                    "destination": c.dst,
                    "destination_ip": c.dst_addr.to_string(),
                    "probe": probe_label(c.probe),
                    "before": c.before.to_string(),
                    "after": c.after.to_string(),
                    "reason": c.reason,
                })
            })
            .collect();
        let value = serde_json::json!({
            "command": self.command,
            "flows_evaluated": self.evaluated,
            "endpoints": self.endpoints,
            "endpoints_affected": self.affected,
            "newly_denied": self.newly_denied(),
            "newly_allowed": self.newly_allowed(),
            "changes": changes,
            "not_simulated": self.skipped,
        });
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// `icmp` / `icmpv6` for an echo request (what `ping` sends), the probe's own form otherwise.
pub fn probe_label(probe: Probe) -> String {
    match probe {
        Probe::Icmp {
            protocol,
            icmp_type: 8 | 128,
            icmp_code: 0,
        } => protocol.to_string(),
        other => other.to_string(),
    }
}
