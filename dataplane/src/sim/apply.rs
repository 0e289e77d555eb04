//! `impl Dataplane for SimDataplane`: desired state is rendered with the core renderers and the
//! text parsed back into the kernel, so a rendering bug shows up here as it would on Linux.
//!
//! Order as on a real host: ipsets first (rules may reference them), then the tables, then
//! stale ipsets (only once no rule references them), routes, neighbours, sysctls, BIRD.
//! A failing step does not stop the others; the first error is returned after the rest was
//! applied, and the next apply retries. A missing workload interface is not an error: what
//! needs it is left out and the interface reported in [`ApplyReport::waiting`], as on Linux.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use async_trait::async_trait;
use calico_core::desired::{DesiredState, Neighbour, Route, TableId, TableState};
use calico_core::iptables::{Chain, Match, Rule, Target};
use calico_core::render::ipset::{create_line, render_member};
use calico_core::render::iptables::{hook_rule, render_chain, render_rule};

use calico_core::parse::iptables::{is_builtin, parse_restore_noflush, parse_rule_args};
use calico_core::plan::Change;

use super::ipset::{created_whole, parse_ipset_restore, restore, IpSetCommand};
use super::kernel::{split_iface_sysctl, Kernel, Link, NeighEntry, ROOT_NS};
use super::netfilter::table_label;
use super::route::{KernelRoute, RouteProto};
use super::SimDataplane;
use crate::{ApplyReport, Dataplane, DataplaneError};

#[async_trait]
impl Dataplane for SimDataplane {
    async fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        self.apply_now(desired)
    }

    async fn observe(&mut self) -> Result<DesiredState, DataplaneError> {
        Ok(self.observe_now())
    }
}

impl SimDataplane {
    /// [`Dataplane::apply`] without the async wrapper.
    ///
    /// # Errors
    /// See the module doc.
    pub fn apply_now(&self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        apply_state(&mut self.lock(), desired)
    }

    /// [`Dataplane::observe`] without the async wrapper.
    pub fn observe_now(&self) -> DesiredState {
        observe_state(&self.lock())
    }
}

fn set_references(rule: &Rule) -> impl Iterator<Item = &str> {
    rule.matches.iter().filter_map(|m| match m {
        Match::Set { name, .. } => Some(name.as_str()),
        _ => None,
    })
}

