//! Labels on endpoints, host endpoints and profiles (reference 3, "Label validation").

use std::collections::BTreeMap;

use crate::selector::lex::{is_label_char, MAX_LABEL_LEN};
use crate::ModelError;

/// A set of labels: key → value.
pub type LabelMap = BTreeMap<String, String>;

/// Longest label value (Kubernetes' 63).
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// A label key: what a selector can name, `[a-zA-Z0-9_./-]{1,512}`.
///
/// # Errors
/// `InvalidField` naming the key.
pub fn validate_label_key(key: &str) -> Result<(), ModelError> {
    if key.is_empty() || key.chars().count() > MAX_LABEL_LEN || !key.chars().all(is_label_char) {
        return Err(ModelError::field(
            "label key",
            key,
            "must be 1-512 letters, digits, '_', '.', '/' or '-'",
        ));
    }
    Ok(())
}

/// A label value: `^[a-zA-Z0-9]?([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$`, so empty, or at most 63
/// letters, digits, `_`, `.` and `-` ending in a letter or digit (62 when it starts with a
/// symbol).
///
/// # Errors
/// `InvalidField` naming the value.
pub fn validate_label_value(value: &str) -> Result<(), ModelError> {
    let bytes = value.as_bytes();
    let class = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let ok = match (bytes.first(), bytes.last()) {
        (None, _) => true,
        (Some(first), Some(last)) => {
            let max = if first.is_ascii_alphanumeric() {
                MAX_LABEL_VALUE_LEN
            } else {
                MAX_LABEL_VALUE_LEN - 1
            };
            bytes.len() <= max && bytes.iter().all(class) && last.is_ascii_alphanumeric()
        }
        (Some(_), None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ModelError::field(
            "label value",
            value,
            "must be empty or up to 63 letters, digits, '_', '.' or '-' ending in a letter or digit",
        ))
    }
}

/// Validates every key and value of `labels`.
///
/// # Errors
/// The first bad key or value.
pub fn validate_labels(labels: &LabelMap) -> Result<(), ModelError> {
    for (k, v) in labels {
        validate_label_key(k)?;
        validate_label_value(v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_the_originals_patterns() {
        for good in ["role", "calico/k8s_ns", "a.b-c_d", "9"] {
            validate_label_key(good).unwrap();
        }
        for bad in ["", "a b", "a=b", "x\"", &"k".repeat(513)] {
            assert!(validate_label_key(bad).is_err(), "{bad:?}");
        }
        for good in ["", "db", "a-b.c_d", "-a", &"v".repeat(63)] {
            validate_label_value(good).unwrap();
        }
        for bad in [
            "a-",
            "a b",
            "é",
            &"v".repeat(64),
            &format!("-{}", "v".repeat(62)),
        ] {
            let err = validate_label_value(bad).unwrap_err();
            assert!(err.to_string().contains("label value"), "{err}");
        }
    }
}
