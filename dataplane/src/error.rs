/// What went wrong while programming or reading a dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("network namespace {netns} not found")]
    NamespaceNotFound { netns: String },
    #[error("interface {iface} already exists")]
    InterfaceExists { iface: String },
    #[error("interface {iface} not found")]
    InterfaceNotFound { iface: String },
    #[error("parsing {what} line {line}: {reason}")]
    Parse { what: &'static str, line: usize, reason: String },
    #[error("{operation}: {reason}")]
    Kernel { operation: String, reason: String },
}
