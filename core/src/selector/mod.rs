//! Label selectors (reference 3): the expressions policies use to pick endpoints
//! (`role == "db" && !has(legacy)`), parsed, evaluated against labels, and printed in the
//! original's canonical form, whose hash names the selector's ipset.
//!
//! - [`lex`]: the tokenizer; [`parse`]: the grammar.
//! - [`Selector`]: the parsed expression with its source text. It serialises as the source,
//!   verbatim (the original stored selectors as typed), and deserialising parses it, so a stored
//!   value with a bad selector fails to decode.
//!
//! Parsing never panics (the tests fuzz it) and every error names the 1-based column.

pub mod lex;
pub mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha224};

/// A selector that did not parse, with the 1-based character column of the fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct SelectorError {
    pub column: usize,
    pub reason: String,
}

impl SelectorError {
    fn new(column: usize, reason: impl Into<String>) -> Self {
        SelectorError {
            column,
            reason: reason.into(),
        }
    }
}

/// The parsed expression tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// What an expression reads labels from: an endpoint's own labels, then its profiles' (see
/// [`InheritedLabels`]).
pub trait Labels {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

/// One profile as label inheritance sees it: its labels and its tags.
pub type ProfileLabelSource<'a> = (Option<&'a BTreeMap<String, String>>, Option<&'a [String]>);

/// An endpoint's labels as selectors see them (reference 3, "Labels an expression sees"): its
/// own first, then each profile's labels and then its tags (a tag is a label with value `""`),
/// in profile order.
#[derive(Debug, Clone, Copy)]
pub struct InheritedLabels<'a> {
    pub own: &'a BTreeMap<String, String>,
    /// Per profile, in `profile_ids` order: its labels and its tags.
    pub profiles: &'a [ProfileLabelSource<'a>],
}

impl Labels for InheritedLabels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.own.get(key) {
            return Some(v);
        }
        for (labels, tags) in self.profiles {
            if let Some(v) = labels.and_then(|l| l.get(key)) {
                return Some(v);
            }
            if tags.is_some_and(|t| t.iter().any(|t| t == key)) {
                return Some("");
            }
        }
        None
    }
}

impl Expr {
    /// Whether labels satisfy the expression (reference 3, "Semantics"): `!=` and `not in`
    /// also hold when the label is absent.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.get(k).is_some(),
            Expr::Eq(k, v) => labels.get(k) == Some(v.as_str()),
            Expr::Ne(k, v) => labels.get(k) != Some(v.as_str()),
            Expr::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Expr::NotIn(k, set) => !labels.get(k).is_some_and(|v| set.contains(v)),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }

    /// The label keys the expression reads.
    pub fn keys<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Expr::All => {}
            Expr::Has(k) | Expr::Eq(k, _) | Expr::Ne(k, _) | Expr::In(k, _) | Expr::NotIn(k, _) => {
                out.insert(k);
            }
            Expr::Not(e) => e.keys(out),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.keys(out)),
        }
    }
}

/// A string literal as the original prints it: in `"`, or in `'` when it contains `"`.
fn quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.contains('"') {
        write!(f, "'{s}'")
    } else {
        write!(f, "\"{s}\"")
    }
}

fn set(f: &mut fmt::Formatter<'_>, values: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        quoted(f, v)?;
    }
    f.write_str("}")
}

/// The canonical form (reference 3): every `&&`/`||` group in parentheses, sets sorted.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => {
                write!(f, "{k} == ")?;
                quoted(f, v)
            }
            Expr::Ne(k, v) => {
                write!(f, "{k} != ")?;
                quoted(f, v)
            }
            Expr::In(k, vs) => {
                write!(f, "{k} in ")?;
                set(f, vs)
            }
            Expr::NotIn(k, vs) => {
                write!(f, "{k} not in ")?;
                set(f, vs)
            }
            Expr::Not(e) => write!(f, "!{e}"),
            Expr::And(es) | Expr::Or(es) => {
                let sep = if matches!(self, Expr::And(_)) {
                    " && "
                } else {
                    " || "
                };
                f.write_str("(")?;
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A parsed selector and the text it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    source: String,
    expr: Expr,
}

impl Selector {
    /// Parses `source`; empty or blank means `all()`.
    ///
    /// # Errors
    /// [`SelectorError`] with the column of the first fault.
    pub fn parse(source: &str) -> Result<Self, SelectorError> {
        let tokens = lex::tokenize(source)?;
        let end_column = source.chars().count() + 1;
        let expr = parse::Parser::new(&tokens, end_column).selector()?;
        Ok(Selector {
            source: source.to_string(),
            expr,
        })
    }

    /// `all()`.
    pub fn all() -> Self {
        Selector {
            source: String::new(),
            expr: Expr::All,
        }
    }

    /// The text as written (and stored).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        self.expr.matches(labels)
    }

    /// The canonical form, e.g. `(role == "db" && !has(legacy))`.
    pub fn canonical(&self) -> String {
        self.expr.to_string()
    }

    /// The original's unique id of the selector: `s:` + base64url (no padding) of
    /// SHA-224(`s:` + canonical form). Equal selectors share it, and so share an ipset.
    pub fn unique_id(&self) -> String {
        let digest = Sha224::digest(format!("s:{}", self.canonical()).as_bytes());
        format!("s:{}", base64url(&digest))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        Selector::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Selector::parse(&source)
            .map_err(|e| serde::de::Error::custom(format!("invalid selector {source:?}: {e}")))
    }
}

/// RFC 4648 base64url without padding.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[cfg(test)]
mod tests;
