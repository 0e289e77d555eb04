//! `iptables-restore` text for one table, in the shape `iptables-save` prints for a host that
//! holds only our rules:
//!
//! ```text
//! *filter
//! :FORWARD ACCEPT [0:0]
//! :cali-FORWARD - [0:0]
//! -A FORWARD -m comment --comment "cali:<hash>" -j cali-FORWARD
//! -A cali-FORWARD -i cali+ -m comment --comment "cali:<hash> drop invalid" -m conntrack --ctstate INVALID -j DROP
//! COMMIT
//! ```
//!
//! Every rule carries `cali:<hash>`: the first 16 hex digits of sha256 over the chain name, the
//! previous rule's hash and the rule's text without its comment (Felix 2's scheme), so an
//! operator reading `iptables-save` sees which rules are ours and which changed. Human comments
//! are reduced to `[A-Za-z0-9 _.:/,()-]`, so they can never leave their quotes.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::desired::{TableId, TableState};
use crate::iptables::{Chain, CtState, Match, Rule, SetDirection, Target};

/// Length of the hash in `cali:<hash>` comments.
pub const HASH_LEN: usize = 16;

/// The comment prefix that marks a rule as ours.
pub const COMMENT_PREFIX: &str = "cali:";

/// The full `iptables-save` style text of one table: header, chain declarations (kernel chains
/// we hook with policy ACCEPT, then ours, each sorted), the hook rules, our chains' rules in
/// chain-name order, `COMMIT`.
pub fn render_table(id: TableId, table: &TableState) -> String {
    let mut out = format!("*{}\n", id.table.name());
    for builtin in table.hooks.keys() {
        let _ = writeln!(out, ":{builtin} ACCEPT [0:0]");
    }
    for name in table.chains.keys() {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (builtin, target) in &table.hooks {
        let hook = hook_rule(target);
        out.push_str(&render_rule(builtin, &hook));
        out.push('\n');
    }
    for chain in table.chains.values() {
        for line in render_chain(chain) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The rule a kernel chain holds to enter our chain `target`.
pub fn hook_rule(target: &str) -> Rule {
    Rule::new(vec![], Target::Jump(target.to_string()))
}

/// One `-A` line per rule of `chain`, each hash chained to the previous rule's.
pub fn render_chain(chain: &Chain) -> Vec<String> {
    let mut prev = String::new();
    chain
        .rules
        .iter()
        .map(|rule| {
            let (line, hash) = render_rule_after(&chain.name, rule, &prev);
            prev = hash;
            line
        })
        .collect()
}

/// One `-A <chain> ...` line for `rule` as the first rule of its chain (the hash of a later
/// rule also covers its predecessors; see [`render_chain`]).
pub fn render_rule(chain: &str, rule: &Rule) -> String {
    render_rule_after(chain, rule, "").0
}

/// Renders `rule` following a rule whose hash is `prev_hash`; returns the line and its hash.
pub fn render_rule_after(chain: &str, rule: &Rule, prev_hash: &str) -> (String, String) {
    let mut basic = String::new();
    let mut extra = String::new();
    // Basic matches in iptables-save's order, whatever their order in the Vec.
    for rank in 0..5 {
        for m in &rule.matches {
            if basic_rank(m) == Some(rank) {
                push_match(&mut basic, m);
            }
        }
    }
    for m in rule.matches.iter().filter(|m| basic_rank(m).is_none()) {
        push_match(&mut extra, m);
    }
    let target = render_target(&rule.target);
    let hash = rule_hash(
        chain,
        prev_hash,
        &format!("-A {chain}{basic}{extra} {target}"),
    );
    let mut comment = format!("{COMMENT_PREFIX}{hash}");
    if let Some(human) = rule.comment.as_deref().map(sanitize_comment) {
        if !human.is_empty() {
            comment.push(' ');
            comment.push_str(&human);
        }
    }
    let line = format!("-A {chain}{basic} -m comment --comment \"{comment}\"{extra} {target}");
    (line, hash)
}

fn rule_hash(chain: &str, prev: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(chain.as_bytes());
    h.update([0]);
    h.update(prev.as_bytes());
    h.update([0]);
    h.update(body.as_bytes());
    // Hex by hand: a `format!` per byte was a visible share of rendering 10,000 rules.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(HASH_LEN);
    for b in h.finalize().iter().take(HASH_LEN / 2) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Keeps only `[A-Za-z0-9 _.:/,()-]` of a human comment, collapsing runs of spaces.
pub fn sanitize_comment(s: &str) -> String {
    let kept: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " _.:/,()-".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    kept.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn basic_rank(m: &Match) -> Option<u8> {
    match m {
        Match::Source { .. } => Some(0),
        Match::Destination { .. } => Some(1),
        Match::InInterface { .. } => Some(2),
        Match::OutInterface { .. } => Some(3),
        Match::Protocol { .. } => Some(4),
        _ => None,
    }
}

fn not(negate: bool) -> &'static str {
    if negate {
        " !"
    } else {
        ""
    }
}

fn dir(d: SetDirection) -> &'static str {
    match d {
        SetDirection::Src => "src",
        SetDirection::Dst => "dst",
    }
}

fn ports(list: &[crate::model::PortRange]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn ctstate_name(s: CtState) -> &'static str {
    match s {
        CtState::Invalid => "INVALID",
        CtState::New => "NEW",
        CtState::Related => "RELATED",
        CtState::Established => "ESTABLISHED",
    }
}

fn push_match(out: &mut String, m: &Match) {
    let _ = match m {
        Match::Source { net, negate } => write!(out, "{} -s {net}", not(*negate)),
        Match::Destination { net, negate } => write!(out, "{} -d {net}", not(*negate)),
        Match::InInterface { name, negate } => write!(out, "{} -i {name}", not(*negate)),
        Match::OutInterface { name, negate } => write!(out, "{} -o {name}", not(*negate)),
        Match::Protocol { protocol, negate } => write!(out, "{} -p {protocol}", not(*negate)),
        Match::ConntrackState { states } => {
            // iptables-save's order, not the enum's.
            let order = [
                CtState::Invalid,
                CtState::New,
                CtState::Related,
                CtState::Established,
            ];
            let names: Vec<&str> = order
                .iter()
                .filter(|s| states.contains(s))
                .map(|s| ctstate_name(*s))
                .collect();
            write!(out, " -m conntrack --ctstate {}", names.join(","))
        }
        Match::Mark { value, mask } => write!(out, " -m mark --mark {value:#x}/{mask:#x}"),
        Match::MacSource { mac, negate } => {
            write!(out, " -m mac{} --mac-source {mac}", not(*negate))
        }
        Match::Set {
            name,
            direction,
            negate,
        } => write!(
            out,
            " -m set{} --match-set {name} {}",
            not(*negate),
            dir(*direction)
        ),
        Match::SourcePorts { ports: p } => write!(out, " -m multiport --sports {}", ports(p)),
        Match::DestinationPorts { ports: p } => write!(out, " -m multiport --dports {}", ports(p)),
        Match::IcmpType { icmp_type, code } => match code {
            Some(c) => write!(out, " -m icmp --icmp-type {icmp_type}/{c}"),
            None => write!(out, " -m icmp --icmp-type {icmp_type}"),
        },
        Match::Icmpv6Type { icmp_type, code } => match code {
            Some(c) => write!(out, " -m icmp6 --icmpv6-type {icmp_type}/{c}"),
            None => write!(out, " -m icmp6 --icmpv6-type {icmp_type}"),
        },
        Match::NotSourcePorts { ports: p } => {
            write!(out, " -m multiport ! --sports {}", ports(p))
        }
        Match::NotDestinationPorts { ports: p } => {
            write!(out, " -m multiport ! --dports {}", ports(p))
        }
        Match::NotIcmpType { icmp_type, code } => match code {
            Some(c) => write!(out, " -m icmp ! --icmp-type {icmp_type}/{c}"),
            None => write!(out, " -m icmp ! --icmp-type {icmp_type}"),
        },
        Match::NotIcmpv6Type { icmp_type, code } => match code {
            Some(c) => write!(out, " -m icmp6 ! --icmpv6-type {icmp_type}/{c}"),
            None => write!(out, " -m icmp6 ! --icmpv6-type {icmp_type}"),
        },
    };
}

fn render_target(t: &Target) -> String {
    match t {
        Target::Accept => "-j ACCEPT".into(),
        Target::Drop => "-j DROP".into(),
        Target::Return => "-j RETURN".into(),
        Target::Jump(c) => format!("-j {c}"),
        Target::Goto(c) => format!("-g {c}"),
        Target::SetMark { value, mask } => format!("-j MARK --set-xmark {value:#x}/{mask:#x}"),
        Target::Masquerade => "-j MASQUERADE".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::{Match, Target};
    use crate::model::Protocol;

    #[test]
    fn rule_line_orders_basic_matches_first_and_sanitises_comments() {
        let rule = Rule::new(
            vec![
                Match::Mark {
                    value: 0x100_0000,
                    mask: 0x100_0000,
                },
                Match::Protocol {
                    protocol: Protocol::Tcp,
                    negate: false,
                },
                Match::InInterface {
                    name: "cali+".into(),
                    negate: true,
                },
            ],
            Target::SetMark {
                value: 0,
                mask: 0x100_0000,
            },
        )
        .with_comment("a \"quoted\"\n-j ACCEPT");
        let line = render_rule("cali-x", &rule);
        let (head, tail) = line.split_once(" -m comment --comment \"cali:").unwrap();
        assert_eq!(head, "-A cali-x ! -i cali+ -p tcp");
        assert_eq!(
            &tail[HASH_LEN..],
            " a quoted -j ACCEPT\" -m mark --mark 0x1000000/0x1000000 -j MARK --set-xmark 0x0/0x1000000"
        );
    }

    #[test]
    fn hashes_chain_through_predecessors() {
        let r = Rule::new(vec![], Target::Drop);
        let chain = Chain {
            name: "c".into(),
            rules: vec![r.clone(), r.clone()],
        };
        let lines = render_chain(&chain);
        assert_eq!(lines[0], render_rule("c", &r));
        assert_ne!(lines[0], lines[1]);
    }
}
