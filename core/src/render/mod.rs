//! Renderers: the typed desired state as the text the kernel tools and BIRD read.
//!
//! - [`iptables`]: `iptables-save` / `iptables-restore` text of one table.
//! - [`ipset`]: `ipset restore` text.
//! - [`bird`]: a BIRD 2 `bird.conf`.

pub mod bird;
pub mod ipset;
pub mod iptables;
