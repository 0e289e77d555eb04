/// What went wrong while building, driving or probing a simulated world.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("host {host} is not in the world")]
    UnknownHost { host: String },
    #[error("host {host} is already in the world")]
    HostExists { host: String },
    #[error("address {ip} is already used by host {host}")]
    AddressInUse { ip: std::net::IpAddr, host: String },
    #[error("{workload} is neither a workload, a host, an external machine nor an address")]
    UnknownWorkload { workload: String },
    #[error("workload {workload} already exists")]
    WorkloadExists { workload: String },
    #[error("workload {workload} has no endpoint in the datastore")]
    NoEndpoint { workload: String },
    #[error("{what} has no address to send from or to")]
    NoAddress { what: String },
    #[error("no workload, host or external machine holds {ip}")]
    UnheldSource { ip: std::net::IpAddr },
    #[error("{host} is an external machine: it runs no agent")]
    External { host: String },
    #[error("{action}")]
    Store {
        action: String,
        #[source]
        source: calico_backends::StoreError,
    },
    #[error("{action} on host {host}")]
    Dataplane {
        host: String,
        action: String,
        #[source]
        source: calico_dataplane::DataplaneError,
    },
    #[error("decoding {key}")]
    Model {
        key: String,
        #[source]
        source: calico_core::ModelError,
    },
    #[error("agent of host {host}")]
    Agent {
        host: String,
        #[source]
        source: Box<calico_cli::agent::AgentError>,
    },
    #[error("starting a runtime to step the agent of host {host}")]
    Runtime {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the world did not settle in {rounds} rounds; still changing: {changing}")]
    NotSettled { rounds: usize, changing: String },
}

impl SimError {
    pub(crate) fn store(
        action: impl Into<String>,
    ) -> impl FnOnce(calico_backends::StoreError) -> SimError {
        let action = action.into();
        move |source| SimError::Store { action, source }
    }

    pub(crate) fn dataplane(
        host: &str,
        action: impl Into<String>,
    ) -> impl FnOnce(calico_dataplane::DataplaneError) -> SimError {
        let host = host.to_string();
        let action = action.into();
        move |source| SimError::Dataplane {
            host,
            action,
            source,
        }
    }
}
