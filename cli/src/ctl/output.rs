//! Output: aligned text tables for people, JSON for scripts (`-o json`).

use serde::Serialize;

/// A table printed with every column padded to its widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The text, one line per row, columns separated by two spaces, with a trailing newline.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate().take(cols) {
                if i + 1 == cols {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  ", w = width[i]));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.header);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Pretty JSON with a trailing newline.
pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// The records a `show` command could not decode, listed after its table so a broken record
/// is seen rather than silently missing (empty when there are none).
pub fn broken_records(broken: &[calico_backends::BrokenRecord]) -> String {
    if broken.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{} record(s) could not be read and are not shown above (fix or delete them):\n",
        broken.len()
    );
    for b in broken {
        out.push_str(&format!(
            "  BROKEN {}: {}\n",
            b.key.escape_debug(),
            b.error.to_string().escape_debug()
        ));
    }
    out
}

/// The same records as JSON items (`{"key": ..., "broken": <error>}`), for `-o json`.
pub fn broken_json(broken: &[calico_backends::BrokenRecord]) -> Vec<serde_json::Value> {
    broken
        .iter()
        .map(|b| serde_json::json!({"key": b.key, "broken": b.error.to_string()}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x\n");
    }
}
