//! Shared test rig for the calicoctl tests: hosts as `Ctl`s over one `MemStore`, a recording
//! `WorkloadPlumbing`, a map resolver and a recording `NodeControl`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use calico_backends::{MemStore, Store};
use calico_cli::ctl::{
    run, run_with_input, Ctl, CtlError, NodeControl, NodeStartOptions, NodeStatus, Workload,
    WorkloadResolver,
};
use calico_core::model::MacAddr;
use calico_dataplane::sim::{SimDataplane, WireConfig, ROOT_NS};
use calico_dataplane::{DataplaneError, VethSpec, WorkloadPlumbing};
use ipnet::IpNet;

/// The simulator's host kernel (`SimDataplane`) behind a switch that injects failures, and a
/// record of the veth specs it was asked for.
#[derive(Debug)]
pub struct RecordingPlumbing {
    pub sim: SimDataplane,
    pub veths: Mutex<BTreeMap<String, VethSpec>>,
    /// Make the next `add_veth` fail.
    pub fail_add: AtomicBool,
    /// Make the next `add_addr` fail.
    pub fail_addr: AtomicBool,
}

impl RecordingPlumbing {
    pub fn new(host: &str) -> Self {
        RecordingPlumbing {
            sim: SimDataplane::new(host, WireConfig::eth0([])),
            veths: Mutex::default(),
            fail_add: AtomicBool::new(false),
            fail_addr: AtomicBool::new(false),
        }
    }

    /// Every link of the host and its workloads, as `ns/name`.
    pub fn all_links(&self) -> Vec<String> {
        let mut namespaces = self.sim.namespaces();
        namespaces.push(ROOT_NS.to_string());
        namespaces
            .iter()
            .flat_map(|ns| self.sim.links(ns))
            .map(|l| format!("{}/{}", l.ns, l.name))
            .collect()
    }

    /// The addresses of `iface` inside workload namespace `ns`.
    pub fn addrs(&self, ns: &str, iface: &str) -> Vec<IpNet> {
        self.sim
            .links(ns)
            .into_iter()
            .find(|l| l.name == iface)
            .map(|l| l.addrs.into_iter().collect())
            .unwrap_or_default()
    }

    /// The MAC of `iface` inside workload namespace `ns`.
    pub fn mac(&self, ns: &str, iface: &str) -> Option<MacAddr> {
        self.sim
            .links(ns)
            .into_iter()
            .find(|l| l.name == iface)
            .map(|l| l.mac)
    }
}

#[async_trait]
impl WorkloadPlumbing for RecordingPlumbing {
    async fn namespace_exists(&self, netns: &str) -> Result<bool, DataplaneError> {
        self.sim.namespace_exists(netns).await
    }

    async fn add_veth(&self, spec: &VethSpec) -> Result<MacAddr, DataplaneError> {
        if self.fail_add.swap(false, Ordering::SeqCst) {
            return Err(DataplaneError::Kernel {
                operation: format!("moving {} into {}", spec.temp_iface, spec.netns),
                reason: "injected failure".into(),
            });
        }
        let mac = self.sim.add_veth(spec).await?;
        self.veths
            .lock()
            .unwrap()
            .insert(spec.host_iface.clone(), spec.clone());
        Ok(mac)
    }

    async fn remove_veth(&self, host_iface: &str) -> Result<(), DataplaneError> {
        self.veths.lock().unwrap().remove(host_iface);
        self.sim.remove_veth(host_iface).await
    }

    async fn add_addr(&self, netns: &str, iface: &str, addr: IpNet) -> Result<(), DataplaneError> {
        if self.fail_addr.swap(false, Ordering::SeqCst) {
            return Err(DataplaneError::InterfaceNotFound {
                iface: iface.to_string(),
            });
        }
        self.sim.add_addr(netns, iface, addr).await
    }

    async fn add_gateway_routes(
        &self,
        netns: &str,
        iface: &str,
        gw: std::net::IpAddr,
    ) -> Result<(), DataplaneError> {
        self.sim.add_gateway_routes(netns, iface, gw).await
    }

    async fn remove_addr(
        &self,
        netns: &str,
        iface: &str,
        addr: IpNet,
    ) -> Result<(), DataplaneError> {
        self.sim.remove_addr(netns, iface, addr).await
    }
}

/// Resolves the workloads created on this host (orchestrator `docker`, id = name).
#[derive(Debug)]
pub struct MapResolver {
    pub plumbing: Arc<RecordingPlumbing>,
}

