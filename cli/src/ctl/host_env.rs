//! What calicoctl needs from the real machine: its hostname, a workload resolver over network
//! namespaces, and — until the Linux dataplane and the node launcher land — placeholders that
//! fail clearly for the few commands that need them. Everything datastore-only works without.

use std::path::Path;

use async_trait::async_trait;
use calico_core::model::MacAddr;
use calico_dataplane::{DataplaneError, VethSpec, WorkloadPlumbing};
use ipnet::IpNet;

use super::{NodeControl, NodeStartOptions, NodeStatus, Workload, WorkloadResolver};

/// The message of every placeholder operation.
pub const NOT_AVAILABLE: &str = "linux dataplane not available yet";

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
/// or a PID (`/proc/<pid>/ns/net`, orchestrator `pid`).
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
        if container.is_empty() || container.contains('\0') {
            return None;
        }
        if container.starts_with('/') {
            return Path::new(container).exists().then(|| Workload {
                netns: container.to_string(),
                orchestrator: "namespace".into(),
                workload_id: escape(container),
            });
        }
        if container.bytes().all(|b| b.is_ascii_digit()) {
            let path = format!("/proc/{container}/ns/net");
            return Path::new(&path).exists().then(|| Workload {
                netns: path,
                orchestrator: "pid".into(),
                workload_id: container.to_string(),
            });
        }
        if container.contains('/') || container.starts_with('.') {
            return None;
        }
        let path = self.netns_dir.join(container);
        path.exists().then(|| Workload {
            netns: container.to_string(),
            orchestrator: "netns".into(),
            workload_id: container.to_string(),
        })
    }
}

/// Placeholder plumbing: every namespace operation fails with [`NOT_AVAILABLE`].
#[derive(Debug, Clone, Default)]
pub struct UnavailablePlumbing;

fn unavailable(operation: &str) -> DataplaneError {
    DataplaneError::Kernel {
        operation: operation.to_string(),
        reason: NOT_AVAILABLE.to_string(),
    }
}

#[async_trait]
impl WorkloadPlumbing for UnavailablePlumbing {
    async fn namespace_exists(&self, netns: &str) -> Result<bool, DataplaneError> {
        Ok(Path::new(netns).exists() || Path::new("/var/run/netns").join(netns).exists())
    }

    async fn add_veth(&self, spec: &VethSpec) -> Result<MacAddr, DataplaneError> {
        Err(unavailable(&format!("creating veth {}", spec.host_iface)))
    }

    async fn remove_veth(&self, host_iface: &str) -> Result<(), DataplaneError> {
        Err(unavailable(&format!("removing veth {host_iface}")))
    }

    async fn add_addr(&self, _netns: &str, iface: &str, addr: IpNet) -> Result<(), DataplaneError> {
        Err(unavailable(&format!("adding {addr} to {iface}")))
    }

    async fn remove_addr(
        &self,
        _netns: &str,
        iface: &str,
        addr: IpNet,
    ) -> Result<(), DataplaneError> {
        Err(unavailable(&format!("removing {addr} from {iface}")))
    }
}

/// Placeholder node control: start/stop/status fail with [`NOT_AVAILABLE`].
#[derive(Debug, Clone, Default)]
pub struct UnavailableNode;

#[async_trait]
impl NodeControl for UnavailableNode {
    async fn start(&self, _opts: &NodeStartOptions) -> anyhow::Result<()> {
        anyhow::bail!(NOT_AVAILABLE)
    }

    async fn stop(&self) -> anyhow::Result<()> {
        anyhow::bail!(NOT_AVAILABLE)
    }

    async fn status(&self) -> anyhow::Result<NodeStatus> {
        anyhow::bail!(NOT_AVAILABLE)
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
}
