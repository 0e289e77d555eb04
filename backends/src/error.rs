use crate::Revision;

/// The one error type of every `Store` backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("conflict on key {key}: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available is {oldest}); resync from a fresh listing")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("datastore {endpoint} unavailable: {reason}")]
    Unavailable { endpoint: String, reason: String },
    #[error("datastore corrupt at {key}: {reason}")]
    Corrupt { key: String, reason: String },
}
