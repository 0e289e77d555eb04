//! `ipset restore` text: for each set, sorted by name, `create ... -exist`, `flush`, then one
//! `add` per member. `hash:ip` host members are written as bare addresses.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

use crate::desired::{IpSet, IpSetKind};
use crate::iptables::IpFamily;

/// `ipset restore` input that makes the kernel's sets equal `sets`.
pub fn render_ipsets(sets: &BTreeMap<String, IpSet>) -> String {
    let mut out = String::new();
    for set in sets.values() {
        let _ = writeln!(out, "{}", create_line(set));
        let _ = writeln!(out, "flush {}", set.name);
        for member in &set.members {
            let _ = writeln!(out, "add {} {}", set.name, render_member(set.kind, member));
        }
    }
    out
}

/// `create <name> hash:ip|hash:net family inet|inet6 -exist`.
pub fn create_line(set: &IpSet) -> String {
    let kind = match set.kind {
        IpSetKind::HashIp => "hash:ip",
        IpSetKind::HashNet => "hash:net",
    };
    let family = match set.family {
        IpFamily::V4 => "inet",
        IpFamily::V6 => "inet6",
    };
    format!("create {} {kind} family {family} -exist", set.name)
}

/// A member as ipset writes it: a bare address for a host entry of a `hash:ip` set.
pub fn render_member(kind: IpSetKind, member: &IpNet) -> String {
    if kind == IpSetKind::HashIp && member.prefix_len() == member.max_prefix_len() {
        member.addr().to_string()
    } else {
        member.to_string()
    }
}