#[async_trait]
impl WorkloadResolver for MapResolver {
    async fn resolve(&self, container: &str) -> Option<Workload> {
        self.plumbing
            .sim
            .namespaces()
            .iter()
            .any(|n| n == container)
            .then(|| Workload {
                netns: container.to_string(),
                orchestrator: "docker".into(),
                workload_id: container.to_string(),
            })
    }
}

/// Records start/stop calls.
#[derive(Debug, Default)]
pub struct RecordingNode {
    pub calls: Mutex<Vec<String>>,
}

#[async_trait]
impl NodeControl for RecordingNode {
    async fn start(&self, opts: &NodeStartOptions) -> anyhow::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("start {} {}", opts.hostname, opts.ip));
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.calls.lock().unwrap().push("stop".into());
        Ok(())
    }

    async fn status(&self) -> anyhow::Result<NodeStatus> {
        Ok(NodeStatus {
            running: self
                .calls
                .lock()
                .unwrap()
                .last()
                .is_some_and(|c| c.starts_with("start")),
            detail: String::new(),
            bgp_peers: Vec::new(),
        })
    }
}

/// One simulated host.
pub struct Host {
    pub ctl: Ctl,
    pub plumbing: Arc<RecordingPlumbing>,
    pub node: Arc<RecordingNode>,
}

impl Host {
    pub fn new(store: Arc<dyn Store>, name: &str) -> Host {
        let plumbing = Arc::new(RecordingPlumbing::new(name));
        let node = Arc::new(RecordingNode::default());
        let ctl = Ctl {
            store,
            hostname: name.to_string(),
            plumbing: plumbing.clone(),
            resolver: Arc::new(MapResolver {
                plumbing: plumbing.clone(),
            }),
            node: node.clone(),
        };
        Host {
            ctl,
            plumbing,
            node,
        }
    }

    /// `docker run --net=none --name=<name>`: a namespace with no network.
    pub fn workload(&self, name: &str) {
        self.plumbing.sim.add_namespace(name).unwrap();
    }

    /// Runs a command line split on whitespace.
    pub async fn try_run(&self, line: &str) -> Result<String, CtlError> {
        run(&self.ctl, &words(line)).await
    }

    /// [`try_run`](Self::try_run) of an owned line (for futures collected before running).
    pub async fn try_run_owned(&self, line: String) -> Result<String, CtlError> {
        self.try_run(&line).await
    }

    pub async fn ok(&self, line: &str) -> String {
        match self.try_run(line).await {
            Ok(out) => out,
            Err(e) => panic!("calicoctl {line}: {e}"),
        }
    }

    pub async fn ok_args(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run(&self.ctl, &args).await.unwrap()
    }

    pub async fn with_input(&self, line: &str, stdin: &str) -> Result<String, CtlError> {
        run_with_input(&self.ctl, &words(line), stdin).await
    }

    /// Runs a command that must fail; checks it left the datastore and the veths untouched
    /// and that the message names `needle`. Returns the error.
    pub async fn fails(&self, args: &[&str], needle: &str) -> CtlError {
        let before = dump(&self.ctl.store).await;
        let veths_before: Vec<String> = self
            .plumbing
            .veths
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let err = match run(&self.ctl, &args).await {
            Ok(out) => panic!("calicoctl {args:?} succeeded: {out}"),
            Err(e) => e,
        };
        assert!(
            err.to_string().contains(needle),
            "error of {args:?} does not name {needle:?}: {err}"
        );
        assert_eq!(
            dump(&self.ctl.store).await,
            before,
            "{args:?} changed the datastore"
        );
        let veths_after: Vec<String> = self
            .plumbing
            .veths
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(veths_after, veths_before, "{args:?} left a veth behind");
        err
    }

    /// Host-side `cali*` veths in the simulated kernel.
    pub fn veth_count(&self) -> usize {
        self.plumbing
            .sim
            .links(ROOT_NS)
            .iter()
            .filter(|l| l.name.starts_with("cali"))
            .count()
    }
}

pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// A shared store for several hosts.
pub fn store() -> Arc<dyn Store> {
    Arc::new(MemStore::new())
}

/// Every key and value in the store, as text.
pub async fn dump(store: &Arc<dyn Store>) -> Vec<(String, String)> {
    let (kvs, _) = store.list("/").await.unwrap();
    kvs.into_iter()
        .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
        .collect()
}

/// The value under `key`, as text.
pub async fn value(store: &Arc<dyn Store>, key: &str) -> Option<String> {
    store
        .get(key)
        .await
        .unwrap()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// Every key under `prefix`.
pub async fn keys(store: &Arc<dyn Store>, prefix: &str) -> Vec<String> {
    let (kvs, _) = store.list(prefix).await.unwrap();
    kvs.into_iter().map(|kv| kv.key).collect()
}
