//! `ipset restore` text → commands, applied all-or-nothing to the host's sets.
//!
//! Accepted: `create <name> hash:ip|hash:net family inet|inet6 [hashsize N] [maxelem N]
//! [-exist]`, `flush`, `add`, `del` (with `-exist`), `swap` and `destroy`. Anything else is a
//! [`DataplaneError::Parse`] naming the line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::desired::{IpSet, IpSetKind};
use calico_core::iptables::IpFamily;
use ipnet::IpNet;

use crate::DataplaneError;

const WHAT: &str = "ipset restore input";

/// One restore command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSetCommand {
    Create {
        name: String,
        kind: IpSetKind,
        family: IpFamily,
        exist: bool,
    },
    Flush {
        name: String,
    },
    Add {
        name: String,
        member: IpNet,
        exist: bool,
    },
    Del {
        name: String,
        member: IpNet,
        exist: bool,
    },
    Swap {
        a: String,
        b: String,
    },
    Destroy {
        name: String,
    },
}

fn err(line: usize, reason: impl Into<String>) -> DataplaneError {
    DataplaneError::Parse {
        what: WHAT,
        line,
        reason: reason.into(),
    }
}

/// Parses restore text into (line, command) pairs.
///
/// # Errors
/// [`DataplaneError::Parse`] naming the first bad line.
pub fn parse_ipset_restore(text: &str) -> Result<Vec<(usize, IpSetCommand)>, DataplaneError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "COMMIT" {
            continue;
        }
        let mut words: Vec<&str> = trimmed.split_whitespace().collect();
        let before = words.len();
        words.retain(|w| *w != "-exist" && *w != "--exist" && *w != "-!");
        let exist = words.len() != before;
        let name = |i: usize| -> Result<String, DataplaneError> {
            let n = words.get(i).ok_or_else(|| err(line, "missing set name"))?;
            if valid_set_name(n) {
                Ok(n.to_string())
            } else {
                Err(err(line, format!("bad set name {n}")))
            }
        };
        let arity = |n: usize| {
            if words.len() == n {
                Ok(())
            } else {
                Err(err(line, format!("{} takes {} arguments", words[0], n - 1)))
            }
        };
        let command = match words.first().copied() {
            Some("create" | "-N" | "n") => parse_create(&words, line, name(1)?, exist)?,
            Some("flush" | "-F") => {
                arity(2)?;
                IpSetCommand::Flush { name: name(1)? }
            }
            Some("destroy" | "-X" | "x") => {
                arity(2)?;
                IpSetCommand::Destroy { name: name(1)? }
            }
            Some("swap" | "-W") => {
                arity(3)?;
                IpSetCommand::Swap {
                    a: name(1)?,
                    b: name(2)?,
                }
            }
            Some(verb @ ("add" | "-A" | "a" | "del" | "-D")) => {
                arity(3)?;
                let member = parse_member(words[2], line)?;
                let name = name(1)?;
                if matches!(verb, "add" | "-A" | "a") {
                    IpSetCommand::Add {
                        name,
                        member,
                        exist,
                    }
                } else {
                    IpSetCommand::Del {
                        name,
                        member,
                        exist,
                    }
                }
            }
            Some(other) => return Err(err(line, format!("unknown ipset command {other}"))),
            None => continue,
        };
        out.push((line, command));
    }
    Ok(out)
}

/// What the kernel accepts as a set name.
fn valid_set_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 31
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
}

/// The set that `create <name> <kind> family <family> -exist`, `flush <name>` and one
/// `add <name> <member>` line per member leave behind when `name` does not exist yet: what
/// [`restore`] makes of those lines, without writing and parsing them (a simulated host's
/// first apply creates tag sets holding the whole cluster's addresses).
///
/// # Errors
/// What the restore would refuse: a bad set name, a member of the other family, a member
/// given twice (two nets equal once truncated).
pub fn created_whole(set: &IpSet) -> Result<IpSet, DataplaneError> {
    let refuse = |reason: String| DataplaneError::Kernel {
        operation: format!("ipset restore creating set {}", set.name),
        reason,
    };
    if !valid_set_name(&set.name) {
        return Err(refuse(format!("bad set name {}", set.name)));
    }
    // As the text renders each member (`render_member`) and the parser reads it back.
    let truncated: Vec<IpNet> = set.members.iter().map(IpNet::trunc).collect();
    if let Some(member) = truncated.iter().find(|m| family_of(m) != set.family) {
        return Err(refuse(format!(
            "{member} is of the wrong family for set {}",
            set.name
        )));
    }
    // Members come sorted and truncating rarely reorders them: then the set is built from
    // the sorted run at once, else one insertion each (which also finds a member twice).
    let members = if truncated.windows(2).all(|w| w[0] < w[1]) {
        truncated.into_iter().collect()
    } else {
        let mut members = BTreeSet::new();
        for member in truncated {
            if !members.insert(member) {
                return Err(refuse(format!("{member} is already in set {}", set.name)));
            }
        }
        members
    };
    Ok(IpSet {
        name: set.name.clone(),
        family: set.family,
        kind: set.kind,
        members,
    })
}

