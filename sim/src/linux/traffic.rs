//! `expect` on real namespaces: send the probe and see whether it is answered.
//!
//! ICMP echo is `ping -c1 -W1`; TCP and UDP start `calico-sim probe listen` in the
//! destination's namespace and `calico-sim probe connect` in the source's. An answer means
//! allow; silence means deny. A destination address nobody holds is probed all the same (no
//! listener starts): the verdict is what happens to the packet, and `ping`'s own words (no
//! route, unreachable, no reply) are the explanation. An expected allow is tried up to [`ALLOW_ATTEMPTS`] times (a
//! first packet may be lost to neighbour resolution); an expected deny once, since any answer
//! at all proves the path is open.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use calico_core::model::Protocol;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::cluster::LinuxCluster;
use super::probe::READY;
use super::LinuxError;
use crate::Probe;

/// Tries for an expected allow.
pub const ALLOW_ATTEMPTS: usize = 3;
/// How long one probe waits for its answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// How long a listener may take to bind.
const LISTENER_READY: Duration = Duration::from_secs(5);

/// What the traffic showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub detail: String,
}

/// Where a probe starts or ends: a namespace (`None`: an address nobody holds) and an address.
struct Endpoint {
    ns: Option<String>,
    ip: Option<IpAddr>,
    label: String,
}

/// Resolves a workload, host or external machine name (to its address of `family`'s family,
/// when given) or an address (to whoever holds it, if anyone).
fn resolve(
    cluster: &LinuxCluster,
    what: &str,
    family: Option<IpAddr>,
) -> Result<Endpoint, LinuxError> {
    let pick = |addrs: Vec<IpAddr>| {
        addrs
            .iter()
            .copied()
            .find(|a| family.is_none_or(|f| f.is_ipv6() == a.is_ipv6()))
    };
    if let Some(ns) = cluster.workload_netns(what) {
        return Ok(Endpoint {
            ns: Some(ns.to_string()),
            ip: pick(cluster.workload_addrs(what)),
            label: what.to_string(),
        });
    }
    if let Some((ns, addrs)) = cluster.machine(what) {
        return Ok(Endpoint {
            ns: Some(ns.to_string()),
            ip: pick(addrs),
            label: what.to_string(),
        });
    }
    let ip: IpAddr = what.parse().map_err(|_| LinuxError::BadWorkload {
        workload: what.to_string(),
        reason: "neither a workload, a host, an external machine nor an IP address".into(),
    })?;
    let owner = cluster
        .workloads()
        .find(|(w, _)| cluster.workload_addrs(w).contains(&ip))
        .and_then(|(w, _)| cluster.workload_netns(w))
        .or_else(|| cluster.machine_netns(ip));
    Ok(Endpoint {
        ns: owner.map(str::to_string),
        ip: Some(ip),
        label: ip.to_string(),
    })
}

/// Sends `probe` from `src` to `dst` (workload names or addresses) and reports whether it
/// was answered.
///
/// # Errors
/// An unknown source, a destination without an address, a probe the kernel check does not
/// support, or a listener that cannot start.
pub async fn check(
    cluster: &LinuxCluster,
    src: &str,
    dst: &str,
    probe: Probe,
    expect_allow: bool,
) -> Result<Outcome, LinuxError> {
    // A literal destination address decides the family a named source sends from.
    let from = resolve(cluster, src, dst.parse().ok())?;
    let src_ns = from.ns.ok_or_else(|| LinuxError::BadWorkload {
        workload: src.to_string(),
        reason: "no workload, host or external machine holds this address to send from".into(),
    })?;
    let to = resolve(cluster, dst, from.ip)?;
    let dst_ip = to.ip.ok_or_else(|| LinuxError::BadWorkload {
        workload: dst.to_string(),
        reason: "has no address of the source's family (calicoctl container add it first)".into(),
    })?;
    let attempts = if expect_allow { ALLOW_ATTEMPTS } else { 1 };
    let exe = cluster.config().probe_exe.clone();
    let (what, answered) = match probe {
        Probe::Icmp {
            protocol: Protocol::Icmp,
            icmp_type: crate::probe::ICMP_ECHO_REQUEST,
            icmp_code: 0,
        } => {
            let ip = dst_ip.to_string();
            let mut answered = false;
            let mut said = String::new();
            for _ in 0..attempts {
                (answered, said) = ping(&src_ns, &ip).await?;
                if answered {
                    break;
                }
            }
            if answered {
                ("ping".to_string(), answered)
            } else {
                (format!("ping ({said})"), answered)
            }
        }
        Probe::Ports {
            protocol: protocol @ (Protocol::Tcp | Protocol::Udp),
            dst_port,
            ..
        } => {
            let transport = if protocol == Protocol::Tcp { "tcp" } else { "udp" };
            let mut listener = match &to.ns {
                Some(ns) => Some(listen(ns, &exe, transport, dst_port).await?),
                None => None,
            };
            let exe = exe.display().to_string();
            let (ip, port, timeout) = (
                dst_ip.to_string(),
                dst_port.to_string(),
                ANSWER_WAIT.as_millis().to_string(),
            );
            let args = ["probe", "connect", transport, &ip, &port, "--timeout-ms", &timeout];
            let mut answered = false;
            for _ in 0..attempts {
                answered = succeeds(&src_ns, &exe, &args).await?;
                if answered {
                    break;
                }
            }
            if let Some(child) = listener.as_mut() {
                let _ = child.kill().await;
            }
            (format!("{transport}/{dst_port}"), answered)
        }
        other => {
            return Err(LinuxError::BadWorkload {
                workload: src.to_string(),
                reason: format!(
                    "probe {other:?} cannot be sent on the linux dataplane (icmp echo, tcp and udp can)"
                ),
            })
        }
    };
    let held = if to.ns.is_some() {
        String::new()
    } else {
        ", held by nobody".to_string()
    };
    let detail = if answered {
        format!("allow: {what} from {} to {} answered", from.label, to.label)
    } else {
        format!(
            "deny: {what} from {} to {} ({dst_ip}{held}) unanswered after {attempts} attempt(s)",
            from.label, to.label
        )
    };
    Ok(Outcome {
        allowed: answered,
        detail,
    })
}

