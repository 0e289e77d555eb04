//! Every restore text the core renderer produces for the golden cluster states parses, and
//! re-rendering the parsed chains gives the same text byte for byte.

use std::path::Path;

use calico_core::cluster::ClusterState;
use calico_core::compute::compute;
use calico_core::desired::{TableId, TableState};
use calico_core::iptables::Target;
use calico_core::parse::iptables::parse_restore;
use calico_core::render::iptables::render_table;

/// The `== input` section of a golden case: `key value` lines; and its host.
fn golden_input(text: &str) -> (String, Vec<(String, String)>) {
    let mut host = "calico-01".to_string();
    let mut input = Vec::new();
    let mut in_input = false;
    for line in text.lines() {
        if line.starts_with("== ") {
            in_input = line == "== input";
            continue;
        }
        if let Some(rest) = line.strip_prefix("host ") {
            host = rest
                .split_whitespace()
                .next()
                .unwrap_or("calico-01")
                .to_string();
        } else if in_input && !line.trim().is_empty() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            input.push((k.to_string(), v.to_string()));
        }
    }
    (host, input)
}

fn reparse(id: TableId, text: &str) -> TableState {
    let blocks = parse_restore(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].table, id.table);
    let mut state = TableState::default();
    for parsed in &blocks[0].chains {
        if parsed.policy.is_some() {
            for rule in &parsed.chain.rules {
                if let Target::Jump(target) = &rule.target {
                    state
                        .hooks
                        .insert(parsed.chain.name.clone(), target.clone());
                }
            }
        } else {
            state
                .chains
                .insert(parsed.chain.name.clone(), parsed.chain.clone());
        }
    }
    state
}

#[test]
fn rendered_tables_of_every_golden_case_round_trip() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/golden");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 5,
        "golden cases missing in {}",
        dir.display()
    );
    let mut tables = 0;
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let (host, input) = golden_input(&text);
        let mut state = ClusterState::default();
        for (k, v) in &input {
            state.apply(k, Some(v.as_bytes()));
        }
        let desired = compute(&state, &host);
        for (id, table) in &desired.tables {
            let rendered = render_table(*id, table);
            let parsed = reparse(*id, &rendered);
            assert_eq!(
                render_table(*id, &parsed),
                rendered,
                "{} {id:?}",
                path.display()
            );
            assert_eq!(&parsed, table, "{} {id:?}", path.display());
            tables += 1;
        }
    }
    assert!(tables >= 10, "only {tables} tables checked");
}