fn parse_create(
    words: &[&str],
    line: usize,
    name: String,
    exist: bool,
) -> Result<IpSetCommand, DataplaneError> {
    let kind = match words.get(2).copied() {
        Some("hash:ip") => IpSetKind::HashIp,
        Some("hash:net") => IpSetKind::HashNet,
        Some(other) => return Err(err(line, format!("unsupported set type {other}"))),
        None => return Err(err(line, format!("create {name} without a type"))),
    };
    let mut family = IpFamily::V4;
    let mut rest = words.get(3..).unwrap_or_default().iter();
    while let Some(option) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| err(line, format!("{option} needs a value")))?;
        match *option {
            "family" => {
                family = match *value {
                    "inet" => IpFamily::V4,
                    "inet6" => IpFamily::V6,
                    other => return Err(err(line, format!("unknown family {other}"))),
                }
            }
            "hashsize" | "maxelem" => {
                value
                    .parse::<u32>()
                    .map_err(|_| err(line, format!("bad {option} {value}")))?;
            }
            other => return Err(err(line, format!("unknown create option {other}"))),
        }
    }
    Ok(IpSetCommand::Create {
        name,
        kind,
        family,
        exist,
    })
}

fn parse_member(text: &str, line: usize) -> Result<IpNet, DataplaneError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| err(line, format!("bad set member {text}")))
}

fn family_of(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The working copy of set `name`, copied from `sets` on first use.
fn slot_of<'w>(
    work: &'w mut BTreeMap<String, Option<IpSet>>,
    sets: &BTreeMap<String, IpSet>,
    name: &str,
) -> &'w mut Option<IpSet> {
    work.entry(name.to_string())
        .or_insert_with(|| sets.get(name).cloned())
}

