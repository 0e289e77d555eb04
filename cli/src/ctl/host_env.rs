//! What calicoctl needs from the real machine: its hostname, a workload resolver over network
//! namespaces, and [`LinuxNode`], the node agent as a process with BIRD's sessions in its
//! status. (Workload plumbing is `calico_dataplane::linux::LinuxPlumbing`.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use calico_dataplane::linux::bird::{self, parse_protocols};
use calico_dataplane::linux::BgpProtocol;

use super::context::DiagFile;
use super::{BgpPeerStatus, NodeControl, NodeStartOptions, NodeStatus, Workload, WorkloadResolver};
use crate::agent::launcher::ProcessNodeControl;

/// The hostname: `--hostname`, then `$HOSTNAME`, then `/proc/sys/kernel/hostname`.
pub fn hostname(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
}

/// Resolves `<CONTAINER>` as a name under `/var/run/netns` (orchestrator `netns`), an absolute
/// netns path (orchestrator `namespace`, the path with `/` turned into `-`, as the original),
/// a PID (`/proc/<pid>/ns/net`, orchestrator `pid`), or else a Docker container name or id
/// (orchestrator `docker`, see [`super::docker`]).
#[derive(Debug, Clone)]
pub struct NetnsResolver {
    /// Where named namespaces live (`/var/run/netns`).
    pub netns_dir: std::path::PathBuf,
}

impl Default for NetnsResolver {
    fn default() -> Self {
        NetnsResolver {
            netns_dir: "/var/run/netns".into(),
        }
    }
}

fn escape(path: &str) -> String {
    path.trim_start_matches('/').replace('/', "-")
}

#[async_trait]
impl WorkloadResolver for NetnsResolver {
    async fn resolve(&self, container: &str) -> Option<Workload> {
        self.lookup(container).await.ok()
    }

    async fn lookup(&self, container: &str) -> Result<Workload, String> {
        if container.is_empty() || container.contains('\0') {
            return Err("not a container name, namespace or PID".into());
        }
        if container.starts_with('/') {
            return if Path::new(container).exists() {
                Ok(Workload {
                    netns: container.to_string(),
                    orchestrator: "namespace".into(),
                    workload_id: escape(container),
                })
            } else {
                Err(format!("no network namespace file {container}"))
            };
        }
        if container.bytes().all(|b| b.is_ascii_digit()) {
            let path = format!("/proc/{container}/ns/net");
            return if Path::new(&path).exists() {
                Ok(Workload {
                    netns: path,
                    orchestrator: "pid".into(),
                    workload_id: container.to_string(),
                })
            } else {
                Err(format!("no process {container} ({path} does not exist)"))
            };
        }
        if container.contains('/') || container.starts_with('.') {
            return Err("a name must not contain '/' or start with '.'".into());
        }
        let path = self.netns_dir.join(container);
        if path.exists() {
            return Ok(Workload {
                netns: container.to_string(),
                orchestrator: "netns".into(),
                workload_id: container.to_string(),
            });
        }
        super::docker::resolve(container)
            .await
            .map_err(|docker| format!("no network namespace {}, and {docker}", path.display()))
    }
}

/// The real [`NodeControl`] on Linux: `calico-node` as a process ([`ProcessNodeControl`]),
/// IPv4 forwarding switched on before it starts, and BIRD's sessions in the status.
#[derive(Debug, Clone)]
pub struct LinuxNode {
    /// Starts and stops the agent process.
    pub process: ProcessNodeControl,
    /// BIRD's run dir, where the agent's `LinuxDataplane` keeps `bird.ctl` and `bird6.ctl`
    /// (`<data-dir>/bird`).
    pub bird_run_dir: PathBuf,
    /// The sysctl file `calicoctl node` writes `1` to (reference 2.1 step 3).
    pub ip_forward: PathBuf,
}

impl LinuxNode {
    /// The agent of `data_dir` run with `extra_args` (`--datastore etcd`, ...).
    pub fn new(data_dir: &Path, extra_args: Vec<String>) -> Self {
        let mut process = ProcessNodeControl::new(data_dir);
        process.extra_args = extra_args;
        LinuxNode {
            process,
            bird_run_dir: data_dir.join("bird"),
            ip_forward: "/proc/sys/net/ipv4/ip_forward".into(),
        }
    }

