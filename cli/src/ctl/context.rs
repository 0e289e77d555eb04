use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use calico_backends::Store;
use calico_dataplane::WorkloadPlumbing;

/// Everything a calicoctl command may touch. The real binary builds it from the environment
/// (datastore, hostname, Linux plumbing, a process launcher); the simulator builds one per
/// simulated host.
#[derive(Clone)]
pub struct Ctl {
    pub store: Arc<dyn Store>,
    /// The host this calicoctl runs on (`--hostname`, `HOSTNAME`, then the system's).
    pub hostname: String,
    pub plumbing: Arc<dyn WorkloadPlumbing>,
    pub resolver: Arc<dyn WorkloadResolver>,
    pub node: Arc<dyn NodeControl>,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl")
            .field("hostname", &self.hostname)
            .field("store", &self.store)
            .finish()
    }
}

/// A workload as calicoctl names it in the datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Network namespace handle the plumbing understands (a netns name or path).
    pub netns: String,
    /// Orchestrator id of the endpoint key (`docker`, `netns`, `namespace`).
    pub orchestrator: String,
    /// Workload id of the endpoint key (validated `[A-Za-z0-9_.-]`).
    pub workload_id: String,
}

/// Turns calicoctl's `<CONTAINER>` argument into a workload.
#[async_trait]
pub trait WorkloadResolver: Send + Sync {
    /// `None` when no such container or namespace exists.
    async fn resolve(&self, container: &str) -> Option<Workload>;

    /// As [`WorkloadResolver::resolve`], but a miss says where it looked (the namespace dir,
    /// the Docker engine's socket) in one line, for calicoctl's error. The default has nothing
    /// to add to "not found".
    async fn lookup(&self, container: &str) -> Result<Workload, String> {
        self.resolve(container)
            .await
            .ok_or_else(|| "no such container or network namespace".to_string())
    }
}

/// What `calicoctl node` was asked to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStartOptions {
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    /// Run in the foreground instead of detaching.
    pub foreground: bool,
    /// Where the agent and BIRD write their logs (`--log-dir`); `None`: the agent's default.
    pub log_dir: Option<PathBuf>,
    /// Policy only (`--backend=none`): no BIRD is started or configured.
    pub policy_only: bool,
}

/// The agent's state as `calicoctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeStatus {
    pub running: bool,
    /// Free-form detail: pid, uptime, last apply.
    pub detail: String,
    /// BGP sessions as BIRD's `show protocols` lists them: (name, peer ip, state, since, info).
    pub bgp_peers: Vec<BgpPeerStatus>,
}

/// One row of `calicoctl status`'s BGP table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeerStatus {
    pub protocol: String,
    pub peer: String,
    pub peer_type: String,
    pub state: String,
    pub since: String,
    pub info: String,
}

/// Starting and stopping this host's node agent (a process on Linux, a simulated agent in
/// the simulator).
#[async_trait]
pub trait NodeControl: Send + Sync {
    /// Starts (or restarts) the agent.
    async fn start(&self, opts: &NodeStartOptions) -> anyhow::Result<()>;
    /// Stops the agent, leaving the dataplane as it is.
    async fn stop(&self) -> anyhow::Result<()>;
    async fn status(&self) -> anyhow::Result<NodeStatus>;

    /// The agent's version (`calicoctl status`, `diags`), when known.
    async fn version(&self) -> Option<String> {
        None
    }

    /// How to run the agent by hand with these options (`calicoctl node --runtime=none`),
    /// when the agent is a program one can run.
    fn manual_start(&self, _opts: &NodeStartOptions) -> Option<String> {
        None
    }

    /// The node's own files and tool output for `calicoctl diags`: its logs (from `log_dir`
    /// when given) and BIRD's view. A part that cannot be read is an entry holding the error.
    async fn diagnostics(&self, _log_dir: Option<&Path>) -> Vec<DiagFile> {
        Vec::new()
    }
}

/// One file of the `calicoctl diags` bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagFile {
    /// Path inside the bundle (`logs/calico-node.log`, `bird/protocols.txt`).
    pub name: String,
    pub content: Vec<u8>,
}
