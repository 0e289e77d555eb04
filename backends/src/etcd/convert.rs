//! Translations between etcd-client's types and the `Store` types: key values, key ranges and
//! errors.

use etcd_client::Error as EtcdError;
use tonic::Code;

use crate::{KeyValue, Revision, StoreError};

/// etcd's message when a read or watch asks for a revision older than the last compaction.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";

/// The `[start, end)` range of every key beginning with `prefix` (etcd's `range_end`
/// convention: the prefix with its last byte below 0xff incremented; `"\0"` means "to the end").
pub(crate) fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    (prefix.as_bytes().to_vec(), vec![0])
}

/// An etcd key value as a `Store` key value; a key that is not UTF-8 is corrupt data for us.
pub(crate) fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_string(kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// A key as a string, or `Corrupt` naming its lossy form.
pub(crate) fn key_string(key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("key is not utf-8: {e}"),
    })
}

/// Whether etcd refused a read or watch because `revision` was compacted.
pub(crate) fn is_compacted(err: &EtcdError) -> bool {
    matches!(err, EtcdError::GRpcStatus(status)
        if status.code() == Code::OutOfRange && status.message().contains(COMPACTED_MESSAGE))
}

/// Maps an etcd-client error: compaction to `Compacted` (the oldest revision is unknown from a
/// range error, so `requested` is reported for both), everything else to `Unavailable` naming
/// the endpoints. (`StoreError` has no variant for a request etcd rejects as invalid, such as
/// too many ops in one txn; those are reported as `Unavailable` with etcd's reason.)
pub(crate) fn store_error(endpoints: &str, requested: Revision, err: EtcdError) -> StoreError {
    if is_compacted(&err) {
        return StoreError::Compacted {
            requested,
            oldest: requested,
        };
    }
    let reason = match &err {
        EtcdError::GRpcStatus(status) => {
            // `StoreError::Unavailable` already says "unavailable": name other codes only.
            let mut reason = if status.code() == tonic::Code::Unavailable {
                status.message().to_string()
            } else {
                format!("{:?}: {}", status.code(), status.message())
            };
            // A transport failure's status says only "transport error"; the cause below it
            // says why (e.g. etcd refusing our client certificate during the TLS handshake).
            if let Some(cause) = root_cause(status).map(|c| c.to_string()) {
                if !reason.contains(&cause) {
                    reason = format!("{reason}: {cause}");
                }
            }
            reason.to_lowercase()
        }
        other => other.to_string(),
    };
    StoreError::Unavailable {
        endpoint: endpoints.to_string(),
        reason,
    }
}

/// Whether `err` says the connection to the member could not be made (so the request was
/// never sent and may be retried on another member, even a write).
pub(crate) fn is_connect_failure(err: &EtcdError) -> bool {
    match err {
        EtcdError::TransportError(_) => true,
        EtcdError::GRpcStatus(status) if status.code() == tonic::Code::Unavailable => {
            let cause = root_cause(status)
                .map(ToString::to_string)
                .unwrap_or_default();
            // tonic's connector: "tcp connect error: connection refused", "connection
            // reset", a connect timeout; etcd's own refusals ("leader changed", "no
            // leader") do not mention the connection.
            [status.message(), cause.as_str()].iter().any(|text| {
                let text = text.to_lowercase();
                text.contains("connect error") || text.contains("connection refused")
            })
        }
        _ => false,
    }
}

/// The innermost error below `status`, if it has any.
fn root_cause(status: &tonic::Status) -> Option<&(dyn std::error::Error + 'static)> {
    let mut cause = std::error::Error::source(status)?;
    while let Some(deeper) = cause.source() {
        cause = deeper;
    }
    Some(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_follow_etcd() {
        assert_eq!(
            prefix_range("/calico/"),
            (b"/calico/".to_vec(), b"/calico0".to_vec())
        );
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(
            prefix_range("a\u{7f}"),
            (b"a\x7f".to_vec(), b"a\x80".to_vec())
        );
    }

    #[test]
    fn compaction_status_maps_to_compacted() {
        let err = EtcdError::GRpcStatus(tonic::Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(is_compacted(&err));
        let mapped = store_error("http://e:1", 7, err);
        assert!(
            matches!(mapped, StoreError::Compacted { requested: 7, .. }),
            "{mapped}"
        );
    }

    #[test]
    fn other_status_maps_to_unavailable() {
        let err = EtcdError::GRpcStatus(tonic::Status::new(Code::Unavailable, "down"));
        let mapped = store_error("http://e:1", 0, err);
        match mapped {
            StoreError::Unavailable { endpoint, reason } => {
                assert_eq!(endpoint, "http://e:1");
                assert!(reason.contains("down"), "{reason}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_transport_failure_reports_its_root_cause() {
        let tls_alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: BadCertificate",
        );
        let mut status = tonic::Status::new(Code::Unknown, "transport error");
        status.set_source(std::sync::Arc::new(tls_alert));
        match store_error("https://e:1", 0, EtcdError::GRpcStatus(status)) {
            StoreError::Unavailable { reason, .. } => assert_eq!(
                reason,
                "unknown: transport error: received fatal alert: badcertificate"
            ),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn non_utf8_key_is_corrupt() {
        let err = key_string(&[0xff, b'a']).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
