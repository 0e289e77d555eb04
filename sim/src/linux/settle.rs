//! `settle` on real hosts: poll every host's kernel until nothing changes and BGP has
//! carried every workload route.
//!
//! A host is settled when (a) its `iptables-save`, `ipset save` and `ip route` output (packet
//! counters stripped) is the same over [`STABLE_POLLS`] consecutive polls, and (b) for every
//! addressed workload it holds a route: on the workload's own host the agent's, on every other
//! host with a running agent one learnt over BGP (`proto bird`). The agents react to datastore
//! events at once, so a quiet window of a few polls follows every change they make.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::LinuxCluster;
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
        let missing = missing_routes(cluster).await;
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

/// Routes a settled cluster has and this one lacks, e.g. `host2 has no BGP route to
/// workload_A (192.168.1.1)`.
async fn missing_routes(cluster: &LinuxCluster) -> Vec<String> {
    let running: Vec<&str> = cluster
        .hosts()
        .filter(|h| cluster.agent_pid(h).is_some())
        .collect();
    let mut missing = Vec::new();
    for (workload, home) in cluster.workloads() {
        for addr in cluster.workload_addrs(workload) {
            for host in &running {
                let Some(ns) = cluster.host_netns(host) else {
                    continue;
                };
                let local = *host == home;
                let ok = if local {
                    let route = exec_in(ns, "ip", &["route", "show", &addr.to_string()]).await;
                    !route.trim().is_empty()
                } else {
                    // Remote workloads are reached through their block's route or, when
                    // borrowed, their own /32 (block aggregation): the most specific route
                    // covering the address must be BIRD's and not a blackhole.
                    let addr = addr.to_string();
                    let routes = exec_in(ns, "ip", &["route", "show", "match", &addr]).await;
                    most_specific(&routes)
                        .is_some_and(|r| r.contains("proto bird") && !r.starts_with("blackhole"))
                };
                if !ok {
                    let kind = if local { "local" } else { "BGP" };
                    missing.push(format!("{host} has no {kind} route to {workload} ({addr})"));
                }
            }
        }
    }
    missing
}

/// The line of `ip route show match <addr>` output with the longest prefix (the route the
/// kernel uses); a destination without `/` is a host route.
fn most_specific(routes: &str) -> Option<&str> {
    routes
        .lines()
        .filter_map(|line| {
            let dst = line.split_whitespace().find(|t| *t != "blackhole")?;
            let len = match dst.split_once('/') {
                Some((_, len)) => len.parse::<u8>().ok()?,
                None if dst == "default" => 0,
                None => 128,
            };
            Some((len, line))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_decides_which_route_is_used() {
        let routes = "default via 10.0.0.1 dev eth0\n\
                      blackhole 192.168.1.0/26 proto bird metric 32\n\
                      192.168.1.2 via 172.31.250.2 dev eth0 proto bird metric 32\n";
        assert_eq!(
            most_specific(routes),
            Some("192.168.1.2 via 172.31.250.2 dev eth0 proto bird metric 32")
        );
        let routes = "blackhole 192.168.1.0/26 proto bird metric 32\n";
        assert!(most_specific(routes).is_some_and(|r| r.starts_with("blackhole")));
        assert_eq!(most_specific(""), None);
    }

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
