//! [`DockerSeed`]: scenario lines on namespaced hosts ([`LinuxCluster`]: etcd, calico-node,
//! BIRD) whose workloads are real Docker containers of a [`DockerEngine`].
//!
//! - `workload <host> <name>` is the seed's `docker run --net=none --name=<name> -tid`.
//! - `<host>$ calicoctl ...` runs calicoctl in the host's namespace with `DOCKER_HOST` naming
//!   the engine's socket, and with `/run/netns` hidden behind an empty tmpfs (in that
//!   process's own mount namespace): `<CONTAINER>` can only resolve through Docker, never to
//!   a same-named namespace another test on this machine happens to have.
//! - `expect` pings with `docker exec <src> ping -c1 -W1 <dst>`; TCP and UDP run
//!   `calico-sim probe` in the containers' namespaces with `nsenter --net`.
//! - before each `expect`, every host must hold its route to every addressed container (the
//!   agent's on the container's host, a BGP-learnt `proto bird` one elsewhere), then
//!   [`settle`] waits until the hosts' tables stop changing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use calico_core::model::Protocol;
use calico_sim::linux::cluster::CtlOutput;
use calico_sim::linux::{settle, traffic, LinuxCluster};
use calico_sim::scenario::{command_outcome, Line, ScenarioError, ScenarioTarget, Step};
use calico_sim::Probe;
use tokio::time::Instant;

use super::engine::DockerEngine;

/// Tries for an expected allow (a first packet may be lost to neighbour resolution).
const ALLOW_ATTEMPTS: usize = 3;
/// How long the routes to the containers may take to appear on every host.
const ROUTES: Duration = Duration::from_secs(30);

/// The cluster, the engine, and which host each container was declared on.
#[derive(Debug)]
pub struct DockerSeed {
    // Declared first so it drops first: the agents stop before the engine goes.
    pub cluster: LinuxCluster,
    pub engine: DockerEngine,
    homes: BTreeMap<String, String>,
}

impl DockerSeed {
    pub fn new(cluster: LinuxCluster, engine: DockerEngine) -> DockerSeed {
        DockerSeed {
            cluster,
            engine,
            homes: BTreeMap::new(),
        }
    }

    /// `calicoctl args...` on `host` as the seed's user runs it, with `DOCKER_HOST` set to
    /// `docker_host` (see the module doc for the hidden `/run/netns`).
    ///
    /// # Panics
    /// On an undeclared host or when the process cannot start.
    pub async fn calicoctl_with(&self, host: &str, docker_host: &str, args: &[&str]) -> CtlOutput {
        let ns = self
            .cluster
            .host_netns(host)
            .unwrap_or_else(|| panic!("host {host} is not declared"));
        let data_dir = self.cluster.data_dir(host).expect("declared host");
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c"])
            .arg(r#"mount -t tmpfs calirs-no-netns /run/netns && exec "$@""#)
            .arg("sh")
            .arg(&self.cluster.config().calicoctl)
            .args(args)
            .env("HOSTNAME", host)
            .env("ETCD_ENDPOINTS", self.cluster.etcd_endpoint())
            .env("CALICO_DATASTORE", "etcd")
            .env("CALICO_DATA_DIR", data_dir)
            .env("DOCKER_HOST", docker_host)
            .env("DOCKER_CONFIG", self.engine.cli_config())
            .env_remove("ETCD_AUTHORITY")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running calicoctl on {host}: {e}"));
        CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// [`DockerSeed::calicoctl_with`] this engine's `DOCKER_HOST`.
    pub async fn calicoctl(&self, host: &str, args: &[&str]) -> CtlOutput {
        self.calicoctl_with(host, self.engine.host(), args).await
    }

    /// The container's global IPv4 addresses, as its namespace holds them.
    pub async fn addrs(&self, name: &str) -> Vec<Ipv4Addr> {
        let Ok(netns) = self.engine.netns(name) else {
            return Vec::new();
        };
        let text = output(
            "nsenter",
            &[
                &format!("--net={netns}"),
                "ip",
                "-4",
                "-o",
                "addr",
                "show",
                "scope",
                "global",
            ],
        )
        .await
        .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace().skip_while(|w| *w != "inet");
                words.next()?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect()
    }

    /// Routes a host lacks: on the container's own host any route, elsewhere one via a peer.
    async fn missing_routes(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (name, home) in &self.homes {
            for addr in self.addrs(name).await {
                for host in self.cluster.hosts() {
                    let ns = self.cluster.host_netns(host).unwrap_or_default();
                    let local = host == home;
                    // Remotely the address may be covered by its block's route (BIRD
                    // aggregates by IPAM block): ask the kernel which route it would use.
                    let verb = if local { "show" } else { "get" };
                    let route = output("ip", &["-n", ns, "route", verb, &addr.to_string()])
                        .await
                        .unwrap_or_default();
                    let ok = if local {
                        !route.trim().is_empty()
                    } else {
                        route.contains(" via ")
                    };
                    if !ok {
                        let kind = if local { "local" } else { "BGP" };
                        missing.push(format!("{host} has no {kind} route to {name} ({addr})"));
                    }
                }
            }
        }
        missing
    }

    /// Waits until every host routes to every addressed container, then until the hosts'
    /// tables are stable.
    async fn settle(&self) -> Result<(), String> {
        let deadline = Instant::now() + ROUTES;
        loop {
            let missing = self.missing_routes().await;
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {} s: {}",
                    ROUTES.as_secs(),
                    missing.join("; ")
                ));
            }
            tokio::time::sleep(settle::POLL).await;
        }
        settle::settle(&self.cluster)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Whether `probe` from container `src` to container `dst` is answered, and how it went.
    async fn check(
        &self,
        src: &str,
        dst: &str,
        probe: Probe,
        allow: bool,
    ) -> Result<(bool, String), String> {
        let dst_ip = *self.addrs(dst).await.first().ok_or_else(|| {
            format!("container {dst} has no address (calicoctl container add it first)")
        })?;
        let attempts = if allow { ALLOW_ATTEMPTS } else { 1 };
        let ip = dst_ip.to_string();
        let (what, answered) = match probe {
            Probe::Icmp {
                protocol: Protocol::Icmp,
                ..
            } => {
                let mut answered = false;
                for _ in 0..attempts {
                    let (ok, _) = self.engine.exec(src, &["ping", "-c1", "-W1", &ip])?;
                    answered = ok;
                    if ok {
                        break;
                    }
                }
                ("docker exec ping".to_string(), answered)
            }
            Probe::Ports {
                protocol: protocol @ (Protocol::Tcp | Protocol::Udp),
                dst_port,
                ..
            } => {
                let transport = if protocol == Protocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                let exe = self.cluster.config().probe_exe.display().to_string();
                let dst_ns = self.engine.netns(dst)?;
                let mut listener = listen(&dst_ns, &exe, transport, dst_port).await?;
                let src_ns = format!("--net={}", self.engine.netns(src)?);
                let port = dst_port.to_string();
                let args = [
                    src_ns.as_str(),
                    &exe,
                    "probe",
                    "connect",
                    transport,
                    &ip,
                    &port,
                    "--timeout-ms",
                    "1000",
                ];
                let mut answered = false;
                for _ in 0..attempts {
                    answered = output("nsenter", &args).await.is_ok();
                    if answered {
                        break;
                    }
                }
                let _ = listener.kill().await;
                (format!("{transport}/{dst_port}"), answered)
            }
            other => return Err(format!("probe {other:?} is not supported with containers")),
        };
        let verdict = if answered { "allow" } else { "deny" };
        Ok((
            answered,
            format!("{verdict}: {what} from {src} to {dst} ({dst_ip}), {attempts} attempt(s)"),
        ))
    }

