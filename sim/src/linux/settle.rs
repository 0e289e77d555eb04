//! `settle` on real hosts: the cluster stopped changing, and holds what the datastore implies.
//!
//! A cluster is settled when, over [`STABLE_POLLS`] consecutive polls:
//! - every host's `iptables-save`, `ipset save` and `ip route` output (packet counters
//!   stripped) stays the same: the agents have finished applying;
//! - every running host's chains and hooks (read back from `iptables-save`) are those its
//!   agent computes from the datastore, and its BIRD config files the ones it renders,
//!   and its BGP-learnt (`proto bird`) routes are exactly those the simulator's BGP model
//!   predicts from the same datastore and the routes each kernel exports ([`predict`]), and
//!   its BGP sessions (`birdc show protocols`) are up exactly where that model says the
//!   configuration implies (no routes at all with the mesh off);
//! - every addressed workload has its local route on its own host (the agent plumbed it).
//!
//! On timeout the error lists every difference from that prediction and the hosts still
//! changing.
//!
//! [`predict`]: super::predict

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use calico_core::desired::{TableId, TableState};
use calico_core::iptables::IpFamily;
use calico_dataplane::linux::bird::parse_protocols;
use calico_dataplane::linux::iptables;
use tokio::time::Instant;

use super::cluster::LinuxCluster;
use super::predict::{self, HostView};
use super::LinuxError;

/// The bound on one settle.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time between polls.
pub const POLL: Duration = Duration::from_millis(250);
/// Consecutive identical polls that count as stable.
pub const STABLE_POLLS: usize = 3;

/// What one settle found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub polls: usize,
}

/// Waits until the cluster is settled, or fails after [`SETTLE_TIMEOUT`] naming what is
/// missing or still changing.
///
/// # Errors
/// `NotSettled` listing the missing routes and the hosts still changing.
pub async fn settle(cluster: &LinuxCluster) -> Result<Settled, LinuxError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last: Option<Vec<String>> = None;
    let mut stable = 0;
    let mut polls = 0;
    loop {
        polls += 1;
        let snapshot = snapshot(cluster).await;
        let mut missing = missing_routes(cluster).await;
        missing.extend(unpredicted(cluster).await);
        if last.as_ref() == Some(&snapshot) {
            stable += 1;
        } else {
            stable = 0;
        }
        if stable + 1 >= STABLE_POLLS && missing.is_empty() {
            return Ok(Settled { polls });
        }
        if Instant::now() >= deadline {
            let mut what = missing.join("; ");
            if stable + 1 < STABLE_POLLS {
                let changing = changing_hosts(cluster, last.as_deref(), &snapshot);
                if !what.is_empty() {
                    what.push_str("; ");
                }
                let _ = write!(what, "still changing: {}", changing.join(", "));
            }
            return Err(LinuxError::NotSettled {
                seconds: SETTLE_TIMEOUT.as_secs(),
                missing: what,
            });
        }
        last = Some(snapshot);
        tokio::time::sleep(POLL).await;
    }
}

fn changing_hosts(
    cluster: &LinuxCluster,
    before: Option<&[String]>,
    now: &[String],
) -> Vec<String> {
    cluster
        .hosts()
        .enumerate()
        .filter(|(i, _)| before.and_then(|b| b.get(*i)) != now.get(*i))
        .map(|(_, h)| h.to_string())
        .collect()
}

/// Runs `program args` in namespace `ns` and returns its stdout ("" on failure: a host
/// whose tool fails is then seen as changing or missing, and named at the timeout).
pub(crate) async fn exec_in(ns: &str, program: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => String::new(),
    }
}

/// One text per host (in host order): tables, sets and routes without counters.
async fn snapshot(cluster: &LinuxCluster) -> Vec<String> {
    let mut out = Vec::new();
    for host in cluster.hosts() {
        let Some(ns) = cluster.host_netns(host) else {
            continue;
        };
        let mut text = String::new();
        for (program, args) in [
            ("iptables-save", &[][..]),
            ("ip6tables-save", &[][..]),
            ("ipset", &["save"][..]),
            ("ip", &["route"][..]),
            ("ip", &["-6", "route"][..]),
        ] {
            text.push_str(&strip_counters(&exec_in(ns, program, args).await));
        }
        out.push(text);
    }
    out
}

