//! iptables through `iptables-save` / `iptables-restore --noflush`: what we own in a table is
//! read back from the save text (our `cali-` chains, and the hook rules in the kernel's chains
//! that carry our `cali:` comment and jump to one of them), and one restore transaction per
//! table rewrites only the chains whose rule hashes changed.
//!
//! A transaction, in order: `:chain - [0:0]` for every new or changed chain and for every chain
//! to delete (under `--noflush` a `:` line creates or flushes), the `-A` lines of the new or
//! changed chains, `-I <builtin> 1` for missing hooks, `-D` for hooks no longer wanted, then
//! `-X` for the chains no longer wanted (already flushed and unhooked above).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use calico_core::desired::{TableId, TableState};
use calico_core::iptables::{IpFamily, Rule, Table};
use calico_core::render::iptables::{hook_rule, render_chain, render_rule, COMMENT_PREFIX};

use calico_core::parse::iptables::{builtin_chains, is_builtin, parse_restore, parse_rule_args};
use calico_core::plan::Change;

use crate::DataplaneError;

/// Prefix of every chain we own.
pub const CHAIN_PREFIX: &str = "cali-";

/// The tables we manage, in apply order.
pub const TABLES: [Table; 2] = [Table::Filter, Table::Nat];

/// `iptables-save` / `ip6tables-save`.
pub fn save_tool(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "iptables-save",
        IpFamily::V6 => "ip6tables-save",
    }
}

/// `iptables-restore` / `ip6tables-restore`.
pub fn restore_tool(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "iptables-restore",
        IpFamily::V6 => "ip6tables-restore",
    }
}

/// One of our chains as `iptables-save` printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledChain {
    /// The `-A` lines, in order.
    pub lines: Vec<String>,
    /// The `cali:` hash of each line (`None` for a rule without our comment).
    pub hashes: Vec<Option<String>>,
}

/// A rule in a kernel chain that jumps to one of ours and carries our comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledHook {
    pub builtin: String,
    pub target: String,
    pub hash: Option<String>,
    /// The save line (`-A FORWARD ...`).
    pub line: String,
}

/// What we own in one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledTable {
    pub chains: BTreeMap<String, InstalledChain>,
    /// In the order the kernel holds them.
    pub hooks: Vec<InstalledHook>,
}

/// The `cali:<hash>` of a rule line, if it has one.
pub fn line_hash(line: &str) -> Option<String> {
    // No `format!` of the marker per line: planning 10,000 rules hashes every line.
    const COMMENT: &str = "--comment \"";
    let rest = line
        .match_indices(COMMENT)
        .find_map(|(at, _)| line[at + COMMENT.len()..].strip_prefix(COMMENT_PREFIX))?;
    let hash: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    (!hash.is_empty()).then_some(hash)
}

/// The chain a rule line jumps to (`-j X` or `-g X` as its last words).
fn jump_target(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().rev();
    let target = words.next()?;
    matches!(words.next(), Some("-j") | Some("-g")).then_some(target)
}

