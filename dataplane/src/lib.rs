//! Dataplanes of calico-rs: where a host's [`DesiredState`] becomes kernel state.
//!
//! - [`Dataplane`]: desired state in, report out; `observe()` reads back what is installed.
//! - [`WorkloadPlumbing`]: what `calicoctl container add/remove` does to a workload's network
//!   namespace (veth pair, move, rename, address, routes).
//! - `sim`: `SimDataplane`, one host's kernel in memory (links, routes, netfilter parsed from
//!   the same restore text the kernel gets, conntrack-lite) with an explaining packet walk.
//! - [`linux`]: `LinuxDataplane` over iptables-restore, ipset restore, rtnetlink and BIRD;
//!   `LinuxPlumbing` over iproute2.
//!
//! Data flow: calico-node computes a `DesiredState` with `calico_core`, hands it to
//! `Dataplane::apply`, and periodically compares `observe()` against it to repair drift.

mod error;
pub mod linux;
mod plumbing;
pub mod sim;

pub use error::DataplaneError;
pub use plumbing::{VethSpec, WorkloadPlumbing};

use std::collections::BTreeSet;

use async_trait::async_trait;
use calico_core::desired::DesiredState;
pub use calico_core::plan::Change;

/// What an apply changed, for logs, metrics and `--dry-run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The changes in the order they were made, in the vocabulary of `calico_core::plan`
    /// (the same the dry-run plan speaks), so the simulated and the Linux dataplane report
    /// the same step equally; `Display` prints each (`rewrite chain filter/v4 cali-FORWARD`).
    pub changes: Vec<Change>,
    /// Interfaces the desired state programs (routes, neighbours, interface sysctls) that do
    /// not exist on the host (yet, or any more: a container that died without
    /// `container remove`). Everything else was applied; what needs them is done by a later
    /// apply once they appear. Not an error: one missing interface must not hold up the host.
    pub waiting: BTreeSet<String>,
}

/// One host's dataplane. Takes desired state, not steps.
#[async_trait]
pub trait Dataplane: Send {
    /// Makes the host hold exactly `desired` in everything we own (our chains, sets, routes,
    /// sysctls, BIRD config); leaves everything else alone. Idempotent: applying the same
    /// state twice changes nothing the second time (an empty report).
    ///
    /// # Errors
    /// The first kernel operation that failed, naming the object; what was applied before it
    /// stays applied, and the next apply retries the rest.
    async fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError>;

    /// What is installed now, in the same shape, restricted to what we own.
    async fn observe(&mut self) -> Result<DesiredState, DataplaneError>;
}
