//! The node agent a simulated host runs: calico-node's own reconcile loop
//! ([`calico_cli::agent::Agent`]) over the host's [`SimDataplane`], stepped by the world
//! instead of by timers. Nothing here re-implements the loop; this module only names the type,
//! builds it with the world's store and turns one step into what `settle` counts.

use std::sync::Arc;

use calico_backends::Store;
use calico_cli::agent::{Agent, AgentConfig, SharedSnapshots, StepOutcome};
use calico_core::shared::SharedDecodes;
use calico_dataplane::sim::SimDataplane;

use crate::SimError;

/// One host's agent: the real reconcile loop over that host's simulated kernel.
pub type HostAgent = Agent<SimDataplane>;

/// A fresh agent for `host` over `dataplane` (a clone handle of the host's kernel): it has
/// read nothing yet, and its first step waits for `/calico/v1/Ready`, then loads a snapshot
/// and applies only the difference to what the kernel already holds.
///
/// Every agent of a world decodes endpoint records through the world's `shared` table, so
/// the hosts hold one copy of each record between them while each computes its own state;
/// with `snapshots`, agents starting at the same store revision load one shared listing.
pub fn host_agent(
    store: Arc<dyn Store>,
    dataplane: &SimDataplane,
    host: &str,
    shared: &SharedDecodes,
    snapshots: Option<SharedSnapshots>,
) -> HostAgent {
    let config = AgentConfig {
        shared_decodes: Some(shared.clone()),
        shared_snapshots: snapshots,
        ..AgentConfig::default()
    };
    Agent::new(store, dataplane.clone(), host.to_string(), config)
}

/// One step of `agent` ([`Agent::poll_once`]): the events it took and the changes it made.
///
/// # Errors
/// [`SimError::Agent`] when the step failed (the next step retries).
pub(crate) async fn step(agent: &mut HostAgent) -> Result<StepOutcome, SimError> {
    agent.poll_once().await.map_err(|source| SimError::Agent {
        host: agent.hostname().to_string(),
        source: Box::new(source),
    })
}

/// Whether a step did anything, so another round may find more to do.
pub(crate) fn busy(step: &StepOutcome) -> bool {
    step.events > 0 || step.changed() || step.resnapshot
}
