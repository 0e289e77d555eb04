//! `expect` on real namespaces: send the probe and see whether it is answered.
//!
//! ICMP echo is `ping -c1 -W1`; TCP and UDP start `calico-sim probe listen` in the
//! destination's namespace and `calico-sim probe connect` in the source's. An answer means
//! allow; silence means deny. An expected allow is tried up to [`ALLOW_ATTEMPTS`] times (a
//! first packet may be lost to neighbour resolution); an expected deny once, since any answer
//! at all proves the path is open.

use std::net::Ipv4Addr;
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

/// Where a probe starts or ends: a namespace and, for a destination, an address.
struct Endpoint {
    ns: Option<String>,
    ip: Option<Ipv4Addr>,
    label: String,
}

fn resolve(cluster: &LinuxCluster, what: &str) -> Result<Endpoint, LinuxError> {
    if let Some(ns) = cluster.workload_netns(what) {
        return Ok(Endpoint {
            ns: Some(ns.to_string()),
            ip: cluster.workload_addrs(what).first().copied(),
            label: what.to_string(),
        });
    }
    let ip: Ipv4Addr = what.parse().map_err(|_| LinuxError::BadWorkload {
        workload: what.to_string(),
        reason: "neither a declared workload nor an IPv4 address".into(),
    })?;
    let owner = cluster
        .workloads()
        .find(|(w, _)| cluster.workload_addrs(w).contains(&ip))
        .and_then(|(w, _)| cluster.workload_netns(w))
        .or_else(|| {
            cluster
                .hosts()
                .find(|h| cluster.host_ip(h) == Some(ip))
                .and_then(|h| cluster.host_netns(h))
        });
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
    let from = resolve(cluster, src)?;
    let to = resolve(cluster, dst)?;
    let src_ns = from.ns.ok_or_else(|| LinuxError::BadWorkload {
        workload: src.to_string(),
        reason: "no workload or host has this address to send from".into(),
    })?;
    let dst_ip = to.ip.ok_or_else(|| LinuxError::BadWorkload {
        workload: dst.to_string(),
        reason: "has no address (calicoctl container add it first)".into(),
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
            for _ in 0..attempts {
                answered = succeeds(&src_ns, "ping", &["-c1", "-W1", &ip]).await?;
                if answered {
                    break;
                }
            }
            ("ping".to_string(), answered)
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
    let detail = if answered {
        format!("allow: {what} from {} to {} answered", from.label, to.label)
    } else {
        format!(
            "deny: {what} from {} to {} ({dst_ip}) unanswered after {attempts} attempt(s)",
            from.label, to.label
        )
    };
    Ok(Outcome {
        allowed: answered,
        detail,
    })
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
    let what = format!("starting a {transport}/{port} listener in namespace {ns}");
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
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
