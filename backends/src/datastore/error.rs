//! `DatastoreError`: what can go wrong in the typed layer, naming the object involved.

use std::net::IpAddr;

use calico_core::ModelError;
use ipnet::IpNet;

use crate::StoreError;

/// An error of the typed [`Datastore`](super::Datastore) layer.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// The raw store failed; its message names the key or the endpoint.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name or value is invalid, or a stored value does not decode (naming the key).
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("value at {key} has an unexpected type")]
    UnexpectedValue { key: String },
    #[error("profile {name} already exists")]
    ProfileExists { name: String },
    #[error("profile {name} not found")]
    ProfileNotFound { name: String },
    #[error("profile {name} is in use by endpoints {endpoints:?}")]
    ProfileInUse {
        name: String,
        endpoints: Vec<String>,
    },
    #[error("profile {profile} is already in the profile list of endpoint {endpoint}")]
    ProfileAlreadyInEndpoint { profile: String, endpoint: String },
    #[error("profile {profile} is not in the profile list of endpoint {endpoint}")]
    ProfileNotInEndpoint { profile: String, endpoint: String },
    #[error("profile {profile} is repeated")]
    ProfileRepeated { profile: String },
    #[error("endpoint {endpoint} not found")]
    EndpointNotFound { endpoint: String },
    #[error("tag {tag} is already on profile {profile}")]
    TagExists { profile: String, tag: String },
    #[error("tag {tag} is not on profile {profile}")]
    TagNotFound { profile: String, tag: String },
    #[error("pool {cidr} not found")]
    PoolNotFound { cidr: IpNet },
    #[error("{ip} is not in any configured pool")]
    IpNotInPool { ip: IpAddr },
    #[error("{ip} is already assigned")]
    IpInUse { ip: IpAddr },
    #[error("{ip} is not assigned")]
    IpNotAssigned { ip: IpAddr },
    #[error("no free address left in pools {pools:?}")]
    PoolsExhausted { pools: Vec<IpNet> },
    #[error("no enabled IPv{version} pool to assign from")]
    NoPool { version: u8 },
    #[error("rule {rule} not found in the {direction} rules of profile {profile}")]
    RuleNotFound {
        profile: String,
        direction: &'static str,
        rule: String,
    },
    #[error("BGP peer {ip} not found")]
    PeerNotFound { ip: IpAddr },
    #[error("gave up {what} after {attempts} conflicting attempts")]
    TooManyConflicts { what: String, attempts: u32 },
}

impl DatastoreError {
    /// Whether retrying the read-modify-write may succeed (a compare failed).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            DatastoreError::Store(StoreError::Conflict { .. })
                | DatastoreError::Store(StoreError::AlreadyExists { .. })
        )
    }
}
