//! calicoctl's commands and calico-node's reconcile loop, as a library both binaries and the
//! simulator use.
