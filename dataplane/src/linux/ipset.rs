//! ipsets through `ipset save` / `ipset restore`: our sets are those named `cali4-` / `cali6-`
//! (and their temporaries `cali4_` / `cali6_`, see `temp_ipset_name`).
//!
//! A changed set gets incremental `add`/`del` lines when the change is small, otherwise it is
//! filled afresh under its temporary name and swapped in (`swap` + `destroy`), so rules never
//! see a half-filled set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use calico_core::compute::names::temp_ipset_name;
use calico_core::desired::{IpSet, IpSetKind};
use calico_core::iptables::IpFamily;
use calico_core::plan::Change;
use calico_core::render::ipset::{create_line, render_member};
use ipnet::IpNet;

use crate::DataplaneError;

/// Prefixes of the sets we own (live and temporary).
pub const SET_PREFIXES: [&str; 4] = ["cali4-", "cali6-", "cali4_", "cali6_"];

/// A change of at most this many members is applied incrementally whatever the set's size.
pub const INCREMENTAL_MAX: usize = 64;

/// Whether `name` is one of our sets.
pub fn is_ours(name: &str) -> bool {
    SET_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn parse_err(line: usize, reason: impl Into<String>) -> DataplaneError {
    DataplaneError::Parse {
        what: "ipset save output",
        line,
        reason: reason.into(),
    }
}

fn parse_member(text: &str, line: usize) -> Result<IpNet, DataplaneError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| parse_err(line, format!("bad member {text}")))
}

/// Our sets in `ipset save` output (other sets are skipped unread).
///
/// # Errors
/// [`DataplaneError::Parse`] for a set of ours of an unknown type or family, or a bad member.
pub fn parse_save(text: &str) -> Result<BTreeMap<String, IpSet>, DataplaneError> {
    let mut sets: BTreeMap<String, IpSet> = BTreeMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let words: Vec<&str> = raw.split_whitespace().collect();
        match words.as_slice() {
            ["create", name, kind, rest @ ..] if is_ours(name) => {
                let kind = match *kind {
                    "hash:ip" => IpSetKind::HashIp,
                    "hash:net" => IpSetKind::HashNet,
                    other => return Err(parse_err(line, format!("set {name} has type {other}"))),
                };
                let family = match rest.windows(2).find(|w| w[0] == "family").map(|w| w[1]) {
                    Some("inet") => IpFamily::V4,
                    Some("inet6") => IpFamily::V6,
                    other => {
                        return Err(parse_err(
                            line,
                            format!("set {name} has family {}", other.unwrap_or("(none)")),
                        ))
                    }
                };
                sets.insert(
                    name.to_string(),
                    IpSet {
                        name: name.to_string(),
                        family,
                        kind,
                        members: BTreeSet::new(),
                    },
                );
            }
            ["add", name, member, ..] if is_ours(name) => {
                let member = parse_member(member, line)?;
                match sets.get_mut(*name) {
                    Some(set) => {
                        set.members.insert(member);
                    }
                    None => return Err(parse_err(line, format!("add to undeclared set {name}"))),
                }
            }
            _ => {}
        }
    }
    Ok(sets)
}

/// The members as the kernel keeps them (host bits of a network cleared).
fn normalized(set: &IpSet) -> BTreeSet<IpNet> {
    set.members.iter().map(IpNet::trunc).collect()
}

/// One `ipset restore` input and what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetPlan {
    pub input: String,
    pub changes: Vec<Change>,
}

/// Creates missing sets and brings changed ones to their members (reference 3.8).
pub fn plan_update(
    desired: &BTreeMap<String, IpSet>,
    installed: &BTreeMap<String, IpSet>,
) -> SetPlan {
    let mut plan = SetPlan::default();
    let out = &mut plan.input;
    for (name, set) in desired {
        let want = normalized(set);
        match installed.get(name) {
            None => {
                let _ = writeln!(out, "{}", create_line(set));
                for m in &want {
                    let _ = writeln!(out, "add {name} {} -exist", render_member(set.kind, m));
                }
                plan.changes.push(Change::CreateIpSet(set.clone()));
            }
            Some(old) if old.kind == set.kind && old.family == set.family => {
                let adds: Vec<&IpNet> = want.difference(&old.members).collect();
                let dels: Vec<&IpNet> = old.members.difference(&want).collect();
                let (added, deleted) = (adds.len(), dels.len());
                let n = added + deleted;
                if n == 0 {
                    continue;
                }
                if n <= INCREMENTAL_MAX || n * 2 <= want.len() {
                    for m in dels {
                        let _ = writeln!(out, "del {name} {} -exist", render_member(set.kind, m));
                    }
                    for m in adds {
                        let _ = writeln!(out, "add {name} {} -exist", render_member(set.kind, m));
                    }
                    plan.changes.push(Change::UpdateIpSet(set.clone()));
                } else {
                    rewrite(out, set, &want);
                    plan.changes.push(Change::UpdateIpSet(set.clone()));
                }
            }
            Some(_) => {
                rewrite(out, set, &want);
                plan.changes.push(Change::UpdateIpSet(set.clone()));
            }
        }
    }
    plan
}

/// Fill the temporary set, swap it in, destroy the old contents.
fn rewrite(out: &mut String, set: &IpSet, want: &BTreeSet<IpNet>) {
    let temp = IpSet {
        name: temp_ipset_name(&set.name),
        members: BTreeSet::new(),
        ..set.clone()
    };
    // A leftover temporary from an interrupted rewrite may have the wrong type: start clean.
    let _ = writeln!(out, "{}", create_line(&temp));
    let _ = writeln!(out, "flush {}", temp.name);
    for m in want {
        let _ = writeln!(out, "add {} {}", temp.name, render_member(set.kind, m));
    }
    let _ = writeln!(out, "swap {} {}", temp.name, set.name);
    let _ = writeln!(out, "destroy {}", temp.name);
}