/// Applies commands to `sets` all-or-nothing.
///
/// Copy-on-write: only the sets the commands name are copied and worked on, so a restore
/// costs what it touches, not what the kernel holds, and a refused one leaves `sets` as it was.
///
/// # Errors
/// [`DataplaneError::Kernel`] naming the line and set when a command is refused (set missing,
/// member of the wrong family, duplicate without `-exist`); `sets` is then unchanged.
pub fn restore(
    sets: &mut BTreeMap<String, IpSet>,
    commands: &[(usize, IpSetCommand)],
) -> Result<(), DataplaneError> {
    // Name → the set after the commands so far (`None`: it does not exist).
    let mut work: BTreeMap<String, Option<IpSet>> = BTreeMap::new();
    for (line, command) in commands {
        let refuse = |reason: String| DataplaneError::Kernel {
            operation: format!("ipset restore line {line}"),
            reason,
        };
        match command {
            IpSetCommand::Create {
                name,
                kind,
                family,
                exist,
            } => {
                let set = slot_of(&mut work, sets, name);
                match set {
                    Some(old) if *exist && old.kind == *kind && old.family == *family => {}
                    Some(_) => return Err(refuse(format!("set {name} already exists"))),
                    None => {
                        *set = Some(IpSet {
                            name: name.clone(),
                            family: *family,
                            kind: *kind,
                            members: BTreeSet::new(),
                        });
                    }
                }
            }
            IpSetCommand::Flush { name } => match slot_of(&mut work, sets, name) {
                Some(set) => set.members.clear(),
                None => return Err(refuse(format!("set {name} does not exist"))),
            },
            IpSetCommand::Add {
                name,
                member,
                exist,
            } => {
                let set = slot_of(&mut work, sets, name)
                    .as_mut()
                    .ok_or_else(|| refuse(format!("set {name} does not exist")))?;
                if family_of(member) != set.family {
                    return Err(refuse(format!(
                        "{member} is of the wrong family for set {name}"
                    )));
                }
                if !set.members.insert(*member) && !exist {
                    return Err(refuse(format!("{member} is already in set {name}")));
                }
            }
            IpSetCommand::Del {
                name,
                member,
                exist,
            } => {
                let set = slot_of(&mut work, sets, name)
                    .as_mut()
                    .ok_or_else(|| refuse(format!("set {name} does not exist")))?;
                if !set.members.remove(member) && !exist {
                    return Err(refuse(format!("{member} is not in set {name}")));
                }
            }
            IpSetCommand::Swap { a, b } => {
                let (Some(mut sa), Some(mut sb)) = (
                    slot_of(&mut work, sets, a).take(),
                    slot_of(&mut work, sets, b).take(),
                ) else {
                    return Err(refuse(format!("swap needs both sets {a} and {b}")));
                };
                if sa.kind != sb.kind || sa.family != sb.family {
                    return Err(refuse(format!("sets {a} and {b} have different types")));
                }
                std::mem::swap(&mut sa.members, &mut sb.members);
                *slot_of(&mut work, sets, a) = Some(sa);
                *slot_of(&mut work, sets, b) = Some(sb);
            }
            IpSetCommand::Destroy { name } => {
                if slot_of(&mut work, sets, name).take().is_none() {
                    return Err(refuse(format!("set {name} does not exist")));
                }
            }
        }
    }
    for (name, set) in work {
        match set {
            Some(set) => {
                sets.insert(name, set);
            }
            None => {
                sets.remove(&name);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sets: &mut BTreeMap<String, IpSet>, text: &str) -> Result<(), DataplaneError> {
        restore(sets, &parse_ipset_restore(text)?)
    }

    #[test]
    fn create_add_swap_destroy() {
        let mut sets = BTreeMap::new();
        run(
            &mut sets,
            "create cali-a hash:ip family inet hashsize 1024 maxelem 65536 -exist\n\
             add cali-a 10.0.0.1 -exist\n\
             create cali-tmp hash:ip family inet\n\
             add cali-tmp 10.0.0.2\nadd cali-tmp 10.0.0.3/32\n\
             swap cali-a cali-tmp\ndestroy cali-tmp\n",
        )
        .unwrap();
        let members: Vec<String> = sets["cali-a"]
            .members
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(members, ["10.0.0.2/32", "10.0.0.3/32"]);
        assert_eq!(sets.len(), 1);
    }

    fn set(name: &str, kind: IpSetKind, family: IpFamily, members: &[&str]) -> IpSet {
        IpSet {
            name: name.to_string(),
            family,
            kind,
            members: members.iter().map(|m| m.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_set_created_whole_is_what_its_restore_lines_make_and_refused_alike() {
        let good = [
            set(
                "s-ip",
                IpSetKind::HashIp,
                IpFamily::V4,
                &["10.0.0.1/32", "10.0.0.2/32"],
            ),
            set(
                "s-net",
                IpSetKind::HashNet,
                IpFamily::V6,
                &["fd00::1/64", "fd01::/64"],
            ),
        ];
        for wanted in good {
            let text = calico_core::render::ipset::render_ipsets(&BTreeMap::from([(
                wanted.name.clone(),
                wanted.clone(),
            )]));
            let mut sets = BTreeMap::new();
            run(&mut sets, &text).unwrap();
            assert_eq!(created_whole(&wanted).unwrap(), sets[&wanted.name]);
        }
        let refused = [
            (
                set("s", IpSetKind::HashIp, IpFamily::V4, &["fd00::1/128"]),
                "wrong family",
            ),
            (
                set(
                    "s",
                    IpSetKind::HashNet,
                    IpFamily::V4,
                    &["10.0.0.1/24", "10.0.0.2/24"],
                ),
                "already in set s",
            ),
            (
                set(
                    "a-name-longer-than-31-characters",
                    IpSetKind::HashIp,
                    IpFamily::V4,
                    &[],
                ),
                "bad set name",
            ),
        ];
        for (bad, reason) in refused {
            let e = created_whole(&bad).unwrap_err().to_string();
            assert!(e.contains(reason), "{e}");
        }
    }

    #[test]
    fn refused_restore_changes_nothing() {
        let mut sets = BTreeMap::new();
        run(
            &mut sets,
            "create s hash:net family inet6\nadd s fd00::/64\n",
        )
        .unwrap();
        let before = sets.clone();
        let e = run(&mut sets, "flush s\nadd s 10.0.0.1\n").unwrap_err();
        assert!(e.to_string().contains("wrong family"), "{e}");
        assert_eq!(sets, before);
        let e = run(&mut sets, "add s fd00::/64\n").unwrap_err();
        assert!(e.to_string().contains("already in set s"), "{e}");
    }

    #[test]
    fn unknown_things_name_the_line() {
        for (text, line) in [
            ("create s hash:ip family inet\ncreate t list:set\n", 2),
            ("create s hash:ip family inet timeout 5\n", 1),
            ("\n\nfrobnicate s\n", 3),
            ("add s not-an-ip\n", 1),
            ("create s hash:ip family ipx\n", 1),
        ] {
            match parse_ipset_restore(text) {
                Err(DataplaneError::Parse { line: got, .. }) => assert_eq!(got, line, "{text}"),
                other => panic!("{text}: expected a parse error, got {other:?}"),
            }
        }
    }
}
