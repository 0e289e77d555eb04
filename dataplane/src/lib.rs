//! Dataplanes of calico-rs: the `Dataplane` trait, the in-memory `SimDataplane` and (later) the
//! `LinuxDataplane`.
