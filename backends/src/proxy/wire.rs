//! The proxy's wire format: one JSON document per line, a request from the client and a
//! `Result<Reply, WireError>` from the server. A watch request turns the connection into a
//! stream: `Watching` (or an error), then one `Event` line per watch event.

use serde::{Deserialize, Serialize};

use crate::{Compare, KeyValue, Revision, StoreError, TxnOp, WatchEvent};

/// A value on the wire: text when it is UTF-8 (calico's values are JSON or plain strings),
/// otherwise the raw bytes as a number array.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Bytes {
    Text(String),
    Raw(Vec<u8>),
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => Bytes::Text(text),
            Err(e) => Bytes::Raw(e.into_bytes()),
        }
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        match bytes {
            Bytes::Text(text) => text.into_bytes(),
            Bytes::Raw(raw) => raw,
        }
    }
}

/// One call of the `Store` trait.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Get {
        key: String,
    },
    List {
        prefix: String,
    },
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Put {
        key: String,
        value: Bytes,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Txn {
        compares: Vec<WireCompare>,
        ops: Vec<WireOp>,
    },
    Watch {
        prefix: String,
        from_revision: Revision,
    },
}

/// What the server answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    Value(Option<WireKv>),
    List {
        kvs: Vec<WireKv>,
        revision: Revision,
    },
    Revision(Revision),
    /// The watch started; `Event` lines follow.
    Watching,
    Event(WireEvent),
}

/// One line from the server.
pub(crate) type Response = Result<Reply, WireError>;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireKv {
    key: String,
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
}

impl From<KeyValue> for WireKv {
    fn from(kv: KeyValue) -> Self {
        WireKv {
            key: kv.key,
            value: kv.value.into(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

impl From<WireKv> for KeyValue {
    fn from(kv: WireKv) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value.into(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireCompare {
    Absent { key: String },
    ModRevision { key: String, revision: Revision },
}

impl From<Compare> for WireCompare {
    fn from(c: Compare) -> Self {
        match c {
            Compare::Absent { key } => WireCompare::Absent { key },
            Compare::ModRevision { key, revision } => WireCompare::ModRevision { key, revision },
        }
    }
}

impl From<WireCompare> for Compare {
    fn from(c: WireCompare) -> Self {
        match c {
            WireCompare::Absent { key } => Compare::Absent { key },
            WireCompare::ModRevision { key, revision } => Compare::ModRevision { key, revision },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireOp {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

impl From<TxnOp> for WireOp {
    fn from(op: TxnOp) -> Self {
        match op {
            TxnOp::Put { key, value } => WireOp::Put {
                key,
                value: value.into(),
            },
            TxnOp::Delete { key } => WireOp::Delete { key },
        }
    }
}

impl From<WireOp> for TxnOp {
    fn from(op: WireOp) -> Self {
        match op {
            WireOp::Put { key, value } => TxnOp::Put {
                key,
                value: value.into(),
            },
            WireOp::Delete { key } => TxnOp::Delete { key },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireEvent {
    Put(WireKv),
    Delete { key: String, revision: Revision },
    InSync { revision: Revision },
}

impl From<WatchEvent> for WireEvent {
    fn from(e: WatchEvent) -> Self {
        match e {
            WatchEvent::Put(kv) => WireEvent::Put(kv.into()),
            WatchEvent::Delete { key, revision } => WireEvent::Delete { key, revision },
            WatchEvent::InSync { revision } => WireEvent::InSync { revision },
        }
    }
}

impl From<WireEvent> for WatchEvent {
    fn from(e: WireEvent) -> Self {
        match e {
            WireEvent::Put(kv) => WatchEvent::Put(kv.into()),
            WireEvent::Delete { key, revision } => WatchEvent::Delete { key, revision },
            WireEvent::InSync { revision } => WatchEvent::InSync { revision },
        }
    }
}

/// `StoreError` on the wire, plus the proxy's own failure: a request it could not parse.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireError {
    NotFound {
        key: String,
    },
    AlreadyExists {
        key: String,
    },
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    Unavailable {
        endpoint: String,
        reason: String,
    },
    Corrupt {
        key: String,
        reason: String,
    },
    BadRequest {
        reason: String,
    },
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { key } => WireError::NotFound { key },
            StoreError::AlreadyExists { key } => WireError::AlreadyExists { key },
            StoreError::Conflict {
                key,
                expected,
                actual,
            } => WireError::Conflict {
                key,
                expected,
                actual,
            },
            StoreError::Compacted { requested, oldest } => {
                WireError::Compacted { requested, oldest }
            }
            StoreError::Unavailable { endpoint, reason } => {
                WireError::Unavailable { endpoint, reason }
            }
            StoreError::Corrupt { key, reason } => WireError::Corrupt { key, reason },
        }
    }
}

impl WireError {
    /// Back to a `StoreError`; `endpoint` names the socket for errors of the proxy itself.
    pub(crate) fn into_store_error(self, endpoint: &str) -> StoreError {
        match self {
            WireError::NotFound { key } => StoreError::NotFound { key },
            WireError::AlreadyExists { key } => StoreError::AlreadyExists { key },
            WireError::Conflict {
                key,
                expected,
                actual,
            } => StoreError::Conflict {
                key,
                expected,
                actual,
            },
            WireError::Compacted { requested, oldest } => {
                StoreError::Compacted { requested, oldest }
            }
            WireError::Unavailable { endpoint, reason } => {
                StoreError::Unavailable { endpoint, reason }
            }
            WireError::Corrupt { key, reason } => StoreError::Corrupt { key, reason },
            WireError::BadRequest { reason } => StoreError::Unavailable {
                endpoint: endpoint.to_owned(),
                reason: format!("proxy rejected the request: {reason}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_text_and_binary() {
        for value in [b"{\"a\":1}".to_vec(), vec![0xff, 0x00, 0x80], Vec::new()] {
            let json = serde_json::to_string(&Bytes::from(value.clone())).unwrap();
            let back: Bytes = serde_json::from_str(&json).unwrap();
            assert_eq!(Vec::<u8>::from(back), value);
        }
    }

    #[test]
    fn text_values_travel_as_strings() {
        let json = serde_json::to_string(&Bytes::from(b"true".to_vec())).unwrap();
        assert_eq!(json, "\"true\"");
    }
}
