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
    Parse {
        what: &'static str,
        line: usize,
        reason: String,
    },
    #[error("{operation}: {reason}")]
    Kernel { operation: String, reason: String },
    /// A tool (`iptables-restore`, `ipset`, `ip`, `bird`) exited with an error.
    #[error("{operation}: {command} failed: {stderr}")]
    Command {
        operation: String,
        command: String,
        stderr: String,
    },
    /// A tool could not be started, or a file could not be read or written.
    #[error("{operation}: {source}")]
    Io {
        operation: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<calico_core::parse::ParseError> for DataplaneError {
    fn from(e: calico_core::parse::ParseError) -> Self {
        DataplaneError::Parse {
            what: e.what,
            line: e.line,
            reason: e.reason,
        }
    }
}