/// Splits a whole `iptables-save` text into what we own per table.
pub fn parse_save(text: &str) -> BTreeMap<Table, InstalledTable> {
    let mut out = BTreeMap::new();
    let mut current: Option<(Table, InstalledTable)> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('*') {
            let table = match name {
                "filter" => Some(Table::Filter),
                "nat" => Some(Table::Nat),
                _ => None,
            };
            current = table.map(|t| (t, InstalledTable::default()));
            continue;
        }
        let Some((table, state)) = current.as_mut() else {
            continue;
        };
        if line == "COMMIT" {
            if let Some((t, s)) = current.take() {
                out.insert(t, s);
            }
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with(CHAIN_PREFIX) {
                state.chains.entry(name.to_string()).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split_whitespace().next().unwrap_or_default();
            if chain.starts_with(CHAIN_PREFIX) {
                let entry = state.chains.entry(chain.to_string()).or_default();
                entry.hashes.push(line_hash(line));
                entry.lines.push(line.to_string());
            } else if is_builtin(*table, chain) {
                let hash = line_hash(line);
                let target = jump_target(line).filter(|t| t.starts_with(CHAIN_PREFIX));
                if let (Some(_), Some(target)) = (&hash, target) {
                    state.hooks.push(InstalledHook {
                        builtin: chain.to_string(),
                        target: target.to_string(),
                        hash,
                        line: line.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// One table's restore transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablePlan {
    /// The restore input; empty when nothing changes.
    pub input: String,
    /// What the transaction changes.
    pub changes: Vec<Change>,
    /// Chains whose rules the transaction writes (new or changed).
    pub written: Vec<String>,
    /// What we own in the table once the transaction committed (every wanted chain as
    /// rendered, one hook per wanted hook), so the next plan can start from it without
    /// reading `iptables-save` again.
    pub after: InstalledTable,
}

fn rendered_hash(lines: &[String]) -> Vec<Option<String>> {
    lines.iter().map(|l| line_hash(l)).collect()
}

/// Whether the installed chain holds what `lines` would write: the same hashes, and rules
/// that parse to the same typed rules (a hand edit that kept our comment is caught too; an
/// unparsable installed rule counts as different).
fn same_rules(old: &InstalledChain, lines: &[String]) -> bool {
    // What we wrote ourselves (the cached `after` of a plan) is the rendered text itself.
    if old.lines == lines {
        return true;
    }
    if old.hashes != rendered_hash(lines) {
        return false;
    }
    let parse = |ls: &[String]| -> Option<Vec<Rule>> {
        ls.iter().map(|l| parse_rule_args(l).ok()).collect()
    };
    match (parse(&old.lines), parse(lines)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The rule lines of every chain of `desired`, by chain name: the costly part of a plan, and
/// independent of what is installed (an agent's first apply renders while it reads the kernel).
pub fn render_chains(desired: Option<&TableState>) -> BTreeMap<String, Vec<String>> {
    desired.map_or_else(BTreeMap::new, |d| {
        d.chains
            .iter()
            .map(|(name, chain)| (name.clone(), render_chain(chain)))
            .collect()
    })
}

/// The transaction that makes `installed` hold `desired` (`None`: nothing of ours).
pub fn plan_table(
    id: TableId,
    desired: Option<&TableState>,
    installed: &InstalledTable,
) -> TablePlan {
    plan_rendered_table(id, desired, render_chains(desired), installed)
}

/// [`plan_table`] with `desired`'s chains already rendered by [`render_chains`].
pub fn plan_rendered_table(
    id: TableId,
    desired: Option<&TableState>,
    mut rendered: BTreeMap<String, Vec<String>>,
    installed: &InstalledTable,
) -> TablePlan {
    let empty = TableState::default();
    let desired = desired.unwrap_or(&empty);
    let mut plan = TablePlan::default();
    let mut decls = String::new();
    let mut body = String::new();
    let mut tail = String::new();

    for (name, chain) in &desired.chains {
        let lines = rendered.remove(name).unwrap_or_else(|| render_chain(chain));
        let change = match installed.chains.get(name) {
            None => Some(Change::CreateChain {
                table: id,
                chain: chain.clone(),
            }),
            Some(old) if !same_rules(old, &lines) => Some(Change::RewriteChain {
                table: id,
                chain: chain.clone(),
            }),
            Some(_) => None,
        };
        if let Some(change) = change {
            let _ = writeln!(decls, ":{name} - [0:0]");
            for line in &lines {
                body.push_str(line);
                body.push('\n');
            }
            plan.changes.push(change);
            plan.written.push(name.clone());
        }
        let hashes = rendered_hash(&lines);
        plan.after
            .chains
            .insert(name.clone(), InstalledChain { lines, hashes });
    }

    // Hooks: keep the first installed copy of each wanted one, delete every other.
    let mut kept: BTreeSet<(String, String)> = BTreeSet::new();
    for hook in &installed.hooks {
        let wanted = desired.hooks.get(&hook.builtin) == Some(&hook.target)
            && hook.hash == line_hash(&render_rule(&hook.builtin, &hook_rule(&hook.target)));
        if wanted && kept.insert((hook.builtin.clone(), hook.target.clone())) {
            continue;
        }
        if let Some(spec) = hook.line.strip_prefix("-A ") {
            let _ = writeln!(tail, "-D {spec}");
            plan.changes.push(Change::RemoveHook {
                table: id,
                builtin: hook.builtin.clone(),
                target: hook.target.clone(),
            });
        }
    }
    let mut inserts = String::new();
    for (builtin, target) in &desired.hooks {
        let line = render_rule(builtin, &hook_rule(target));
        plan.after.hooks.push(InstalledHook {
            builtin: builtin.clone(),
            target: target.clone(),
            hash: line_hash(&line),
            line: line.clone(),
        });
        if kept.contains(&(builtin.clone(), target.clone())) {
            continue;
        }
        if let Some(rest) = line.strip_prefix(&format!("-A {builtin} ")) {
            let _ = writeln!(inserts, "-I {builtin} 1 {rest}");
            plan.changes.push(Change::InsertHook {
                table: id,
                builtin: builtin.clone(),
                target: target.clone(),
            });
        }
    }

    let mut deletes = String::new();
    for name in installed.chains.keys() {
        if desired.chains.contains_key(name) {
            continue;
        }
        let _ = writeln!(decls, ":{name} - [0:0]");
        let _ = writeln!(deletes, "-X {name}");
        plan.changes.push(Change::DeleteChain {
            table: id,
            name: name.clone(),
        });
    }

    if plan.changes.is_empty() {
        return plan;
    }
    plan.input = format!(
        "*{}\n{decls}{body}{inserts}{tail}{deletes}COMMIT\n",
        id.table.name()
    );
    plan
}

/// Our chains and hooks of one table in `DesiredState` shape, parsed by the simulator's
/// restore parser from the save lines we own. `None` when we own nothing there.
///
/// # Errors
/// [`DataplaneError::Parse`] when a saved rule of ours is not one the parser knows.
pub fn observe_table(
    table: Table,
    installed: &InstalledTable,
) -> Result<Option<TableState>, DataplaneError> {
    if installed.chains.is_empty() && installed.hooks.is_empty() {
        return Ok(None);
    }
    let mut text = format!("*{}\n", table.name());
    // Only the first hook of each built-in chain (what `TableState::hooks` can hold).
    let mut hooks: BTreeMap<&str, &InstalledHook> = BTreeMap::new();
    for hook in &installed.hooks {
        if installed.chains.contains_key(&hook.target) {
            hooks.entry(hook.builtin.as_str()).or_insert(hook);
        }
    }
    for builtin in builtin_chains(table) {
        if hooks.contains_key(builtin) {
            let _ = writeln!(text, ":{builtin} ACCEPT [0:0]");
        }
    }
    for name in installed.chains.keys() {
        let _ = writeln!(text, ":{name} - [0:0]");
    }
    for hook in hooks.values() {
        let _ = writeln!(text, "{}", hook.line);
    }
    for chain in installed.chains.values() {
        for line in &chain.lines {
            let _ = writeln!(text, "{line}");
        }
    }
    text.push_str("COMMIT\n");
    let blocks = parse_restore(&text)?;
    let mut state = TableState::default();
    for block in blocks {
        for parsed in block.chains {
            if parsed.policy.is_some() {
                continue;
            }
            state.chains.insert(parsed.chain.name.clone(), parsed.chain);
        }
    }
    for (builtin, hook) in hooks {
        state.hooks.insert(builtin.to_string(), hook.target.clone());
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use calico_core::iptables::{Chain, Target};
    use calico_core::render::iptables::render_table;

    use super::*;

    const FILTER4: TableId = TableId {
        family: IpFamily::V4,
        table: Table::Filter,
    };

    fn chain(name: &str, targets: &[Target]) -> Chain {
        Chain {
            name: name.to_string(),
            rules: targets
                .iter()
                .map(|t| Rule::new(vec![], t.clone()).with_comment("x"))
                .collect(),
        }
    }

    fn state(chains: Vec<Chain>) -> TableState {
        TableState {
            hooks: BTreeMap::from([("FORWARD".to_string(), "cali-FORWARD".to_string())]),
            chains: chains.into_iter().map(|c| (c.name.clone(), c)).collect(),
        }
    }

    fn base() -> TableState {
        state(vec![
            chain(
                "cali-FORWARD",
                &[Target::Jump("cali-a".into()), Target::Drop],
            ),
            chain("cali-a", &[Target::Accept]),
            chain("cali-b", &[Target::Return]),
        ])
    }

    /// What iptables-save prints for a host holding exactly `s` plus a foreign rule.
    fn saved(s: &TableState) -> String {
        let text = render_table(FILTER4, s);
        text.replace(
            "COMMIT",
            ":DOCKER - [0:0]\n-A FORWARD -j DOCKER\n-A DOCKER -j ACCEPT\nCOMMIT",
        )
    }

    #[test]
    fn unchanged_table_needs_no_transaction() {
        let s = base();
        let installed = parse_save(&saved(&s));
        let plan = plan_table(FILTER4, Some(&s), &installed[&Table::Filter]);
        assert_eq!((plan.input.as_str(), plan.changes.len()), ("", 0));
        let observed = observe_table(Table::Filter, &installed[&Table::Filter]).unwrap();
        assert_eq!(observed, Some(s));
    }

    #[test]
    fn only_the_changed_chain_is_written_and_stale_ones_deleted() {
        let old = base();
        let installed = parse_save(&saved(&old));
        let mut new = old.clone();
        new.chains
            .insert("cali-a".into(), chain("cali-a", &[Target::Drop]));
        new.chains.remove("cali-b");
        let plan = plan_table(FILTER4, Some(&new), &installed[&Table::Filter]);
        assert_eq!(plan.written, vec!["cali-a".to_string()]);
        let lines: Vec<&str> = plan.input.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(&lines[1..3], &[":cali-a - [0:0]", ":cali-b - [0:0]"]);
        assert!(lines[3].starts_with("-A cali-a ") && lines[3].ends_with("-j DROP"));
        assert_eq!(&lines[4..], &["-X cali-b", "COMMIT"]);
        assert!(!plan.input.contains("DOCKER"));
    }

    #[test]
    fn planning_from_the_recorded_result_is_incremental() {
        let old = base();
        let written = plan_table(FILTER4, Some(&old), &InstalledTable::default());
        assert_eq!(written.written.len(), 3);
        let after = written.after;
        assert_eq!(after.hooks.len(), 1);
        assert_eq!(
            plan_table(FILTER4, Some(&old), &after),
            TablePlan {
                after: after.clone(),
                ..TablePlan::default()
            }
        );

        // The record is what the kernel would report, down to the observed state.
        let read = &parse_save(&saved(&old))[&Table::Filter];
        assert_eq!(
            observe_table(Table::Filter, &after).unwrap(),
            observe_table(Table::Filter, read).unwrap()
        );

        let mut new = old.clone();
        new.chains
            .insert("cali-a".into(), chain("cali-a", &[Target::Drop]));
        new.hooks.clear();
        let plan = plan_table(FILTER4, Some(&new), &after);
        assert_eq!(plan.written, vec!["cali-a".to_string()]);
        assert!(
            plan.input.contains("-D FORWARD -m comment"),
            "{}",
            plan.input
        );
        assert!(plan.after.hooks.is_empty());
        assert_eq!(plan_table(FILTER4, Some(&new), &plan.after).input, "");
    }

    #[test]
    fn missing_hook_is_inserted_at_the_top_and_duplicates_removed() {
        let s = base();
        let text = saved(&s);
        let hook = text
            .lines()
            .find(|l| l.starts_with("-A FORWARD -m comment"))
            .unwrap()
            .to_string();
        let without = text.replace(&format!("{hook}\n"), "");
        let plan = plan_table(FILTER4, Some(&s), &parse_save(&without)[&Table::Filter]);
        let insert = hook.replacen("-A FORWARD", "-I FORWARD 1", 1);
        assert_eq!(plan.input, format!("*filter\n{insert}\nCOMMIT\n"));

        let doubled = text.replace(&hook, &format!("{hook}\n{hook}"));
        let plan = plan_table(FILTER4, Some(&s), &parse_save(&doubled)[&Table::Filter]);
        let delete = hook.replacen("-A", "-D", 1);
        assert_eq!(plan.input, format!("*filter\n{delete}\nCOMMIT\n"));
    }

    #[test]
    fn a_hand_edited_chain_is_rewritten() {
        let s = base();
        let text = saved(&s).replace(
            "-A cali-b -m comment",
            "-A cali-b -s 10.0.0.1/32 -m comment",
        );
        let plan = plan_table(FILTER4, Some(&s), &parse_save(&text)[&Table::Filter]);
        assert_eq!(plan.written, vec!["cali-b".to_string()]);
    }

    #[test]
    fn nothing_wanted_removes_everything_of_ours() {
        let s = base();
        let plan = plan_table(FILTER4, None, &parse_save(&saved(&s))[&Table::Filter]);
        assert!(
            plan.input.contains("-D FORWARD -m comment"),
            "{}",
            plan.input
        );
        for name in ["cali-FORWARD", "cali-a", "cali-b"] {
            assert!(
                plan.input.contains(&format!("-X {name}\n")),
                "{}",
                plan.input
            );
        }
        assert!(!plan.input.contains("DOCKER"));
    }
}
