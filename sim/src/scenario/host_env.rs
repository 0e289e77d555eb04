//! The simulator's side of calicoctl's seams: a [`WorkloadResolver`] over a simulated host's
//! namespaces and a [`NodeControl`] that queues agent starts and stops for the world.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use calico_cli::ctl::{NodeControl, NodeStartOptions, NodeStatus, Workload, WorkloadResolver};
use calico_dataplane::sim::SimDataplane;

/// Resolves `<CONTAINER>` to a workload namespace of one simulated host, as a name under
/// /var/run/netns resolves on Linux (orchestrator `netns`).
#[derive(Debug, Clone)]
pub struct SimResolver {
    pub dataplane: SimDataplane,
}

#[async_trait]
impl WorkloadResolver for SimResolver {
    async fn resolve(&self, container: &str) -> Option<Workload> {
        let known = self.dataplane.namespaces().iter().any(|ns| ns == container);
        known.then(|| Workload {
            netns: container.to_string(),
            orchestrator: "netns".into(),
            workload_id: container.to_string(),
        })
    }
}

/// Agent starts (`true`) and stops (`false`) calicoctl asked for, per host, in order; the
/// runner hands them to the world after each command, and publishes each host's status back.
#[derive(Debug, Clone, Default)]
pub struct NodeRequests {
    inner: Arc<Mutex<NodeRequestsInner>>,
}

#[derive(Debug, Default)]
struct NodeRequestsInner {
    pending: Vec<(String, bool)>,
    status: BTreeMap<String, NodeStatus>,
}

impl NodeRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, NodeRequestsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every request made since the last call.
    pub fn take(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.lock().pending)
    }

    /// Publishes what `calicoctl status` on `host` should show.
    pub fn publish(&self, host: &str, status: NodeStatus) {
        self.lock().status.insert(host.to_string(), status);
    }
}

/// One host's `NodeControl`: `calicoctl node` starts that host's simulated agent.
#[derive(Debug, Clone)]
pub struct SimNodeControl {
    pub host: String,
    pub requests: NodeRequests,
}

#[async_trait]
impl NodeControl for SimNodeControl {
    async fn start(&self, _opts: &NodeStartOptions) -> anyhow::Result<()> {
        self.requests.lock().pending.push((self.host.clone(), true));
        Ok(())
    }

    async fn stop(&self) -> anyhow::Result<()> {
        self.requests
            .lock()
            .pending
            .push((self.host.clone(), false));
        Ok(())
    }

    async fn status(&self) -> anyhow::Result<NodeStatus> {
        Ok(self
            .requests
            .lock()
            .status
            .get(&self.host)
            .cloned()
            .unwrap_or_default())
    }
}
