//! The byte layout of `SledStore`'s trees, and its decoding into typed errors.
//!
//! - `kv` tree: key bytes -> `create_revision (i64 BE) | mod_revision (i64 BE) | value`.
//! - `history` tree: `revision (i64 BE) | index in the commit (u32 BE)` -> one event:
//!   `tag (0 put, 1 delete) | key length (u32 BE) | key | [create_revision (i64 BE) | value]`.
//!   Big-endian keys make sled's byte order the revision order, so replay is a range scan.
//! - `meta` tree: `revision` and `oldest` -> i64 BE.

use crate::{KeyValue, Revision, StoreError, WatchEvent};

const PUT: u8 = 0;
const DELETE: u8 = 1;
const I64: usize = 8;

/// Encodes a key's record for the `kv` tree.
pub(super) fn encode_record(
    create_revision: Revision,
    mod_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * I64 + value.len());
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a `kv` record of `key`.
///
/// # Errors
/// `Corrupt` when the record is shorter than its two revisions.
pub(super) fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let (create_revision, rest) =
        split_i64(bytes).ok_or_else(|| corrupt(key, "record too short"))?;
    let (mod_revision, value) = split_i64(rest).ok_or_else(|| corrupt(key, "record too short"))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    })
}

/// Decodes just the `mod_revision` of a `kv` record (what compares need).
pub(super) fn decode_mod_revision(key: &str, bytes: &[u8]) -> Result<Revision, StoreError> {
    bytes
        .get(I64..)
        .and_then(split_i64)
        .map(|(rev, _)| rev)
        .ok_or_else(|| corrupt(key, "record too short"))
}

/// Decodes a key stored as sled bytes.
pub(super) fn decode_key(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| corrupt(&String::from_utf8_lossy(bytes), "key is not utf-8"))
}

/// The `history` tree key of the `index`-th event of the commit at `revision`.
pub(super) fn history_key(revision: Revision, index: u32) -> [u8; 12] {
    let mut out = [0; 12];
    out[..I64].copy_from_slice(&revision.to_be_bytes());
    out[I64..].copy_from_slice(&index.to_be_bytes());
    out
}

/// Encodes one event for the `history` tree (its revision lives in the tree key).
pub(super) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let mut out = Vec::new();
    let (tag, key) = match event {
        WatchEvent::Put(kv) => (PUT, kv.key.as_str()),
        WatchEvent::Delete { key, .. } => (DELETE, key.as_str()),
        WatchEvent::InSync { .. } => return out,
    };
    out.push(tag);
    // Keys longer than 4 GiB cannot reach here: sled itself caps keys far lower.
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    if let WatchEvent::Put(kv) = event {
        out.extend_from_slice(&kv.create_revision.to_be_bytes());
        out.extend_from_slice(&kv.value);
    }
    out
}

/// Decodes one `history` entry into its event.
///
/// # Errors
/// `Corrupt` (named `history/<revision>`) when the entry is truncated or malformed.
pub(super) fn decode_event(tree_key: &[u8], bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let revision = split_i64(tree_key).map(|(rev, _)| rev);
    let name = format!("history/{}", revision.unwrap_or(-1));
    let revision = revision.ok_or_else(|| corrupt(&name, "history key too short"))?;
    let (&tag, rest) = bytes
        .split_first()
        .ok_or_else(|| corrupt(&name, "empty event"))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(&name, "event too short"))?;
    let len =
        usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt(&name, "key length"))?;
    if rest.len() < len {
        return Err(corrupt(&name, "event key truncated"));
    }
    let (key, rest) = rest.split_at(len);
    let key = decode_key(key)?;
    match tag {
        PUT => {
            let (create_revision, value) =
                split_i64(rest).ok_or_else(|| corrupt(&name, "put event too short"))?;
            Ok(WatchEvent::Put(KeyValue {
                key,
                value: value.to_vec(),
                create_revision,
                mod_revision: revision,
            }))
        }
        DELETE => Ok(WatchEvent::Delete { key, revision }),
        other => Err(corrupt(&name, &format!("unknown event tag {other}"))),
    }
}

/// Encodes a `meta` revision.
pub(super) fn encode_revision(revision: Revision) -> [u8; 8] {
    revision.to_be_bytes()
}

/// Decodes a `meta` revision named `name`.
pub(super) fn decode_revision(name: &str, bytes: &[u8]) -> Result<Revision, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(name, "revision is not 8 bytes"))?;
    Ok(Revision::from_be_bytes(array))
}

fn split_i64(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<I64>()?;
    Some((i64::from_be_bytes(*head), rest))
}

fn corrupt(key: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let kv = decode_record("/k", &encode_record(3, 7, b"abc")).unwrap();
        assert_eq!(
            kv,
            KeyValue {
                key: "/k".into(),
                value: b"abc".to_vec(),
                create_revision: 3,
                mod_revision: 7
            }
        );
        assert_eq!(
            decode_mod_revision("/k", &encode_record(3, 7, b"")).unwrap(),
            7
        );
    }

    #[test]
    fn short_record_is_corrupt_naming_the_key() {
        match decode_record("/k", &[1, 2, 3]) {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "/k"),
            other => panic!("expected corrupt, got {other:?}"),
        }
        assert!(matches!(
            decode_mod_revision("/k", &[0; 12]),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn events_round_trip() {
        let put = WatchEvent::Put(KeyValue {
            key: "/a".into(),
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 5,
        });
        let del = WatchEvent::Delete {
            key: "/b".into(),
            revision: 5,
        };
        for event in [put, del] {
            assert_eq!(
                decode_event(&history_key(5, 0), &encode_event(&event)).unwrap(),
                event
            );
        }
    }

    #[test]
    fn malformed_events_are_corrupt() {
        let key = history_key(9, 0);
        for bytes in [
            &[][..],
            &[0, 0, 0],
            &[0, 0, 0, 0, 9, b'a'],
            &[7, 0, 0, 0, 0],
        ] {
            match decode_event(&key, bytes) {
                Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "history/9"),
                other => panic!("expected corrupt for {bytes:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn history_keys_sort_by_revision() {
        assert!(history_key(255, 9) < history_key(256, 0));
        assert!(history_key(256, 0) < history_key(256, 1));
    }
}
