//! calicoctl's commands and calico-node's reconcile loop, as a library: the two binaries are
//! thin wrappers, and the simulator runs the very same code against simulated hosts.
//!
//! - [`ctl`]: calicoctl — argument grammar, one module per command, output tables/JSON.
//! - `agent`: calico-node — snapshot, in-sync, compute, apply, watch, resync.

pub mod agent;
pub mod ctl;
