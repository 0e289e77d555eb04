//! The one line `calicoctl` prints for a failure: every cause said once, control characters
//! escaped (a `\r` in a name must not rewrite the terminal line), and any word too long to
//! read shortened with a count of what was left out.

use std::error::Error;

/// Longest word printed whole (a datastore key with a 253-character hostname still fits);
/// longer ones keep their first [`KEEP`] characters.
const LONGEST_WORD: usize = 512;
const KEEP: usize = 128;

/// `err` and its causes joined with `: `, skipping a cause whose text the message already
/// holds (errors that print their source and also return it from `source()`).
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = e.source();
    }
    readable(&message)
}

/// Escapes control characters and shortens over-long words.
pub fn readable(text: &str) -> String {
    let escaped: String = text
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    let mut out = String::with_capacity(escaped.len().min(4096));
    for (i, word) in escaped.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let len = word.chars().count();
        if len > LONGEST_WORD {
            out.extend(word.chars().take(KEEP));
            out.push_str(&format!("…(+{} characters)", len - KEEP));
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("invalid port \"-1\": {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("must be 0-65535")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("reading rules")]
    struct Context(#[source] Inner);

    #[test]
    fn each_cause_is_said_once() {
        assert_eq!(
            one_line(&Outer(Inner)),
            "invalid port \"-1\": must be 0-65535"
        );
        assert_eq!(one_line(&Context(Inner)), "reading rules: must be 0-65535");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(readable("name \"a\rb\x1b[2K\""), "name \"a\\rb\\u{1b}[2K\"");
        assert!(!readable("a\nb").contains('\n'));
    }

    #[test]
    fn long_words_are_shortened_with_a_count() {
        let long = "x".repeat(10_000);
        let out = readable(&format!("invalid profile \"{long}\": too long"));
        assert!(out.len() < 300, "{out}");
        assert!(out.contains("…(+9875 characters)"), "{out}");
        assert!(out.ends_with(" too long"), "{out}");
        let key = format!("/calico/v1/host/{}/bird_ip", "h".repeat(253));
        assert_eq!(readable(&key), key, "a real key is printed whole");
    }
}
