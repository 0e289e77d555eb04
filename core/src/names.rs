//! Names that reach iptables, ipset or interface names: validation and deterministic shortening.

use sha2::{Digest, Sha256};

use crate::ModelError;

/// Longest profile, tag or endpoint id we accept. The kernel limits are met by shortening, so
/// this only bounds key and memory size.
pub const MAX_NAME_LEN: usize = 128;

/// Linux's IFNAMSIZ minus the trailing NUL.
pub const MAX_IFACE_LEN: usize = 15;

/// Validates a profile, tag or endpoint-id name: `[A-Za-z0-9_.-]+`, at most [`MAX_NAME_LEN`]
/// (Felix's `VALID_ID_RE`). Such a name can never break out of an iptables, ipset or BIRD argument.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), ModelError> {
    let bad = |reason| {
        Err(ModelError::InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("is longer than 128 characters");
    }
    if !name.bytes().all(is_name_byte) {
        return bad("may only contain letters, digits, '_', '.' and '-'");
    }
    if is_dot_segment(name) {
        return bad("must not be '.' or '..' (they name other keys in the datastore)");
    }
    Ok(())
}

/// `.` and `..` are path segments, not names: `/calico/v1/host/../bird_ip` is another key.
fn is_dot_segment(name: &str) -> bool {
    name == "." || name == ".."
}

/// Validates a host-side or workload-side interface name (also `[A-Za-z0-9_.-]`, at most 15).
pub fn validate_iface(name: &str) -> Result<(), ModelError> {
    validate_name("interface name", name)?;
    if name.len() > MAX_IFACE_LEN {
        return Err(ModelError::InvalidName {
            what: "interface name",
            name: name.to_string(),
            reason: "is longer than 15 characters",
        });
    }
    Ok(())
}

/// Validates a hostname as it appears in keys: like a name, at most 253 characters.
pub fn validate_hostname(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(is_name_byte)
        && !is_dot_segment(name);
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidName {
            what: "hostname",
            name: name.to_string(),
            reason: "must be 1-253 letters, digits, '_', '.' or '-', and not '.' or '..'",
        })
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Felix's `uniquely_shorten`: `s` itself when it fits in `max` characters, otherwise `"_"`
/// followed by the first `max - 1` hex digits of sha256(`"<len> " + s`), so distinct names stay
/// distinct and the result is stable across hosts and restarts.
pub fn uniquely_shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let digest = Sha256::digest(format!("{} {}", s.len(), s).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("_{}", &hex[..max.saturating_sub(1).min(hex.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_shell_or_iptables_syntax_are_rejected() {
        for bad in ["", "a b", "x;rm", "a\"b", "-j ACCEPT", "a/b", "é", "a\nb"] {
            let err = validate_name("profile", bad).unwrap_err();
            assert!(err.to_string().contains("profile"), "{err}");
        }
        validate_name("profile", "PROF_A_B.v-1").unwrap();
    }

    #[test]
    fn shorten_keeps_short_names_and_hashes_long_ones() {
        assert_eq!(uniquely_shorten("PROF_A_B", 16), "PROF_A_B");
        let long = uniquely_shorten("a_profile_name_that_is_long", 16);
        assert_eq!(long.len(), 16);
        assert!(long.starts_with('_'));
        assert_ne!(long, uniquely_shorten("a_profile_name_that_is_lonG", 16));
        assert_eq!(long, uniquely_shorten("a_profile_name_that_is_long", 16));
    }
}