/// Destroys our sets that are not wanted (run after the tables stopped referencing them).
pub fn plan_destroy(
    desired: &BTreeMap<String, IpSet>,
    installed: &BTreeMap<String, IpSet>,
) -> SetPlan {
    let mut plan = SetPlan::default();
    for name in installed.keys().filter(|n| !desired.contains_key(*n)) {
        let _ = writeln!(plan.input, "destroy {name}");
        plan.changes
            .push(Change::DeleteIpSet { name: name.clone() });
    }
    plan
}

/// Records in `installed` what a committed [`plan_update`] input made of the kernel's sets:
/// every wanted set with its members as the kernel keeps them (only changed sets are copied).
pub fn record_update(installed: &mut BTreeMap<String, IpSet>, desired: &BTreeMap<String, IpSet>) {
    for (name, set) in desired {
        let members = normalized(set);
        let same = installed.get(name).is_some_and(|old| {
            old.kind == set.kind && old.family == set.family && old.members == members
        });
        if !same {
            installed.insert(
                name.clone(),
                IpSet {
                    members,
                    ..set.clone()
                },
            );
        }
    }
}

/// Records in `installed` that a committed [`plan_destroy`] input removed the unwanted sets.
pub fn record_destroy(installed: &mut BTreeMap<String, IpSet>, desired: &BTreeMap<String, IpSet>) {
    installed.retain(|name, _| desired.contains_key(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, members: &[&str]) -> IpSet {
        IpSet {
            name: name.to_string(),
            family: IpFamily::V4,
            kind: IpSetKind::HashIp,
            members: members.iter().map(|m| m.parse().unwrap()).collect(),
        }
    }

    const SAVE: &str = "create other hash:ip family inet hashsize 1024 maxelem 65536\n\
        add other 10.0.0.1\n\
        create cali4-t-A hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n\
        add cali4-t-A 192.168.1.1\n\
        add cali4-t-A 192.168.1.2\n\
        create cali4-all-pools hash:net family inet hashsize 1024 maxelem 65536\n\
        add cali4-all-pools 192.168.0.0/16\n";

    #[test]
    fn save_output_reads_back_only_our_sets() {
        let sets = parse_save(SAVE).unwrap();
        assert_eq!(
            sets.keys().collect::<Vec<_>>(),
            ["cali4-all-pools", "cali4-t-A"]
        );
        assert_eq!(
            sets["cali4-t-A"],
            set("cali4-t-A", &["192.168.1.1/32", "192.168.1.2/32"])
        );
        assert_eq!(sets["cali4-all-pools"].kind, IpSetKind::HashNet);
    }

    #[test]
    fn small_changes_are_incremental_and_big_ones_swap() {
        let installed = parse_save(SAVE).unwrap();
        let mut desired = BTreeMap::new();
        desired.insert(
            "cali4-t-A".to_string(),
            set("cali4-t-A", &["192.168.1.1/32", "192.168.1.3/32"]),
        );
        let plan = plan_update(&desired, &installed);
        assert_eq!(
            plan.input,
            "del cali4-t-A 192.168.1.2 -exist\nadd cali4-t-A 192.168.1.3 -exist\n"
        );

        let many: Vec<String> = (0..200)
            .map(|i| format!("10.1.{}.{}/32", i / 250, i % 250))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        desired.insert("cali4-t-A".to_string(), set("cali4-t-A", &many));
        let plan = plan_update(&desired, &installed);
        let lines: Vec<&str> = plan.input.lines().collect();
        assert_eq!(lines[0], "create cali4_t-A hash:ip family inet -exist");
        assert_eq!(lines[1], "flush cali4_t-A");
        assert_eq!(lines.len(), 2 + 200 + 2);
        assert_eq!(
            &lines[202..],
            &["swap cali4_t-A cali4-t-A", "destroy cali4_t-A"]
        );

        let destroy = plan_destroy(&desired, &installed);
        assert_eq!(destroy.input, "destroy cali4-all-pools\n");
    }

    #[test]
    fn recorded_plans_leave_nothing_to_do() {
        let mut installed = parse_save(SAVE).unwrap();
        let mut desired = BTreeMap::new();
        // A host address written as a network: the kernel (and the record) keep 10.0.0.0/24.
        let mut pools = set("cali4-all-pools", &["10.0.0.7/24"]);
        pools.kind = IpSetKind::HashNet;
        desired.insert(pools.name.clone(), pools);
        desired.insert("cali4-new".to_string(), set("cali4-new", &["10.9.9.9/32"]));
        assert_ne!(plan_update(&desired, &installed), SetPlan::default());
        record_update(&mut installed, &desired);
        assert_eq!(
            installed["cali4-all-pools"].members,
            BTreeSet::from(["10.0.0.0/24".parse().unwrap()])
        );
        assert_eq!(plan_update(&desired, &installed), SetPlan::default());
        assert_eq!(
            plan_destroy(&desired, &installed).input,
            "destroy cali4-t-A\n"
        );
        record_destroy(&mut installed, &desired);
        assert_eq!(
            installed.keys().collect::<Vec<_>>(),
            ["cali4-all-pools", "cali4-new"]
        );
        assert_eq!(plan_destroy(&desired, &installed), SetPlan::default());
    }

    #[test]
    fn unchanged_sets_need_no_input() {
        let installed = parse_save(SAVE).unwrap();
        assert_eq!(plan_update(&installed, &installed), SetPlan::default());
        assert_eq!(plan_destroy(&installed, &installed), SetPlan::default());
    }
}
