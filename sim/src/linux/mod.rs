//! Scenario files on real kernels: `calico-sim run --dataplane linux`.
//!
//! The same scenario lines the simulator runs, on network namespaces of this machine:
//!
//! - [`netns`]: namespaces this run created, deleted on drop with their processes.
//! - [`cluster`]: [`LinuxCluster`], a "wire" namespace (bridge 172.31.250.254/24 and an etcd
//!   started for the run), one namespace per host (veth to the bridge, its addresses), one per
//!   `external` machine (the same, with no agent and only the link's route), one per workload
//!   (named as in the file), and `calicoctl` run as a process in a host's namespace (a heredoc
//!   as its stdin), which starts the host's real `calico-node` (and through it BIRD).
//! - [`settle`]: waits until every host's iptables, ipsets and routes stop changing and every
//!   host's chains, BIRD config and BGP-learnt routes are what the datastore implies
//!   ([`predict`]: core's compute and the simulator's BGP model over the same datastore, read
//!   by the hidden `store-dump` subcommand in the wire namespace).
//! - [`traffic`]: `expect` lines checked with real packets: `ping -c1 -W1`, or the hidden
//!   [`probe`] subcommand of `calico-sim` as TCP/UDP listener and client.
//! - [`run`]: [`LinuxRunner`], the scenario lines on a cluster, reported as the simulator's
//!   runner reports them.
//!
//! Everything is created under names prefixed `calirs-<pid>-` (host and external namespaces)
//! or named by the scenario (workloads; refused if such a namespace exists), with addresses
//! only in 172.31.250.0/24, fd00::/8 and the pools, and removed when the cluster is dropped.

pub mod cluster;
pub mod netns;
pub mod predict;
pub mod probe;
pub mod run;
pub mod settle;
pub mod traffic;

pub use cluster::{ClusterConfig, LinuxCluster};
pub use run::LinuxRunner;

/// What went wrong running a scenario on namespaces.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("running {command}: {reason}")]
    Command { command: String, reason: String },
    #[error("network namespace {name} already exists; refusing to use or delete a namespace this run did not create")]
    NamespaceExists { name: String },
    #[error("{what} not found: {hint}")]
    Missing { what: String, hint: String },
    #[error("host {host}: {reason}")]
    BadHost { host: String, reason: String },
    #[error("workload {workload}: {reason}")]
    BadWorkload { workload: String, reason: String },
    #[error("etcd did not become ready within {seconds} s; see {log}")]
    EtcdNotReady { seconds: u64, log: String },
    #[error("not settled after {seconds} s: {missing}")]
    NotSettled { seconds: u64, missing: String },
    #[error("{what}: {reason}")]
    Io {
        what: String,
        #[source]
        reason: std::io::Error,
    },
    #[error("tearing down {what}: {reason}")]
    Teardown { what: String, reason: String },
}