    /// What to look at when a line fails: each host's routes, agent log and BIRD sessions, and
    /// dockerd's log.
    pub async fn diagnostics(&self) -> String {
        let mut text = String::new();
        for host in self.cluster.hosts() {
            let ns = self.cluster.host_netns(host).unwrap_or_default();
            let routes = output("ip", &["-n", ns, "route"])
                .await
                .unwrap_or_else(|e| e);
            let log = self
                .cluster
                .data_dir(host)
                .map(|d| tail(&d.join("calico-node.log"), 30))
                .unwrap_or_default();
            let status = self.calicoctl(host, &["status"]).await;
            let _ = write!(
                text,
                "--- {host} ({ns}) routes:\n{routes}--- {host} calicoctl status:\n{}{}\n--- {host} calico-node.log (tail):\n{log}\n",
                status.stdout, status.stderr
            );
        }
        let _ = write!(
            text,
            "--- dockerd log (tail):\n{}\n",
            self.engine.log_tail(15)
        );
        text
    }
}

#[async_trait(?Send)]
impl ScenarioTarget for DockerSeed {
    async fn step(&mut self, line: &Line) -> Result<String, ScenarioError> {
        let unmet = |reason: String| ScenarioError::Unmet {
            line: line.number,
            text: line.text.clone(),
            reason,
        };
        match &line.step {
            Step::Host { name, ip, ip6 } => {
                self.cluster
                    .add_host(name, *ip, *ip6)
                    .map_err(|e| unmet(e.to_string()))?;
                Ok(format!("host {name} at {ip}"))
            }
            Step::Workload { host, name } => {
                if self.cluster.host_netns(host).is_none() {
                    return Err(unmet(format!("no host {host} declared")));
                }
                let id = self.engine.run_workload(name).map_err(unmet)?;
                self.homes.insert(name.clone(), host.clone());
                Ok(format!("docker run --net=none --name={name}: {id}"))
            }
            Step::Calicoctl {
                host,
                args,
                must_fail,
                stdin: None,
            } => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = self.calicoctl(host, &args).await;
                let text = if out.success {
                    out.stdout.trim_end()
                } else {
                    out.stderr.trim_end()
                };
                command_outcome(out.success, *must_fail, text).map_err(unmet)
            }
            Step::Settle => {
                self.settle().await.map_err(unmet)?;
                Ok("settled".into())
            }
            Step::Expect {
                src,
                dst,
                probe,
                allow,
            } => {
                self.settle().await.map_err(unmet)?;
                let (answered, detail) =
                    self.check(src, dst, *probe, *allow).await.map_err(unmet)?;
                if answered == *allow {
                    Ok(detail)
                } else {
                    Err(unmet(format!("unexpected {detail}")))
                }
            }
            // The seed has neither; this harness runs the seed only.
            Step::External { .. } | Step::Calicoctl { stdin: Some(_), .. } => Err(unmet(
                "the Docker seed harness runs only host, workload, calicoctl, settle and expect lines"
                    .into(),
            )),
        }
    }
}

/// Runs `program args` and returns its stdout, or why it failed.
async fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `calico-sim probe listen` in namespace file `netns`, once it has bound the port.
async fn listen(
    netns: &str,
    exe: &str,
    transport: &str,
    port: u16,
) -> Result<tokio::process::Child, String> {
    let enter = format!("--net={netns}");
    traffic::start_listener(&["nsenter", &enter], exe.as_ref(), transport, port)
        .await
        .map_err(|e| e.to_string())
}

/// The last `lines` lines of a file ("" when unreadable).
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
