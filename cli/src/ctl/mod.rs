//! calicoctl: the v1 command set (reference section 2) over a [`Ctl`] context.

mod context;

pub use context::{
    BgpPeerStatus, Ctl, NodeControl, NodeStartOptions, NodeStatus, Workload, WorkloadResolver,
};
