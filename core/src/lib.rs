//! The pure heart of calico-rs: the v1 data model, validation, the key codec and the policy
//! compiler. No async, no I/O, no tokio, etcd, sled or netlink: inputs and outputs are plain
//! data in sorted maps, so every result is deterministic and golden-testable.
//!
//! - [`model`]: one type per stored value (`IpPool`, `WorkloadEndpoint`, `Rules`, `BgpPeer`, ...).
//! - [`keys`]: the `/calico/v1`, `/calico/bgp/v1`, `/calico/ipam/v2` key layout.
//! - [`codec`]: bytes ↔ typed values, never panicking on bad input.
//! - [`names`]: name validation and deterministic shortening to kernel limits.
//! - [`cluster`]: `ClusterState`, the typed snapshot built from raw updates.
//! - [`iptables`], [`desired`]: the typed output: chains, ipsets, routes, sysctls, BIRD config.
//! - [`compute`]: the policy compiler, `compute(&ClusterState, host) -> DesiredState`.
//! - [`render`]: iptables-restore, ipset restore and BIRD text; [`parse`]: iptables text back
//!   to typed chains (the renderer's inverse, for both dataplanes).
//! - [`selector`]: label selectors: parser, evaluator, canonical form and ipset id.
//! - [`calc`]: the incremental calculator (one update in, a `Delta` out).
//! - [`plan`]: the ordered steps from an observed to a desired state.
//! - [`tunnel`]: the overlay (VXLAN, IPIP) devices, routes, ARP and FDB entries.
//! - [`shared`]: decoded endpoints shared by the calculators of one process (the simulator).
//!
//! Data flow: raw key/values → `ClusterState::apply` → compute(state, host) → `DesiredState`
//! → rendered to iptables-restore / ipset / bird.cfg text by the dataplanes.

pub mod calc;
pub mod cluster;
pub mod codec;
pub mod compute;
pub mod desired;
mod error;
pub mod iptables;
pub mod keys;
pub mod model;
pub mod names;
pub mod parse;
pub mod plan;
pub mod render;
pub mod selector;
pub mod shared;
pub mod tunnel;

pub use error::ModelError;