fn apply_state(k: &mut Kernel, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
    let mut changes = Vec::new();
    let mut first_error: Option<DataplaneError> = None;
    let mut waiting = BTreeSet::new();

    // 1. ipsets we want.
    restore_ipsets(k, desired, &mut changes)?;

    // 2. tables: every table we want or owned before (an unwanted one is emptied).
    let ids: BTreeSet<TableId> = desired
        .tables
        .keys()
        .chain(k.owned.tables.keys())
        .copied()
        .collect();
    let empty = TableState::default();
    for id in ids {
        let state = desired.tables.get(&id).unwrap_or(&empty);
        changes.extend(restore_table(k, id, state)?);
        if desired.tables.contains_key(&id) {
            let owned = k.owned.tables.entry(id).or_default();
            owned.retain(|name| state.chains.contains_key(name));
            for name in state.chains.keys() {
                if !owned.contains(name) {
                    owned.insert(name.clone());
                }
            }
        } else {
            k.owned.tables.remove(&id);
        }
    }

    // 3. ipsets we no longer want, unless a rule still uses them.
    let stale: Vec<String> = k
        .owned
        .ipsets
        .iter()
        .filter(|n| !desired.ipsets.contains_key(*n))
        .cloned()
        .collect();
    let referenced: BTreeSet<String> = if stale.is_empty() {
        BTreeSet::new()
    } else {
        k.netfilter
            .tables
            .values()
            .flat_map(|t| t.chains.values())
            .flat_map(|c| c.rules.iter())
            .flat_map(|r| set_references(r).map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    for name in stale {
        if referenced.contains(&name) {
            first_error.get_or_insert(DataplaneError::Kernel {
                operation: format!("destroying ipset {name}"),
                reason: "set is in use by a rule".to_string(),
            });
            continue;
        }
        if k.ipsets.contains_key(&name) {
            let destroy = [(0, IpSetCommand::Destroy { name: name.clone() })];
            restore(&mut k.ipsets, &destroy)?;
            changes.push(Change::DeleteIpSet { name: name.clone() });
        }
        k.owned.ipsets.remove(&name);
    }

    // 4. our routes.
    let current: BTreeMap<_, _> = k
        .ns(ROOT_NS)?
        .routes
        .iter()
        .filter(|r| r.proto == RouteProto::Calico)
        .map(|r| (r.dst, r.clone()))
        .collect();
    let wanted: BTreeSet<_> = desired.routes.iter().map(|r| r.dst.trunc()).collect();
    for (dst, route) in current.iter().filter(|(d, _)| !wanted.contains(*d)) {
        k.ns_mut(ROOT_NS)?.routes.remove(dst);
        changes.push(Change::DelRoute(Route {
            dst: *dst,
            dev: route.dev.clone().unwrap_or_default(),
        }));
    }
    for Route { dst, dev } in &desired.routes {
        let route = KernelRoute::dev(dst.trunc(), dev, RouteProto::Calico);
        if current.get(&dst.trunc()) == Some(&route) {
            continue;
        }
        match k.route_replace(ROOT_NS, route) {
            Ok(()) => changes.push(Change::AddRoute(Route {
                dst: dst.trunc(),
                dev: dev.clone(),
            })),
            Err(DataplaneError::InterfaceNotFound { .. }) => {
                waiting.insert(dev.clone());
            }
            Err(e) => {
                first_error.get_or_insert(DataplaneError::Kernel {
                    operation: format!("adding route {dst} dev {dev}"),
                    reason: e.to_string(),
                });
            }
        }
    }

    // 5. our static neighbours.
    let stale: Vec<Neighbour> = k
        .owned
        .neighbours
        .difference(&desired.neighbours)
        .cloned()
        .collect();
    for n in stale {
        let space = k.ns_mut(ROOT_NS)?;
        let key = (n.ip, n.dev.clone());
        if space.neighbours.get(&key).is_some_and(|e| e.permanent) {
            space.neighbours.remove(&key);
            changes.push(Change::DelNeighbour(n.clone()));
        }
        k.owned.neighbours.remove(&n);
    }
    // One index of the host's links per apply: `Kernel::link` is a scan over every link,
    // once per neighbour and per-interface sysctl it would cost links × endpoints.
    let (missing_devs, sysctls_to_set) = {
        let links: BTreeMap<&str, &Link> = k
            .links
            .values()
            .filter(|l| l.ns == ROOT_NS)
            .map(|l| (l.name.as_str(), l))
            .collect();
        let missing: BTreeSet<&str> = desired
            .neighbours
            .iter()
            .map(|n| n.dev.as_str())
            .filter(|dev| !links.contains_key(dev))
            .collect();
        let to_set: Vec<(&String, &String)> = desired
            .sysctls
            .iter()
            .filter(|(key, value)| current_sysctl(k, &links, key) != Some(value.as_str()))
            .collect();
        (missing, to_set)
    };
    for n in &desired.neighbours {
        let entry = NeighEntry {
            mac: n.mac,
            permanent: true,
        };
        if missing_devs.contains(n.dev.as_str()) {
            waiting.insert(n.dev.clone());
            continue;
        }
        let space = k.ns_mut(ROOT_NS)?;
        let key = (n.ip, n.dev.clone());
        if space.neighbours.get(&key) != Some(&entry) {
            space.neighbours.insert(key, entry);
            changes.push(Change::AddNeighbour(n.clone()));
        }
        if !k.owned.neighbours.contains(n) {
            k.owned.neighbours.insert(n.clone());
        }
    }

    super::proxy_ndp::apply(k, desired, &mut changes, &mut waiting);

    // 6. sysctls.
    // Keys already at their value are ours as they are; the others once they are set.
    let to_set: BTreeSet<&String> = sysctls_to_set.iter().map(|(key, _)| *key).collect();
    for key in desired.sysctls.keys() {
        if !to_set.contains(key) && !k.owned.sysctls.contains(key) {
            k.owned.sysctls.insert(key.clone());
        }
    }
    for (key, value) in sysctls_to_set {
        match k.sysctl_set(key, value) {
            Ok(()) => {
                changes.push(Change::SetSysctl {
                    key: key.clone(),
                    value: value.clone(),
                });
                k.owned.sysctls.insert(key.clone());
            }
            Err(DataplaneError::InterfaceNotFound { .. }) => {
                if let Some((_, iface, _)) = split_iface_sysctl(key) {
                    waiting.insert(iface.to_string());
                }
            }
            Err(e) => {
                first_error.get_or_insert(DataplaneError::Kernel {
                    operation: format!("setting sysctl {key}"),
                    reason: e.to_string(),
                });
            }
        }
    }
    k.owned
        .sysctls
        .retain(|key| desired.sysctls.contains_key(key));

    // Tunnel devices and what goes through them.
    if let Err(e) = super::tunnel::apply_overlay(k, &desired.overlay, &mut changes) {
        first_error.get_or_insert(e);
    }

    // 7. BIRD.
    if k.bird_v4 != desired.bird_v4 {
        k.bird_v4 = desired.bird_v4.clone();
        changes.push(Change::WriteBirdConfig {
            v6: false,
            config: desired.bird_v4.clone(),
        });
    }
    if k.bird_v6 != desired.bird_v6 {
        k.bird_v6 = desired.bird_v6.clone();
        changes.push(Change::WriteBirdConfig {
            v6: true,
            config: desired.bird_v6.clone(),
        });
    }

    match first_error {
        Some(e) => Err(e),
        None => Ok(ApplyReport { changes, waiting }),
    }
}

/// Brings the kernel's sets to `desired.ipsets` through `ipset restore` text holding only the
/// sets that differ: a missing set (or one of another type) is created and filled whole, an
/// existing one gets `add`/`del` lines for the members that differ, an equal one nothing.
/// The text is built from the core renderer's lines and parsed like any restore input,
/// except for sets that do not exist yet: those are built as those lines would build them
/// ([`created_whole`]), with the same checks, and land only if the whole restore does.
fn restore_ipsets(
    k: &mut Kernel,
    desired: &DesiredState,
    changes: &mut Vec<Change>,
) -> Result<(), DataplaneError> {
    let mut text = String::new();
    let mut changed = Vec::new();
    let mut created = Vec::new();
    for (name, set) in &desired.ipsets {
        match k.ipsets.get(name) {
            None => {
                created.push(created_whole(set)?);
                changed.push(Change::CreateIpSet(set.clone()));
            }
            Some(old) if old == set => continue,
            Some(old) if old.kind == set.kind && old.family == set.family => {
                for member in set.members.difference(&old.members) {
                    let member = render_member(set.kind, member);
                    let _ = writeln!(text, "add {name} {member} -exist");
                }
                for member in old.members.difference(&set.members) {
                    let member = render_member(set.kind, member);
                    let _ = writeln!(text, "del {name} {member} -exist");
                }
                changed.push(Change::UpdateIpSet(set.clone()));
            }
            // Of another type: the restore refuses to re-create it, as the kernel would.
            Some(_) => {
                let _ = writeln!(text, "{}", create_line(set));
                let _ = writeln!(text, "flush {name}");
                for member in &set.members {
                    let _ = writeln!(text, "add {name} {}", render_member(set.kind, member));
                }
                changed.push(Change::UpdateIpSet(set.clone()));
            }
        }
    }
    if !text.is_empty() {
        restore(&mut k.ipsets, &parse_ipset_restore(&text)?)?;
    }
    for set in created {
        k.ipsets.insert(set.name.clone(), set);
    }
    changes.extend(changed);
    for name in desired.ipsets.keys() {
        if !k.owned.ipsets.contains(name) {
            k.owned.ipsets.insert(name.clone());
        }
    }
    Ok(())
}

/// Brings one table to `state` like `iptables-restore --noflush` with only what changed, and
/// returns the changes: a chain the kernel lacks is rendered with the core renderer, together
/// with the hooks, parsed back and installed; a chain it holds with other rules gets only the
/// rules between the longest common prefix and suffix rendered, parsed and spliced in (the
/// way `iptables -R/-I/-D` edit a chain in place, so adding one endpoint to a dispatch chain
/// of thousands costs one rule); every other chain is left alone; chains we owned and no
/// longer want are deleted.
///
/// A rule (or chain) is kept when it equals the desired one: what the kernel holds was parsed
/// from the renderer's text, and the renderer→parser round trip is the identity on rules
/// (`core/tests/iptables_roundtrip.rs`), so re-rendering it would give the same rules. A chain changed
/// behind our back (drift) differs and is restored. Spliced rules are rendered as the first
/// rule of their chain: only their `cali:<hash>` comment, which the parser drops, differs
/// from a whole-chain rendering.
fn restore_table(
    k: &mut Kernel,
    id: TableId,
    state: &TableState,
) -> Result<Vec<Change>, DataplaneError> {
    let no_owned = BTreeSet::new();
    let owned = k.owned.tables.get(&id).unwrap_or(&no_owned);
    let mut whole: Vec<&Chain> = Vec::new();
    let mut splices: Vec<(&Chain, Range<usize>, Range<usize>)> = Vec::new();
    for (name, chain) in &state.chains {
        match k.netfilter.user_chain_rules(id, name) {
            Some(old) if old == chain.rules.as_slice() => {}
            Some(old) => {
                let (new, old) = differing_middle(&chain.rules, old);
                splices.push((chain, new, old));
            }
            None => whole.push(chain),
        }
    }
    let stale: BTreeSet<String> = owned
        .iter()
        .filter(|name| !state.chains.contains_key(*name))
        .cloned()
        .collect();
    if whole.is_empty() && splices.is_empty() && stale.is_empty() && state.hooks.is_empty() {
        return Ok(Vec::new());
    }
    let mut spliced = Vec::with_capacity(splices.len());
    for (chain, new, old) in splices {
        let rules = chain.rules.get(new).unwrap_or_default();
        let parsed = parse_rules(id, &chain.name, rules, &|name| {
            state.chains.contains_key(name)
        })?;
        check_set_references(k, id, &chain.name, &parsed)?;
        spliced.push((chain, old, parsed));
    }
    let text = render_delta(id, &state.hooks, &whole);
    // Unchanged chains stay in the kernel, so jumps to them resolve there.
    let blocks = parse_restore_noflush(&text, &|name| state.chains.contains_key(name))?;
    for block in &blocks {
        for chain in &block.chains {
            check_set_references(k, id, &chain.chain.name, &chain.chain.rules)?;
        }
    }
    let ours = |name: &str| state.chains.contains_key(name) || owned.contains(name);
    let mut changes = Vec::new();
    for (chain, old, rules) in spliced {
        if k.netfilter.splice_chain(id, &chain.name, old, rules) {
            changes.push(Change::RewriteChain {
                table: id,
                chain: chain.clone(),
            });
        }
    }
    for block in blocks {
        changes.extend(k.netfilter.install_delta(id, block, &ours, &stale));
    }
    Ok(changes)
}

/// The ranges of `new` and `old` that differ: what lies between their longest common prefix
/// and their longest common suffix (which do not overlap).
fn differing_middle(new: &[Rule], old: &[Rule]) -> (Range<usize>, Range<usize>) {
    let prefix = new.iter().zip(old).take_while(|(a, b)| a == b).count();
    let room = new.len().min(old.len()) - prefix;
    let suffix = new
        .iter()
        .rev()
        .zip(old.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    (prefix..new.len() - suffix, prefix..old.len() - suffix)
}

/// Renders `rules` as `-A <chain>` lines and parses each back, checking its jump like
/// `iptables-restore` would: the target must be one of our chains (`exists`), never a
/// built-in chain.
fn parse_rules(
    id: TableId,
    chain: &str,
    rules: &[Rule],
    exists: &dyn Fn(&str) -> bool,
) -> Result<Vec<Rule>, DataplaneError> {
    let mut parsed = Vec::with_capacity(rules.len());
    for rule in rules {
        let line = render_rule(chain, rule);
        let rule = parse_rule_args(&line)?;
        if let Target::Jump(target) | Target::Goto(target) = &rule.target {
            if is_builtin(id.table, target) || !exists(target) {
                return Err(DataplaneError::Kernel {
                    operation: format!("restoring {}", table_label(id)),
                    reason: format!("chain {chain} jumps to unknown chain {target}"),
                });
            }
        }
        parsed.push(rule);
    }
    Ok(parsed)
}

/// Refuses rules that match on an ipset the kernel does not have (as `iptables-restore` does).
fn check_set_references(
    k: &Kernel,
    id: TableId,
    chain: &str,
    rules: &[Rule],
) -> Result<(), DataplaneError> {
    match rules
        .iter()
        .flat_map(set_references)
        .find(|name| !k.ipsets.contains_key(*name))
    {
        Some(name) => Err(DataplaneError::Kernel {
            operation: format!("restoring {}", table_label(id)),
            reason: format!("chain {chain} references missing ipset {name}"),
        }),
        None => Ok(()),
    }
}

/// The restore text for one table holding only `chains` and the hooks, laid out like the
/// core's `render_table` (which renders every chain): header, declarations of the hooked
/// built-in chains and of `chains`, the hook rules, each chain's rules, `COMMIT`.
fn render_delta(id: TableId, hooks: &BTreeMap<String, String>, chains: &[&Chain]) -> String {
    let mut out = format!("*{}\n", id.table.name());
    for builtin in hooks.keys() {
        let _ = writeln!(out, ":{builtin} ACCEPT [0:0]");
    }
    for chain in chains {
        let _ = writeln!(out, ":{} - [0:0]", chain.name);
    }
    for (builtin, target) in hooks {
        let _ = writeln!(out, "{}", render_rule(builtin, &hook_rule(target)));
    }
    for chain in chains {
        for line in render_chain(chain) {
            let _ = writeln!(out, "{line}");
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The value of sysctl `key` (like `sysctl -n`), reading per-interface keys from `links` (the
/// host namespace's links by name) instead of scanning every link.
fn current_sysctl<'k>(
    k: &'k Kernel,
    links: &BTreeMap<&str, &'k Link>,
    key: &str,
) -> Option<&'k str> {
    match split_iface_sysctl(key) {
        Some((section, iface, param)) => links
            .get(iface)?
            .conf
            .get(&(section, param.to_string()))
            .map(String::as_str),
        None => k.sysctls.get(key).map(String::as_str),
    }
}

fn observe_state(k: &Kernel) -> DesiredState {
    let tables = k
        .owned
        .tables
        .iter()
        .map(|(id, names)| {
            let state = TableState {
                chains: k.netfilter.chains_named(*id, names),
                hooks: k.netfilter.hooks(*id, names),
            };
            (*id, state)
        })
        .collect();
    let ipsets = k
        .owned
        .ipsets
        .iter()
        .filter_map(|n| k.ipsets.get(n).map(|s| (n.clone(), s.clone())))
        .collect();
    let tunnels = super::tunnel::tunnel_devices(k);
    let (routes, neighbours) = match k.ns(ROOT_NS) {
        Ok(space) => (
            space
                .routes
                .iter()
                .filter(|r| r.proto == RouteProto::Calico)
                .filter_map(|r| {
                    r.dev.as_ref().map(|dev| Route {
                        dst: r.dst,
                        dev: dev.clone(),
                    })
                })
                .collect(),
            space
                .neighbours
                .iter()
                .filter(|((_, dev), e)| e.permanent && !tunnels.contains(dev.as_str()))
                .map(|((ip, dev), e)| Neighbour {
                    ip: *ip,
                    mac: e.mac,
                    dev: dev.clone(),
                })
                .collect(),
        ),
        Err(_) => Default::default(),
    };
    let sysctls = k
        .owned
        .sysctls
        .iter()
        .filter_map(|key| k.sysctl_get(key).map(|v| (key.clone(), v)))
        .collect();
    DesiredState {
        tables,
        ipsets,
        routes,
        neighbours,
        proxy_neighbours: super::proxy_ndp::observe(k),
        sysctls,
        bird_v4: k.bird_v4.clone(),
        bird_v6: k.bird_v6.clone(),
        overlay: super::tunnel::observe_overlay(k),
    }
}

#[cfg(test)]
mod tests {
    use calico_core::desired::{IpSet, IpSetKind};
    use calico_core::iptables::{IpFamily, SetDirection, Table, Target};
    use calico_core::model::Protocol;
    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::*;
    use crate::sim::WireConfig;

    const FILTER: TableId = TableId {
        family: IpFamily::V4,
        table: Table::Filter,
    };
    const CHAINS: [&str; 4] = ["cali-a", "cali-b", "cali-c", "cali-d"];
    const SETS: [&str; 2] = ["cali4-s1", "cali4-s2"];

    fn new_host() -> SimDataplane {
        SimDataplane::new("h", WireConfig::eth0(["10.0.0.1/24".parse().unwrap()]))
    }

    fn set(name: &str, members: &[u8]) -> IpSet {
        IpSet {
            name: name.to_string(),
            family: IpFamily::V4,
            kind: IpSetKind::HashIp,
            members: members
                .iter()
                .map(|m| format!("10.1.0.{m}/32").parse::<IpNet>().unwrap())
                .collect(),
        }
    }

    /// Rule palette: `n` picks a rule; jumps and set matches only to what `has` says exists.
    fn rule(n: u8, chains: &[&str], sets: &[&str]) -> Rule {
        let proto = Match::Protocol {
            protocol: Protocol::Tcp,
            negate: false,
        };
        match n % 6 {
            0 => Rule::new(vec![], Target::Accept),
            1 => Rule::new(vec![proto], Target::Drop).with_comment("no tcp"),
            2 => Rule::new(
                vec![Match::Source {
                    net: format!("10.2.{n}.0/24").parse().unwrap(),
                    negate: n % 2 == 0,
                }],
                Target::Return,
            ),
            3 => match chains.get(usize::from(n) % chains.len().max(1)) {
                Some(target) => Rule::new(vec![], Target::Jump(target.to_string())),
                None => Rule::new(vec![], Target::Drop),
            },
            4 => match sets.get(usize::from(n) % sets.len().max(1)) {
                Some(name) => Rule::new(
                    vec![Match::Set {
                        name: name.to_string(),
                        direction: SetDirection::Src,
                        negate: false,
                    }],
                    Target::Accept,
                ),
                None => Rule::new(vec![], Target::Return),
            },
            _ => Rule::new(vec![], Target::Drop).with_comment(format!("drop {n}")),
        }
    }

    /// A desired state from a compact description: which chains exist (each with rule picks;
    /// a chain jumps only to later chains, so there are no loops), which sets (with members).
    fn desired(chains: &[Option<Vec<u8>>], sets: &[Option<Vec<u8>>]) -> DesiredState {
        let present_sets: Vec<&str> = SETS
            .iter()
            .zip(sets)
            .filter(|(_, s)| s.is_some())
            .map(|(n, _)| *n)
            .collect();
        let mut table = TableState::default();
        for (i, (name, picks)) in CHAINS.iter().zip(chains).enumerate() {
            let Some(picks) = picks else { continue };
            let later: Vec<&str> = CHAINS
                .iter()
                .zip(chains)
                .skip(i + 1)
                .filter(|(_, c)| c.is_some())
                .map(|(n, _)| *n)
                .collect();
            let rules = picks
                .iter()
                .map(|n| rule(*n, &later, &present_sets))
                .collect();
            table.chains.insert(
                name.to_string(),
                Chain {
                    name: name.to_string(),
                    rules,
                },
            );
        }
        if let Some(first) = table.chains.keys().next() {
            table.hooks.insert("FORWARD".to_string(), first.clone());
        }
        let mut state = DesiredState::default();
        if !table.chains.is_empty() {
            state.tables.insert(FILTER, table);
        }
        for (name, members) in SETS.iter().zip(sets) {
            if let Some(members) = members {
                state.ipsets.insert(name.to_string(), set(name, members));
            }
        }
        state
    }

    fn kernel_view(host: &SimDataplane) -> (String, BTreeMap<String, IpSet>, DesiredState) {
        let save = host.iptables_save(IpFamily::V4, Table::Filter);
        let k = host.lock();
        (save, k.ipsets.clone(), observe_state(&k))
    }

    #[test]
    fn changing_one_chain_restores_only_that_chain() {
        let host = new_host();
        let before = desired(
            &[Some(vec![3, 0]), Some(vec![4, 1]), Some(vec![2]), None],
            &[Some(vec![1, 2]), None],
        );
        let first = host.apply_now(&before).unwrap();
        assert_eq!(first.changes.len(), 5, "{:?}", first.changes);
        let mut after = before.clone();
        let table = after.tables.get_mut(&FILTER).unwrap();
        table
            .chains
            .get_mut("cali-c")
            .unwrap()
            .rules
            .push(Rule::new(vec![], Target::Drop));
        after
            .ipsets
            .get_mut("cali4-s1")
            .unwrap()
            .members
            .insert("10.1.0.9/32".parse().unwrap());
        let report = host.apply_now(&after).unwrap();
        assert_eq!(
            report.changes,
            [
                Change::UpdateIpSet(after.ipsets["cali4-s1"].clone()),
                Change::RewriteChain {
                    table: FILTER,
                    chain: after.tables[&FILTER].chains["cali-c"].clone(),
                },
            ]
        );
        assert_eq!(
            report.changes[1].to_string(),
            "rewrite chain filter/v4 cali-c"
        );
        assert_eq!(host.observe_now(), after);
        assert_eq!(host.apply_now(&after).unwrap().changes, []);
    }

    #[test]
    fn a_chain_changed_behind_our_back_is_restored_alone() {
        let host = new_host();
        let state = desired(
            &[Some(vec![3]), Some(vec![0, 1]), None, None],
            &[None, None],
        );
        host.apply_now(&state).unwrap();
        assert!(host.flush_chain(IpFamily::V4, Table::Filter, "cali-b"));
        let report = host.apply_now(&state).unwrap();
        let texts: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["rewrite chain filter/v4 cali-b"]);
        assert_eq!(host.observe_now(), state);
    }

    #[test]
    fn a_rule_naming_a_missing_set_is_refused_and_nothing_changes() {
        let host = new_host();
        let state = desired(&[Some(vec![0]), None, None, None], &[None, None]);
        host.apply_now(&state).unwrap();
        let saved = host.iptables_save(IpFamily::V4, Table::Filter);
        let mut bad = state.clone();
        let table = bad.tables.get_mut(&FILTER).unwrap();
        table
            .chains
            .get_mut("cali-a")
            .unwrap()
            .rules
            .push(rule(4, &[], &["cali4-nope"]));
        let e = host.apply_now(&bad).unwrap_err();
        assert!(e.to_string().contains("restoring v4 filter"), "{e}");
        assert_eq!(host.iptables_save(IpFamily::V4, Table::Filter), saved);
    }

    #[test]
    fn one_rule_added_to_a_long_chain_is_spliced_in() {
        let host = new_host();
        let mut state = desired(&[Some(vec![0]), None, None, None], &[None, None]);
        let long: Vec<Rule> = (0..100u8)
            .map(|n| {
                let net = format!("10.3.{n}.0/24").parse().unwrap();
                let source = Match::Source { net, negate: false };
                Rule::new(vec![source], Target::Return)
            })
            .collect();
        let table = state.tables.get_mut(&FILTER).unwrap();
        table.chains.get_mut("cali-a").unwrap().rules = long;
        host.apply_now(&state).unwrap();

        let mut more = state.clone();
        let rules = &mut more
            .tables
            .get_mut(&FILTER)
            .unwrap()
            .chains
            .get_mut("cali-a")
            .unwrap()
            .rules;
        rules.insert(50, Rule::new(vec![], Target::Drop).with_comment("new"));
        rules.remove(10);
        let report = host.apply_now(&more).unwrap();
        let texts: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["rewrite chain filter/v4 cali-a"]);
        assert_eq!(host.observe_now(), more);
        let fresh = new_host();
        fresh.apply_now(&more).unwrap();
        assert_eq!(kernel_view(&host), kernel_view(&fresh));

        // A spliced rule must jump to a chain that exists, like any restored rule.
        let mut bad = more.clone();
        let rules = &mut bad
            .tables
            .get_mut(&FILTER)
            .unwrap()
            .chains
            .get_mut("cali-a")
            .unwrap()
            .rules;
        rules.insert(
            3,
            Rule::new(vec![], Target::Jump("cali-nowhere".to_string())),
        );
        let e = host.apply_now(&bad).unwrap_err();
        assert!(e.to_string().contains("restoring v4 filter"), "{e}");
        assert_eq!(host.observe_now(), more);
    }

    fn chains_strategy() -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
        prop::collection::vec(
            prop::option::of(prop::collection::vec(0u8..30, 0..4)),
            CHAINS.len(),
        )
    }

    fn sets_strategy() -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
        prop::collection::vec(
            prop::option::of(prop::collection::vec(0u8..8, 0..4)),
            SETS.len(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Applying a sequence of states one after the other leaves the kernel exactly as
        /// applying only the last one to a fresh kernel does, and a repeated apply is empty.
        #[test]
        fn incremental_applies_converge_to_a_fresh_apply(
            steps in prop::collection::vec((chains_strategy(), sets_strategy()), 1..6),
        ) {
            let host = new_host();
            let mut last = DesiredState::default();
            for (chains, sets) in &steps {
                last = desired(chains, sets);
                host.apply_now(&last).unwrap();
            }
            let fresh = new_host();
            fresh.apply_now(&last).unwrap();
            prop_assert_eq!(kernel_view(&host), kernel_view(&fresh));
            prop_assert_eq!(host.observe_now(), last.clone());
            prop_assert_eq!(host.apply_now(&last).unwrap().changes, Vec::<Change>::new());
        }
    }
}
