//! The multi-host simulator of calico-rs: N hosts on one wire sharing one datastore, each
//! running a node agent over an in-memory kernel (`SimDataplane`), with simulated BGP between
//! them, a cross-host packet walk that explains its verdict, and an independent policy oracle
//! the walk is property-tested against.
//!
//! - [`probe`], [`verdict`]: what a reachability check sends and what it finds.
//! - [`oracle`]: reachability from the data model alone.
//! - [`gen`]: proptest strategies for random clusters.
//! - [`ops`]: what calicoctl writes and plumbs, until the CLI drives the world.
//! - [`world`]: hosts, workloads, `settle()`; [`agent`]: each host runs calico-node's own
//!   reconcile loop (`calico_cli::agent::Agent`) over its `SimDataplane`.
//! - [`bgp`]: sessions and route exchange from each host's BIRD config.
//! - [`walk`]: the cross-host packet walk and its explanation.
//! - [`scenario`]: scenario files run with calicoctl's own command code; [`demo`]: the seed, narrated.
//! - [`linux`]: the same scenario files on network namespaces with real etcd, calico-node and BIRD.
//! - [`whatif`]: which flows a proposed calicoctl command would change, on a copy of a snapshot.
//!
//! Data flow: writes to the `Store` → each host's agent (calico-node's `Agent`) → `DesiredState` →
//! `SimDataplane::apply` → BGP carries workload routes between hosts → `World::send` walks a
//! packet host to host over the wire.

pub mod agent;
pub mod bgp;
mod cores;
pub mod demo;
mod error;
pub mod gen;
pub mod linux;
pub mod ops;
pub mod oracle;
pub mod probe;
pub mod scenario;
pub mod verdict;
pub mod walk;
pub mod whatif;
pub mod world;

pub use error::SimError;
pub use oracle::{Decision, Oracle};
pub use probe::Probe;
pub use verdict::Verdict;
pub use walk::Walk;
pub use world::{SettleReport, SimHost, World};
