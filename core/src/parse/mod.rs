//! Readers of the kernel's text formats, each the pure inverse of a renderer in
//! [`crate::render`]:
//!
//! - [`iptables`]: `iptables-restore` / `iptables-save` text → typed chains.

pub mod iptables;

/// Text that is not what the renderer (or the kernel tool) writes, naming the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parsing {what} line {line}: {reason}")]
pub struct ParseError {
    /// What was being read (`iptables-restore input`).
    pub what: &'static str,
    pub line: usize,
    pub reason: String,
}