    /// BGP rows of `birdc -s <run-dir>/bird.ctl show protocols` (and `bird6.ctl`), for each
    /// daemon whose socket exists.
    fn bgp_peers(&self) -> Result<Vec<BgpPeerStatus>, String> {
        let mut peers = Vec::new();
        for socket in ["bird.ctl", "bird6.ctl"] {
            let socket = self.bird_run_dir.join(socket);
            if !socket.exists() {
                continue;
            }
            let out = std::process::Command::new("birdc")
                .arg("-s")
                .arg(&socket)
                .args(["show", "protocols"])
                .output()
                .map_err(|e| format!("running birdc -s {}: {e}", socket.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "birdc -s {} show protocols failed: {}",
                    socket.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            peers.extend(
                parse_protocols(&text)
                    .into_iter()
                    .filter(|row| row.proto == "BGP")
                    .filter_map(|row| peer_status(&row)),
            );
        }
        Ok(peers)
    }
}

/// A `show protocols` row as a status row: peer address and type come from the protocol name
/// (`Mesh_172_31_250_2`, `Node_...`, `Global_...`, as `render::bird` names them).
fn peer_status(row: &BgpProtocol) -> Option<BgpPeerStatus> {
    let (kind, addr) = row.name.split_once('_')?;
    let peer_type = match kind {
        "Mesh" => "node-to-node mesh",
        "Node" => "node specific",
        "Global" => "global",
        _ => return None,
    };
    let peer = addr
        .replace('_', ".")
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| addr.replace('_', ":").parse::<Ipv6Addr>().map(IpAddr::V6))
        .ok()?;
    Some(BgpPeerStatus {
        protocol: row.name.clone(),
        peer: peer.to_string(),
        peer_type: peer_type.to_string(),
        state: row.state.clone(),
        since: row.since.clone(),
        info: row.info.clone(),
    })
}

#[async_trait]
impl NodeControl for LinuxNode {
    async fn start(&self, opts: &NodeStartOptions) -> anyhow::Result<()> {
        // Best effort, as the original: without permission the agent's own sysctl write
        // reports the problem.
        let _ = std::fs::write(&self.ip_forward, "1");
        let result = self.process.start(opts).await;
        if opts.foreground {
            // The agent ran in the foreground and has exited (Ctrl-C): like the original,
            // which stopped the container, nothing it started keeps running.
            self.stop().await?;
        }
        result
    }

    /// Stops the agent, then the BIRD daemons it started (they daemonise, so they outlive
    /// it; one left by an agent that was killed is stopped too), waiting until each exited.
    async fn stop(&self) -> anyhow::Result<()> {
        self.process.stop().await?;
        let run_dir = self.bird_run_dir.clone();
        let errors = tokio::task::spawn_blocking(move || bird::stop_daemons(&run_dir))
            .await
            .unwrap_or_default();
        if !errors.is_empty() {
            let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
            anyhow::bail!("calico-node stopped, BIRD did not: {}", all.join("; "));
        }
        Ok(())
    }

    async fn status(&self) -> anyhow::Result<NodeStatus> {
        let mut status = self.process.status().await?;
        // What the agent said about overlays it cannot program (IPIP on a kernel without it).
        let overlay = self
            .bird_run_dir
            .join(calico_dataplane::linux::OVERLAY_STATUS_FILE);
        if let Ok(note) = std::fs::read_to_string(overlay) {
            if status.running && !note.trim().is_empty() {
                status.detail = format!("{}; {}", status.detail, note.trim());
            }
        }
        match self.bgp_peers() {
            Ok(peers) => status.bgp_peers = peers,
            Err(e) => status.detail = format!("{}; BGP status unavailable: {e}", status.detail),
        }
        Ok(status)
    }

    async fn version(&self) -> Option<String> {
        self.process.binary_version()
    }

    fn manual_start(&self, opts: &NodeStartOptions) -> Option<String> {
        Some(self.process.command_line(opts))
    }

