//! `WhatIfError`: why a what-if could not answer.

use crate::SimError;

/// A what-if that could not be answered. The proposed change is never applied anywhere but
/// in the simulator's copy, so no error leaves anything half-written.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    /// Building or settling the simulated cluster failed.
    #[error("simulating the cluster: {0}")]
    Sim(#[from] SimError),
    /// The proposed calicoctl command itself failed (as it would have on the real cluster).
    #[error("the proposed command `calicoctl {command}` fails: {reason}")]
    Command { command: String, reason: String },
    #[error("invalid probe {spec:?}: {reason}")]
    Probe { spec: String, reason: String },
    #[error("reading the simulated datastore: {0}")]
    Store(#[from] calico_backends::StoreError),
    #[error("drawing {path}: {reason}")]
    Svg { path: String, reason: String },
}
