//! Typed iptables rules: what the policy compiler produces, what the renderer turns into
//! `iptables-restore` text and what the simulator parses that text back into.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::model::{MacAddr, PortRange, Protocol};

/// Address family of a table (`iptables` vs `ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

/// The netfilter tables we own chains in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// A conntrack state for `-m conntrack --ctstate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    Invalid,
    New,
    Established,
    Related,
}

/// Which packet address an ipset match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetDirection {
    Src,
    Dst,
}

/// One match of a rule. Interface names may end in `+` (iptables' wildcard).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    /// `[!] -p <proto>`
    Protocol { protocol: Protocol, negate: bool },
    /// `[!] -s <net>`
    Source { net: IpNet, negate: bool },
    /// `[!] -d <net>`
    Destination { net: IpNet, negate: bool },
    /// `[!] -i <iface>`
    InInterface { name: String, negate: bool },
    /// `[!] -o <iface>`
    OutInterface { name: String, negate: bool },
    /// `-m conntrack --ctstate A,B`
    ConntrackState { states: BTreeSet<CtState> },
    /// `-m mark --mark <value>/<mask>`
    Mark { value: u32, mask: u32 },
    /// `-m mac [!] --mac-source <mac>`
    MacSource { mac: MacAddr, negate: bool },
    /// `-m set [!] --match-set <name> src|dst`
    Set {
        name: String,
        direction: SetDirection,
        negate: bool,
    },
    /// `-m multiport --source-ports a,b,lo:hi` (at most 15 entries, a range counting 2)
    SourcePorts { ports: Vec<PortRange> },
    /// `-m multiport --destination-ports a,b,lo:hi`
    DestinationPorts { ports: Vec<PortRange> },
    /// `-m icmp --icmp-type T[/C]`
    IcmpType { icmp_type: u8, code: Option<u8> },
    /// `-m icmp6 --icmpv6-type T[/C]`
    Icmpv6Type { icmp_type: u8, code: Option<u8> },
    /// `-m multiport ! --source-ports ...`: none of these. Separate variants from the positive
    /// ones (rather than a `negate` flag on them) keep every positive constructor as it was.
    NotSourcePorts { ports: Vec<PortRange> },
    /// `-m multiport ! --destination-ports ...`
    NotDestinationPorts { ports: Vec<PortRange> },
    /// `-m icmp ! --icmp-type T[/C]`
    NotIcmpType { icmp_type: u8, code: Option<u8> },
    /// `-m icmp6 ! --icmpv6-type T[/C]`
    NotIcmpv6Type { icmp_type: u8, code: Option<u8> },
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Accept,
    Drop,
    Return,
    /// `-j <chain>`: run the chain, continue here if it returns.
    Jump(String),
    /// `-g <chain>`: run the chain; its RETURN returns from *our* caller.
    Goto(String),
    /// `-j MARK --set-xmark <value>/<mask>`; not terminal.
    SetMark {
        value: u32,
        mask: u32,
    },
    /// `-j MASQUERADE` (nat POSTROUTING).
    Masquerade,
}

/// One rule: every match must hold; then the target applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub target: Target,
    /// Human explanation, rendered in `-m comment` after our hash prefix.
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(matches: Vec<Match>, target: Target) -> Self {
        Rule {
            matches,
            target,
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// A chain we own, rewritten whole when any rule changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<Rule>,
}
