//! The agent's view of the cluster: raw updates in, this host's `DesiredState` out, through
//! `calico_core`'s incremental [`Calculator`] (cost proportional to what changed).

use std::collections::BTreeMap;

use calico_core::calc::Calculator;
use calico_core::cluster::ClusterState;
use calico_core::desired::DesiredState;
use calico_core::shared::{SharedDecodes, SharedListing};
use calico_core::ModelError;

/// What one batch did to the engine.
#[derive(Debug, Default)]
pub(crate) struct Ingested {
    /// Whether this host's desired state changed.
    pub(crate) changed: bool,
    /// Records that failed to decode (they count as absent), by key.
    pub(crate) invalid: BTreeMap<String, ModelError>,
}

/// One host's calculator.
#[derive(Debug)]
pub(crate) struct Engine {
    calc: Calculator,
}

impl Engine {
    /// An empty state for `host`, decoding endpoints through `shared` when given.
    pub(crate) fn new(host: &str, shared: Option<SharedDecodes>) -> Self {
        let calc = match shared {
            Some(shared) => Calculator::with_shared(host, shared),
            None => Calculator::new(host),
        };
        Self { calc }
    }

    /// Feeds a batch of raw updates (`None` = deleted).
    pub(crate) fn apply_batch(
        &mut self,
        updates: impl IntoIterator<Item = (String, Option<Vec<u8>>)>,
    ) -> Ingested {
        let delta = self.calc.apply_batch(updates);
        Ingested {
            changed: !delta.is_empty(),
            invalid: delta.invalid,
        }
    }

    /// Loads a snapshot shared with other agents.
    pub(crate) fn load_listing(&mut self, listing: &SharedListing) -> Ingested {
        let delta = self.calc.load_listing(listing);
        Ingested {
            changed: !delta.is_empty(),
            invalid: delta.invalid,
        }
    }

    pub(crate) fn desired(&self) -> &DesiredState {
        self.calc.desired()
    }

    pub(crate) fn state(&self) -> &ClusterState {
        self.calc.state()
    }

    /// Number of this host's endpoints (the `calico_node_endpoints` gauge), from the
    /// calculator's index rather than a scan of every endpoint in the cluster.
    pub(crate) fn local_endpoints(&self) -> usize {
        self.calc.local_endpoints()
    }
}