/// Drops comment lines and chain counters (`:cali-x - [12:345]`) of save output.
fn strip_counters(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let line = match line.rfind(" [") {
            Some(i) if line.starts_with(':') => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Local routes a settled cluster has and this one lacks, e.g. `host1 has no local route to
/// workload_A (192.168.1.1)`.
async fn missing_routes(cluster: &LinuxCluster) -> Vec<String> {
    let mut missing = Vec::new();
    for (workload, home) in cluster.workloads() {
        if cluster.agent_pid(home).is_none() {
            continue;
        }
        let Some(ns) = cluster.host_netns(home) else {
            continue;
        };
        for addr in cluster.workload_addrs(workload) {
            let family = if addr.is_ipv6() { "-6" } else { "-4" };
            let route = exec_in(ns, "ip", &[family, "route", "show", &addr.to_string()]).await;
            if route.trim().is_empty() {
                missing.push(format!("{home} has no local route to {workload} ({addr})"));
            }
        }
    }
    missing
}

/// The BGP protocols of the BIRDs whose control sockets are in `run_dir` (name →
/// Established), from `birdc show protocols`; a daemon that does not answer has none.
async fn sessions(run_dir: &std::path::Path) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for socket in ["bird.ctl", "bird6.ctl"] {
        let socket = run_dir.join(socket);
        if !socket.exists() {
            continue;
        }
        let shown = tokio::process::Command::new("birdc")
            .arg("-s")
            .arg(&socket)
            .args(["show", "protocols"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        let Ok(shown) = shown else {
            continue;
        };
        let text = String::from_utf8_lossy(&shown.stdout);
        for row in parse_protocols(&text)
            .into_iter()
            .filter(|r| r.proto == "BGP")
        {
            let up = row.state == "up" && row.info.starts_with("Established");
            out.insert(row.name, up);
        }
    }
    out
}

/// Our chains and hooks in namespace `ns`, read from `iptables-save` / `ip6tables-save` the
/// way the Linux dataplane observes them (a table whose rules it cannot read is left out, and
/// so differs from any prediction that has it).
async fn our_tables(ns: &str) -> BTreeMap<TableId, TableState> {
    let mut out = BTreeMap::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let saved = exec_in(ns, iptables::save_tool(family), &[]).await;
        let installed = iptables::parse_save(&saved);
        for (table, installed) in &installed {
            if let Ok(Some(state)) = iptables::observe_table(*table, installed) {
                out.insert(
                    TableId {
                        family,
                        table: *table,
                    },
                    state,
                );
            }
        }
    }
    out
}

/// How the hosts differ from what the datastore implies ([`predict::differences`]), or why
/// the datastore could not be read.
async fn unpredicted(cluster: &LinuxCluster) -> Vec<String> {
    let dump = match cluster.store_dump().await {
        Ok(text) => text,
        Err(e) => return vec![format!("reading the datastore: {e}")],
    };
    let state = match predict::load(&dump) {
        Ok(state) => state,
        Err(e) => return vec![format!("reading the datastore dump: {e}")],
    };
    let mut views = BTreeMap::new();
    for host in cluster.hosts() {
        let Some(ns) = cluster.host_netns(host) else {
            continue;
        };
        let mut routes = predict::parse_routes(&exec_in(ns, "ip", &["-o", "route", "show"]).await);
        routes.extend(predict::parse_routes(
            &exec_in(ns, "ip", &["-o", "-6", "route", "show"]).await,
        ));
        let run_dir = cluster.data_dir(host).map(|d| d.join("bird"));
        let read = |file: &str| {
            run_dir
                .as_ref()
                .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        };
        views.insert(
            host.to_string(),
            HostView {
                running: cluster.agent_pid(host).is_some(),
                routes,
                bird_files: [read("bird.cfg"), read("bird6.cfg")],
                tables: our_tables(ns).await,
                sessions: match &run_dir {
                    Some(dir) => sessions(dir).await,
                    None => BTreeMap::new(),
                },
            },
        );
    }
    predict::differences(&state, &views)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_comments_are_ignored() {
        let a = "# Generated by iptables-save v1.8.9 on Mon\n*filter\n:INPUT ACCEPT [10:200]\n\
                 :cali-FORWARD - [0:0]\n-A FORWARD -j cali-FORWARD\nCOMMIT\n";
        let b = "# Generated by iptables-save v1.8.9 on Tue\n*filter\n:INPUT ACCEPT [99:9000]\n\
                 :cali-FORWARD - [5:6]\n-A FORWARD -j cali-FORWARD\nCOMMIT\n";
        assert_eq!(strip_counters(a), strip_counters(b));
        let c = b.replace("-A FORWARD -j cali-FORWARD\n", "");
        assert_ne!(strip_counters(a), strip_counters(&c));
    }
}
