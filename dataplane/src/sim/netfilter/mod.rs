//! Netfilter of one host: per family, the `filter` and `nat` tables with their chains.
//!
//! - restore text is read into typed chains by `calico_core::parse::iptables`.
//! - [`eval`]: walks a packet through a built-in chain and names the deciding rule.
//!
//! Installing desired state mirrors `iptables-restore --noflush` the way a Calico agent uses it:
//! our chains are replaced whole, our hook rules sit at the top of the built-in chains, chains
//! we owned and no longer want are deleted, and nothing else (foreign chains, foreign rules in
//! built-in chains, built-in policies) is touched.

pub mod eval;

use std::collections::{BTreeMap, BTreeSet};

use calico_core::desired::TableId;
use calico_core::iptables::{Chain, IpFamily, Rule, Table, Target};
use calico_core::plan::Change;
use calico_core::render::iptables::render_chain;

use calico_core::parse::iptables::{builtin_chains, is_builtin, Policy, RestoreBlock};

/// One chain in the kernel: built-in chains have a policy, user chains do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfChain {
    pub rules: Vec<Rule>,
    pub policy: Option<Policy>,
}

/// One table of one family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NfTable {
    pub chains: BTreeMap<String, NfChain>,
}

impl NfTable {
    fn with_builtins(table: Table) -> Self {
        let chains = builtin_chains(table)
            .iter()
            .map(|name| {
                let chain = NfChain {
                    rules: Vec::new(),
                    policy: Some(Policy::Accept),
                };
                (name.to_string(), chain)
            })
            .collect();
        NfTable { chains }
    }
}

/// All four tables (v4/v6 × filter/nat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netfilter {
    pub tables: BTreeMap<TableId, NfTable>,
}

impl Default for Netfilter {
    fn default() -> Self {
        let mut tables = BTreeMap::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            for table in [Table::Filter, Table::Nat] {
                tables.insert(TableId { family, table }, NfTable::with_builtins(table));
            }
        }
        Netfilter { tables }
    }
}

/// Human name of a table for reports: `v4 filter`.
pub fn table_label(id: TableId) -> String {
    let family = match id.family {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    };
    format!("{family} {}", id.table.name())
}

fn jump_target(rule: &Rule) -> Option<&str> {
    match &rule.target {
        Target::Jump(c) | Target::Goto(c) => Some(c),
        _ => None,
    }
}

/// The hook changes of built-in chain `builtin` going from hook rules `old` to `new` (which
/// differ, or are no longer at the top): a jump removed, a jump inserted, or, when the targets
/// are the same, each re-inserted at the top.
fn hook_changes(
    table: TableId,
    builtin: &str,
    old: &[Rule],
    new: &[Rule],
    changes: &mut Vec<Change>,
) {
    let targets = |rules: &[Rule]| -> Vec<String> {
        rules
            .iter()
            .filter_map(jump_target)
            .map(str::to_string)
            .collect()
    };
    let (old, new) = (targets(old), targets(new));
    let hook = |target: &String| (table, builtin.to_string(), target.clone());
    for (table, builtin, target) in old.iter().filter(|t| !new.contains(t)).map(hook) {
        changes.push(Change::RemoveHook {
            table,
            builtin,
            target,
        });
    }
    let rewritten = old == new;
    for (table, builtin, target) in new
        .iter()
        .filter(|t| rewritten || !old.contains(t))
        .map(hook)
    {
        changes.push(Change::InsertHook {
            table,
            builtin,
            target,
        });
    }
}

impl Netfilter {
    /// Installs a parsed block as we own it (see the module doc): the block holds every chain
    /// we want in the table. `owned` are the chains we owned before; returns the changes
    /// and the chains we own afterwards.
    pub fn install(
        &mut self,
        id: TableId,
        block: &RestoreBlock,
        owned: &BTreeSet<String>,
    ) -> (Vec<Change>, BTreeSet<String>) {
        let now_owned: BTreeSet<String> = block
            .chains
            .iter()
            .filter(|c| c.policy.is_none())
            .map(|c| c.chain.name.clone())
            .collect();
        let stale: BTreeSet<String> = owned.difference(&now_owned).cloned().collect();
        let ours = |chain: &str| now_owned.contains(chain) || owned.contains(chain);
        let changes = self.install_delta(id, block.clone(), &ours, &stale);
        (changes, now_owned)
    }

