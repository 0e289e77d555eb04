//! `AgentError`: what can stop one step of the reconcile loop. Every variant is retried by
//! `Agent::run` with backoff; the steppable API hands it to the caller.

use calico_backends::StoreError;
use calico_dataplane::DataplaneError;

/// A failed step of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{action} in the datastore: {source}")]
    Store {
        action: String,
        #[source]
        source: StoreError,
    },
    #[error("applying the desired state of host {host}: {source}")]
    Apply {
        host: String,
        #[source]
        source: DataplaneError,
    },
    #[error("observing the dataplane of host {host}: {source}")]
    Observe {
        host: String,
        #[source]
        source: DataplaneError,
    },
}
