//! Resource files: YAML or JSON, one or more documents separated by `---` lines (calicoctl
//! 1.4+), each a single resource, a sequence of resources, or a `<kind>List` with `items`.
//!
//! Every resource is parsed strictly (unknown fields are errors) into its typed form and
//! validated before anything is written; an error names the document, the kind and, from
//! the YAML parser, the field and the line in the file.

use serde::de::DeserializeOwned;
use serde_norway::Value as Yaml;

use super::kinds::Resource;
use crate::ctl::CtlError;

/// One document of a file: its text and the file line it starts on (1-based).
struct Document<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits `input` on lines that are exactly `---` (optionally followed by a comment or
/// spaces), keeping each document's first line number. Empty documents are dropped.
fn documents(input: &str) -> Vec<Document<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    for (line_no, line) in (1..).zip(input.split_inclusive('\n')) {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            out.push(Document {
                text: &input[start..offset],
                first_line,
            });
            start = offset + line.len();
            first_line = line_no + 1;
        }
        offset += line.len();
    }
    out.push(Document {
        text: &input[start..],
        first_line,
    });
    out.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    out
}

/// A parse error of document `doc` (1-based), with the parser's line shifted to the file's.
fn bad(doc: usize, first_line: usize, what: &str, err: &serde_norway::Error) -> CtlError {
    let mut reason = err.to_string();
    if let Some(loc) = err.location() {
        // The parser counts lines within the document; say where that is in the file.
        let file_line = first_line + loc.line() - 1;
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        reason = reason.replace(&suffix, "");
        reason = format!("{reason} (line {file_line}, column {})", loc.column());
    }
    CtlError::BadResource {
        doc,
        what: what.to_string(),
        reason,
    }
}

fn typed<T: DeserializeOwned>(
    doc: usize,
    first_line: usize,
    what: &str,
    text: &str,
) -> Result<T, CtlError> {
    serde_norway::from_str(text).map_err(|e| bad(doc, first_line, what, &e))
}

/// `kind` and `apiVersion` of a resource mapping.
fn envelope(value: &Yaml) -> (Option<&str>, Option<&str>) {
    (
        value.get("kind").and_then(Yaml::as_str),
        value.get("apiVersion").and_then(Yaml::as_str),
    )
}

/// Parses every resource of a file, in file order.
///
/// # Errors
/// `BadResource` naming the document (and the item of a sequence or list), the kind, and
/// the field and line the parser reports; `NoResources` for a file with none.
pub fn parse(input: &str) -> Result<Vec<Resource>, CtlError> {
    let mut out = Vec::new();
    for (i, doc) in documents(input).into_iter().enumerate() {
        let n = i + 1;
        let value: Yaml = typed(n, doc.first_line, "resource", doc.text)?;
        match &value {
            Yaml::Sequence(items) => {
                for (j, item) in items.iter().enumerate() {
                    out.push(item_resource(n, j + 1, item)?);
                }
            }
            Yaml::Mapping(_) => match envelope(&value) {
                (Some(kind), _) if kind.ends_with("List") => {
                    let items =
                        value
                            .get("items")
                            .and_then(Yaml::as_sequence)
                            .ok_or_else(|| CtlError::BadResource {
                                doc: n,
                                what: kind.to_string(),
                                reason: "a list has no items".into(),
                            })?;
                    for (j, item) in items.iter().enumerate() {
                        out.push(item_resource(n, j + 1, item)?);
                    }
                }
                (kind, version) => {
                    let kind = Resource::check_envelope(kind, version)
                        .map_err(|reason| bad_doc(n, kind, reason))?;
                    let resource = Resource::from_text(kind, doc.text)
                        .map_err(|e| bad(n, doc.first_line, kind, &e))?;
                    resource
                        .validate()
                        .map_err(|reason| bad_doc(n, Some(kind), reason))?;
                    out.push(resource);
                }
            },
            _ => {
                return Err(CtlError::BadResource {
                    doc: n,
                    what: "resource".into(),
                    reason: "expected a resource (a mapping with kind, apiVersion, metadata \
                             and spec) or a sequence of them"
                        .into(),
                })
            }
        }
    }
    if out.is_empty() {
        return Err(CtlError::NoResources);
    }
    Ok(out)
}

fn bad_doc(doc: usize, kind: Option<&str>, reason: String) -> CtlError {
    CtlError::BadResource {
        doc,
        what: kind.unwrap_or("resource").to_string(),
        reason,
    }
}

/// An item of a sequence or list: typed from its value (the parser has no lines for it).
fn item_resource(doc: usize, item: usize, value: &Yaml) -> Result<Resource, CtlError> {
    let where_ = |kind: Option<&str>| format!("{} (item {item})", kind.unwrap_or("resource"));
    let (kind, version) = envelope(value);
    let kind = Resource::check_envelope(kind, version).map_err(|reason| CtlError::BadResource {
        doc,
        what: where_(kind),
        reason,
    })?;
    let resource =
        Resource::from_value(kind, value.clone()).map_err(|e| CtlError::BadResource {
            doc,
            what: where_(Some(kind)),
            reason: e.to_string(),
        })?;
    resource
        .validate()
        .map_err(|reason| CtlError::BadResource {
            doc,
            what: where_(Some(kind)),
            reason,
        })?;
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_on_separator_lines_and_keep_their_first_line() {
        let docs = documents("a: 1\n---\n# only a comment\n--- # two\nb: 2\n\nc: 3\n");
        let starts: Vec<usize> = docs.iter().map(|d| d.first_line).collect();
        assert_eq!(starts, [1, 5]);
        assert_eq!(docs[1].text, "b: 2\n\nc: 3\n");
    }
}