    async fn diagnostics(&self, log_dir: Option<&Path>) -> Vec<DiagFile> {
        let log_dir = log_dir.map_or_else(
            || {
                self.process
                    .log_file
                    .parent()
                    .map_or_else(|| self.process.data_dir.clone(), Path::to_path_buf)
            },
            Path::to_path_buf,
        );
        let mut files = Vec::new();
        for name in ["calico-node.log", "bird.log", "bird6.log"] {
            files.push(file_entry(&format!("logs/{name}"), &log_dir.join(name)));
        }
        for name in ["bird.cfg", "bird6.cfg"] {
            files.push(file_entry(
                &format!("bird/{name}"),
                &self.bird_run_dir.join(name),
            ));
        }
        for (daemon, socket) in [("bird", "bird.ctl"), ("bird6", "bird6.ctl")] {
            let socket = self.bird_run_dir.join(socket);
            let socket = socket.to_string_lossy();
            files.push(super::diags::command_entry(
                &format!("bird/{daemon}-protocols.txt"),
                "birdc",
                &["-s", &socket, "show", "protocols", "all"],
            ));
        }
        files
    }
}

/// A file copied into the diags bundle, or the error reading it.
fn file_entry(name: &str, path: &Path) -> DiagFile {
    let content = std::fs::read(path)
        .unwrap_or_else(|e| format!("error: reading {}: {e}\n", path.display()).into_bytes());
    DiagFile {
        name: name.to_owned(),
        content,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_names_paths_and_pids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns1"), "").unwrap();
        let r = NetnsResolver {
            netns_dir: dir.path().to_path_buf(),
        };
        let w = r.resolve("ns1").await.unwrap();
        assert_eq!(
            (w.orchestrator.as_str(), w.workload_id.as_str()),
            ("netns", "ns1")
        );
        assert_eq!(r.resolve("missing").await, None);
        assert_eq!(r.resolve("../etc").await, None);
        let path = dir.path().join("ns1");
        let w = r.resolve(path.to_str().unwrap()).await.unwrap();
        assert_eq!(w.orchestrator, "namespace");
        assert!(!w.workload_id.contains('/'));
        let me = std::process::id().to_string();
        let w = r.resolve(&me).await.unwrap();
        assert_eq!(w.netns, format!("/proc/{me}/ns/net"));
    }

    #[tokio::test]
    async fn a_miss_says_where_it_looked_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let r = NetnsResolver {
            netns_dir: dir.path().to_path_buf(),
        };
        let missing = r.lookup("workload_A").await.unwrap_err();
        let ns_path = dir.path().join("workload_A").display().to_string();
        assert!(
            missing.contains(&ns_path) && missing.contains("Docker"),
            "{missing}"
        );
        let path = dir.path().join("gone").display().to_string();
        assert!(r.lookup(&path).await.unwrap_err().contains(&path));
        assert!(r
            .lookup("999999999")
            .await
            .unwrap_err()
            .contains("999999999"));
        assert!(r.lookup("../etc").await.unwrap_err().contains('/'));
        for e in [missing, r.lookup("").await.unwrap_err()] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    fn row(name: &str) -> BgpProtocol {
        BgpProtocol {
            name: name.into(),
            proto: "BGP".into(),
            table: "---".into(),
            state: "up".into(),
            since: "12:00:00".into(),
            info: "Established".into(),
        }
    }

    #[test]
    fn peer_rows_name_address_and_type() {
        let mesh = peer_status(&row("Mesh_172_31_250_2")).unwrap();
        assert_eq!(
            (
                mesh.peer.as_str(),
                mesh.peer_type.as_str(),
                mesh.info.as_str()
            ),
            ("172.31.250.2", "node-to-node mesh", "Established")
        );
        let node = peer_status(&row("Node_fd80__1")).unwrap();
        assert_eq!(
            (node.peer.as_str(), node.peer_type.as_str()),
            ("fd80::1", "node specific")
        );
        assert_eq!(
            peer_status(&row("Global_10_0_0_1")).unwrap().peer_type,
            "global"
        );
        assert_eq!(peer_status(&row("device1")), None);
        assert_eq!(peer_status(&row("Mesh_not_an_ip")), None);
    }
}