    /// Installs a parsed block that holds only what changed, like `iptables-restore --noflush`
    /// with just those chains: each user chain of the block replaces (or creates) the chain
    /// of that name, each built-in chain of the block gets its rules as our hooks at its top
    /// (replacing our old hooks, which are the rules jumping to a chain `ours` names), and
    /// every chain not in the block stays as it is. Then the `stale` chains (ours, no longer
    /// wanted) are deleted, after every jump to them. Returns the changes.
    pub fn install_delta(
        &mut self,
        id: TableId,
        block: RestoreBlock,
        ours: &dyn Fn(&str) -> bool,
        stale: &BTreeSet<String>,
    ) -> Vec<Change> {
        let table = self
            .tables
            .entry(id)
            .or_insert_with(|| NfTable::with_builtins(id.table));
        let mut changes = Vec::new();
        let is_hook = |rule: &Rule| jump_target(rule).is_some_and(ours);
        for parsed in block.chains {
            let name = parsed.chain.name;
            let rules = parsed.chain.rules;
            if parsed.policy.is_some() {
                let Some(builtin) = table.chains.get_mut(&name) else {
                    continue;
                };
                let old_hooks: Vec<Rule> = builtin
                    .rules
                    .iter()
                    .filter(|r| is_hook(r))
                    .cloned()
                    .collect();
                let at_top = builtin.rules.get(..rules.len()) == Some(rules.as_slice());
                if old_hooks != rules || !at_top {
                    hook_changes(id, &name, &old_hooks, &rules, &mut changes);
                    builtin.rules.retain(|r| !is_hook(r));
                    let tail = std::mem::take(&mut builtin.rules);
                    builtin.rules = rules;
                    builtin.rules.extend(tail);
                }
            } else {
                match table.chains.get_mut(&name) {
                    Some(existing) if existing.rules == rules => {}
                    Some(existing) => {
                        existing.rules.clone_from(&rules);
                        changes.push(Change::RewriteChain {
                            table: id,
                            chain: Chain { name, rules },
                        });
                    }
                    None => {
                        table.chains.insert(
                            name.clone(),
                            NfChain {
                                rules: rules.clone(),
                                policy: None,
                            },
                        );
                        changes.push(Change::CreateChain {
                            table: id,
                            chain: Chain { name, rules },
                        });
                    }
                }
            }
        }
        if stale.is_empty() {
            return changes;
        }
        // Our hooks into chains we no longer own go first, then the chains themselves.
        for (name, chain) in table.chains.iter_mut() {
            let mut removed = BTreeSet::new();
            chain.rules.retain(|r| match jump_target(r) {
                Some(t) if stale.contains(t) => {
                    removed.insert(t.to_string());
                    false
                }
                _ => true,
            });
            if stale.contains(name) {
                continue;
            }
            for target in removed {
                changes.push(Change::RemoveHook {
                    table: id,
                    builtin: name.clone(),
                    target,
                });
            }
        }
        for name in stale {
            if table.chains.remove(name).is_some() {
                changes.push(Change::DeleteChain {
                    table: id,
                    name: name.clone(),
                });
            }
        }
        changes
    }

    /// Replaces rules `old` of user chain `name` with `rules` (like `iptables -R`, `-I` and `-D`
    /// at those positions). False, and nothing changed, when there is no such user chain or
    /// the range is outside it.
    pub fn splice_chain(
        &mut self,
        id: TableId,
        name: &str,
        old: std::ops::Range<usize>,
        rules: Vec<Rule>,
    ) -> bool {
        let chain = self
            .tables
            .get_mut(&id)
            .and_then(|t| t.chains.get_mut(name))
            .filter(|c| c.policy.is_none());
        match chain {
            Some(chain) if old.start <= old.end && old.end <= chain.rules.len() => {
                chain.rules.splice(old, rules);
                true
            }
            _ => false,
        }
    }

    /// The rules of a user chain (`None` for a missing or built-in chain): what an apply
    /// compares with the desired chain to decide whether to restore it.
    pub fn user_chain_rules(&self, id: TableId, name: &str) -> Option<&[Rule]> {
        self.tables
            .get(&id)?
            .chains
            .get(name)
            .filter(|c| c.policy.is_none())
            .map(|c| c.rules.as_slice())
    }

    /// Our chains of a table, as the typed chains they were parsed into.
    pub fn chains_named(&self, id: TableId, names: &BTreeSet<String>) -> BTreeMap<String, Chain> {
        let Some(table) = self.tables.get(&id) else {
            return BTreeMap::new();
        };
        names
            .iter()
            .filter_map(|name| {
                table.chains.get(name).map(|c| {
                    let chain = Chain {
                        name: name.clone(),
                        rules: c.rules.clone(),
                    };
                    (name.clone(), chain)
                })
            })
            .collect()
    }

    /// Built-in chain → first of our chains it jumps to.
    pub fn hooks(&self, id: TableId, names: &BTreeSet<String>) -> BTreeMap<String, String> {
        let Some(table) = self.tables.get(&id) else {
            return BTreeMap::new();
        };
        let mut hooks = BTreeMap::new();
        for (name, chain) in &table.chains {
            if !is_builtin(id.table, name) {
                continue;
            }
            let first = chain
                .rules
                .iter()
                .filter_map(jump_target)
                .find(|t| names.contains(*t));
            if let Some(target) = first {
                hooks.insert(name.clone(), target.to_string());
            }
        }
        hooks
    }

    /// Like `iptables-save -t <table>`: built-in chains first, then user chains, all sorted.
    pub fn save(&self, id: TableId) -> String {
        let Some(table) = self.tables.get(&id) else {
            return String::new();
        };
        let mut out = format!("*{}\n", id.table.name());
        let order = |builtin: bool| {
            table
                .chains
                .iter()
                .filter(move |(name, _)| is_builtin(id.table, name) == builtin)
        };
        for (name, chain) in order(true).chain(order(false)) {
            let policy = chain.policy.map_or("-", Policy::name);
            out += &format!(":{name} {policy} [0:0]\n");
        }
        for (name, chain) in order(true).chain(order(false)) {
            let typed = Chain {
                name: name.clone(),
                rules: chain.rules.clone(),
            };
            for line in render_chain(&typed) {
                out += &line;
                out.push('\n');
            }
        }
        out += "COMMIT\n";
        out
    }

    /// Like `iptables -F <chain>`; false when the chain does not exist.
    pub fn flush_chain(&mut self, id: TableId, chain: &str) -> bool {
        match self
            .tables
            .get_mut(&id)
            .and_then(|t| t.chains.get_mut(chain))
        {
            Some(c) => {
                c.rules.clear();
                true
            }
            None => false,
        }
    }
}
