//! `CtlError`: every way a calicoctl command fails, naming the offending value.

use std::net::IpAddr;

use calico_backends::DatastoreError;
use calico_core::ModelError;

/// A failed calicoctl command. The binary prints `Error: <message>` and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("unknown command {command:?}; run calicoctl --help")]
    UnknownCommand { command: String },
    #[error("missing {what}")]
    MissingArgument { what: &'static str },
    #[error("unexpected argument {arg:?}")]
    UnexpectedArgument { arg: String },
    #[error("unknown option {option} for this command")]
    UnknownOption { option: String },
    #[error("option --{option} needs a value")]
    MissingOptionValue { option: String },
    #[error("invalid {what} {value:?}: {reason}")]
    BadArgument {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error(transparent)]
    InvalidValue(ModelError),
    #[error("{ip} is not in any configured pool")]
    IpNotInPool { ip: IpAddr },
    #[error("IP address {ip} is already assigned")]
    IpInUse { ip: IpAddr },
    #[error("container {name} not found")]
    UnknownContainer { name: String },
    /// A `<CONTAINER>` that resolves to nothing, with where the resolver looked.
    #[error("container {name} not found: {detail}")]
    UnresolvedContainer { name: String, detail: String },
    #[error("profile {name} not found")]
    UnknownProfile { name: String },
    #[error("profile {name} already exists")]
    ProfileExists { name: String },
    #[error("container {container} already has an endpoint")]
    AlreadyHasEndpoint { container: String },
    #[error("container {container} has no endpoint")]
    NoEndpoint { container: String },
    #[error("{count} endpoints match {what}; narrow it with --host, --orchestrator or --workload")]
    MultipleEndpoints { what: String, count: usize },
    #[error("profile {name} is in use by endpoints {}; use --no-check to remove it anyway", endpoints.join(", "))]
    ProfileInUse {
        name: String,
        endpoints: Vec<String>,
    },
    #[error("host {host} has no IPv{version} address registered; run calicoctl node with --ip/--ip6 first")]
    NoHostIp { host: String, version: u8 },
    #[error("host {host} still has endpoints {}; use --remove-endpoints", endpoints.join(", "))]
    HostHasEndpoints {
        host: String,
        endpoints: Vec<String>,
    },
    #[error("{address} is not an address of endpoint {endpoint}")]
    AddressNotOnEndpoint { address: String, endpoint: String },
    #[error("rules id {id:?} does not match profile {profile}")]
    RulesIdMismatch { profile: String, id: String },
    #[error("no IPv4 address found on this machine; pass --ip")]
    NoHostAddress,
    #[error("{action}: {reason}")]
    Dataplane { action: String, reason: String },
    #[error("{action}: {reason}")]
    Node { action: String, reason: String },
    #[error("system check failed: {}", problems.join("; "))]
    CheckSystem { problems: Vec<String> },
    #[error(transparent)]
    Datastore(DatastoreError),
    /// A resource file's document that does not parse or validate; nothing was written.
    #[error("document {doc}: {what}: {reason}")]
    BadResource {
        doc: usize,
        what: String,
        reason: String,
    },
    #[error("No resources specified in file")]
    NoResources,
    #[error("resource already exists: {what}")]
    ResourceExists { what: String },
    #[error("resource does not exist: {what}")]
    ResourceMissing { what: String },
    /// `what-if --fail-on` found the named kind of change; `report` is what it printed.
    #[error("what-if --fail-on: the proposed change alters flows\n{report}")]
    WhatIfGate { report: String },
    #[error("{action}: {reason}")]
    WhatIf { action: String, reason: String },
    #[error("{action} (and undoing it failed too: {undo})")]
    RollbackFailed {
        #[source]
        action: Box<CtlError>,
        undo: String,
    },
}

impl CtlError {
    /// Whether the command line itself is wrong (not its values): the caller shows the
    /// usage lines of the command with the error.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CtlError::UnknownCommand { .. }
                | CtlError::MissingArgument { .. }
                | CtlError::UnexpectedArgument { .. }
                | CtlError::UnknownOption { .. }
                | CtlError::MissingOptionValue { .. }
        )
    }
}

impl From<ModelError> for CtlError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidName { what, name, reason } => {
                CtlError::InvalidName { what, name, reason }
            }
            other => CtlError::InvalidValue(other),
        }
    }
}

impl From<DatastoreError> for CtlError {
    fn from(e: DatastoreError) -> Self {
        match e {
            DatastoreError::Model(m) => m.into(),
            DatastoreError::IpNotInPool { ip } => CtlError::IpNotInPool { ip },
            DatastoreError::IpInUse { ip } => CtlError::IpInUse { ip },
            DatastoreError::ProfileNotFound { name } => CtlError::UnknownProfile { name },
            DatastoreError::ProfileExists { name } => CtlError::ProfileExists { name },
            DatastoreError::ProfileInUse { name, endpoints } => {
                CtlError::ProfileInUse { name, endpoints }
            }
            other => CtlError::Datastore(other),
        }
    }
}