/// `ping -c1 -W1 ip` in namespace `ns`: whether it was answered, and else what ping said
/// (`connect: Network is unreachable`, `Destination Host Unreachable`, or no reply at all).
async fn ping(ns: &str, ip: &str) -> Result<(bool, String), LinuxError> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-c1", "-W1", ip])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|reason| LinuxError::Io {
            what: format!("running ping in namespace {ns}"),
            reason,
        })?;
    if out.status.success() {
        return Ok((true, String::new()));
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((false, ping_failure(&text)))
}

/// The line of failed `ping` output that says why: an ICMP error or a local error, else
/// "no reply".
fn ping_failure(text: &str) -> String {
    let reason = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("Unreachable") || l.contains("unreachable") || l.starts_with("ping:"));
    match reason {
        Some(line) => match line.split_once(": ") {
            // "From 172.31.250.1 icmp_seq=1 Destination Host Unreachable" is kept whole.
            Some(("ping", rest)) => rest.to_string(),
            _ => line.to_string(),
        },
        None => "no reply".to_string(),
    }
}

/// Whether `program args` exits 0 in namespace `ns`.
async fn succeeds(ns: &str, program: &str, args: &[&str]) -> Result<bool, LinuxError> {
    let status = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|reason| LinuxError::Io {
            what: format!("running {program} in namespace {ns}"),
            reason,
        })?;
    Ok(status.success())
}

/// Starts `probe listen` in `ns` and waits until it has bound the port.
async fn listen(
    ns: &str,
    exe: &std::path::Path,
    transport: &str,
    port: u16,
) -> Result<tokio::process::Child, LinuxError> {
    start_listener(&["ip", "netns", "exec", ns], exe, transport, port).await
}

/// Starts `<enter...> <exe> probe listen <transport> <port>`, where `enter` is the command
/// that runs it inside a network namespace (`ip netns exec <name>`, `nsenter --net=<file>`),
/// and waits until it reports the port bound.
///
/// # Errors
/// The process could not start, or did not report [`READY`] in time (port in use?).
pub async fn start_listener(
    enter: &[&str],
    exe: &std::path::Path,
    transport: &str,
    port: u16,
) -> Result<tokio::process::Child, LinuxError> {
    let (program, enter_args) = enter.split_first().ok_or_else(|| LinuxError::Command {
        command: "starting a listener".into(),
        reason: "no command to enter the namespace".into(),
    })?;
    let what = format!(
        "starting a {transport}/{port} listener with `{}`",
        enter.join(" ")
    );
    let mut child = tokio::process::Command::new(program)
        .args(enter_args)
        .arg(exe)
        .args(["probe", "listen", transport, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|reason| LinuxError::Io {
            what: what.clone(),
            reason,
        })?;
    let stdout = child.stdout.take().ok_or_else(|| LinuxError::Command {
        command: what.clone(),
        reason: "no stdout".into(),
    })?;
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    let read = tokio::time::timeout(LISTENER_READY, reader.read_line(&mut line));
    match read.await {
        Ok(Ok(_)) if line.trim() == READY => Ok(child),
        _ => {
            let _ = child.kill().await;
            Err(LinuxError::Command {
                command: what,
                reason: format!("the listener did not report {READY:?} (port in use?)"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_says_why_it_failed() {
        let no_route = "ping: connect: Network is unreachable\n";
        assert_eq!(ping_failure(no_route), "connect: Network is unreachable");
        let icmp = "PING 192.168.2.2 (192.168.2.2) 56(84) bytes of data.\n\
                    From 172.31.250.2 icmp_seq=1 Destination Host Unreachable\n\n\
                    --- 192.168.2.2 ping statistics ---\n1 packets transmitted, 0 received\n";
        assert_eq!(
            ping_failure(icmp),
            "From 172.31.250.2 icmp_seq=1 Destination Host Unreachable"
        );
        let silent = "PING 192.168.2.2 (192.168.2.2) 56(84) bytes of data.\n\n\
                      --- 192.168.2.2 ping statistics ---\n1 packets transmitted, 0 received\n";
        assert_eq!(ping_failure(silent), "no reply");
    }
}
