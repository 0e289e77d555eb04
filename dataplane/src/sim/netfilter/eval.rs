//! Chain evaluation: a packet enters a built-in chain and leaves with a verdict, the rule that
//! decided it and the chains it went through.
//!
//! Semantics follow the kernel: `-j` pushes a return point, `-g` replaces the current chain
//! (so its RETURN goes back to our caller), RETURN or the end of a user chain pops, and a
//! RETURN from (or the end of) the built-in chain applies its policy. `MARK` is not terminal.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use calico_core::desired::{IpSet, TableId};
use calico_core::iptables::{CtState, Match, Rule, SetDirection, Target};
use calico_core::model::MacAddr;

use super::{table_label, NfTable};
use crate::sim::packet::{Packet, L4};
use calico_core::parse::iptables::Policy;
use calico_core::render::iptables::render_rule_after;

/// Bounds the rules one evaluation may visit, so a jump loop ends as a drop, not a hang.
const MAX_STEPS: usize = 100_000;

/// What a packet looks like to the rules of one hook.
#[derive(Debug, Clone, Copy)]
pub struct PacketView<'a> {
    pub packet: &'a Packet,
    pub in_iface: Option<&'a str>,
    pub out_iface: Option<&'a str>,
    pub src_mac: Option<MacAddr>,
    pub ctstate: CtState,
}

/// A rule that took part in a decision, located and rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub table: TableId,
    pub chain: String,
    /// 1-based, like `iptables -L --line-numbers`.
    pub position: usize,
    /// The rule as `render_rule` prints it.
    pub line: String,
    pub comment: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} of {}: {}", self.position, self.chain, self.line)
    }
}

/// The final verdict of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// `MASQUERADE` in nat POSTROUTING: accept and rewrite the source.
    Masquerade,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "ACCEPT",
            Verdict::Drop => "DROP",
            Verdict::Masquerade => "MASQUERADE",
        })
    }
}

/// What decided the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule with a terminal target (ACCEPT, DROP, MASQUERADE).
    Rule(RuleRef),
    /// The built-in chain's policy, reached by falling off the end or by a RETURN (the
    /// last rule that returned, if any).
    Policy {
        chain: String,
        returned_by: Option<RuleRef>,
    },
    /// The evaluation was cut off (a chain missing, or a jump loop).
    Broken { reason: String },
}

/// The result of running one built-in chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub table: TableId,
    pub hook: String,
    pub verdict: Verdict,
    pub decided_by: DecidedBy,
    /// Chains entered, in order (the built-in chain first).
    pub path: Vec<String>,
    /// The packet mark after the chain ran.
    pub mark: u32,
    /// The selector policy rule that allowed the packet on its way (its comment, `policy
    /// db-from-web rule 1`), when one did: the explanation of an accept.
    pub policy_rule: Option<String>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            table_label(self.table),
            self.hook,
            self.verdict
        )?;
        match &self.decided_by {
            DecidedBy::Rule(rule) => write!(f, " by {rule}")?,
            DecidedBy::Policy { chain, returned_by } => {
                write!(f, " by policy of {chain}")?;
                if let Some(rule) = returned_by {
                    write!(f, " after RETURN at {rule}")?;
                }
            }
            DecidedBy::Broken { reason } => write!(f, " ({reason})")?,
        }
        if let (Verdict::Accept, Some(rule)) = (self.verdict, &self.policy_rule) {
            write!(f, ", allowed by {rule}")?;
        }
        if self.path.len() > 1 {
            write!(f, " [via {}]", self.path.join(" > "))?;
        }
        Ok(())
    }
}

/// Runs built-in chain `hook` of `table` on the packet with the given starting mark.
pub fn evaluate(
    id: TableId,
    table: &NfTable,
    hook: &str,
    view: &PacketView<'_>,
    ipsets: &BTreeMap<String, IpSet>,
    mark: u32,
) -> Decision {
    let mut path = Vec::new();
    let run = run(table, hook, view, ipsets, mark, Some(&mut path));
    let decided_by = match run.ending {
        Ending::Rule(at) => DecidedBy::Rule(at.rule_ref(id)),
        Ending::Policy(returned_by) => DecidedBy::Policy {
            chain: hook.to_string(),
            returned_by: returned_by.map(|at| at.rule_ref(id)),
        },
        Ending::Broken(reason) => DecidedBy::Broken { reason },
    };
    Decision {
        table: id,
        hook: hook.to_string(),
        verdict: run.verdict,
        decided_by,
        path: path.into_iter().map(str::to_string).collect(),
        mark: run.mark,
        policy_rule: run.policy_rule.map(str::to_string),
    }
}

/// [`evaluate`]'s verdict and mark alone, for walks that only count verdicts: nothing is
/// rendered or copied out of the table.
pub fn verdict(
    table: &NfTable,
    hook: &str,
    view: &PacketView<'_>,
    ipsets: &BTreeMap<String, IpSet>,
    mark: u32,
) -> (Verdict, u32) {
    let run = run(table, hook, view, ipsets, mark, None);
    (run.verdict, run.mark)
}

/// A rule located in the table being run: its chain, the chain's rules and its 1-based
/// position.
#[derive(Clone, Copy)]
struct At<'t> {
    chain: &'t str,
    rules: &'t [Rule],
    position: usize,
}

impl At<'_> {
    fn rule_ref(&self, id: TableId) -> RuleRef {
        RuleRef {
            table: id,
            chain: self.chain.to_string(),
            position: self.position,
            line: rendered_line(self.chain, self.rules, self.position),
            comment: self.rules[self.position - 1].comment.clone(),
        }
    }
}

/// How a run ended, borrowing from the table (see [`DecidedBy`]).
enum Ending<'t> {
    Rule(At<'t>),
    Policy(Option<At<'t>>),
    Broken(String),
}

struct Run<'t> {
    verdict: Verdict,
    ending: Ending<'t>,
    mark: u32,
    policy_rule: Option<&'t str>,
}

/// The evaluation itself, copying nothing: frames and the path borrow the table's chain
/// names, and each frame holds its chain's rules (looked up once, on the jump). `path`, when
/// given, receives the chains entered.
fn run<'t>(
    table: &'t NfTable,
    hook: &'t str,
    view: &PacketView<'_>,
    ipsets: &BTreeMap<String, IpSet>,
    mut mark: u32,
    mut path: Option<&mut Vec<&'t str>>,
) -> Run<'t> {
    let broken = |reason, mark| Run {
        verdict: Verdict::Drop,
        ending: Ending::Broken(reason),
        mark,
        policy_rule: None,
    };
    let mut enter = |name: &'t str| {
        if let Some(path) = path.as_deref_mut() {
            path.push(name);
        }
        table.chains.get_key_value(name)
    };
    let Some((hook_name, builtin)) = enter(hook) else {
        return broken(format!("chain {hook} does not exist"), mark);
    };
    let policy_verdict = match builtin.policy.unwrap_or(Policy::Accept) {
        Policy::Accept => Verdict::Accept,
        Policy::Drop => Verdict::Drop,
    };
    let mut frames: Vec<(&'t str, &'t [Rule], usize)> = Vec::with_capacity(8);
    frames.push((hook_name, &builtin.rules, 0));
    let mut returned_by = None;
    let mut policy_rule: Option<&'t str> = None;
    let by_policy = |returned_by, mark, policy_rule| Run {
        verdict: policy_verdict,
        ending: Ending::Policy(returned_by),
        mark,
        policy_rule,
    };
    for _ in 0..MAX_STEPS {
        let Some((chain, rules, idx)) = frames.last_mut() else {
            break;
        };
        let (chain, rules) = (*chain, *rules);
        let Some(rule) = rules.get(*idx) else {
            if frames.len() == 1 {
                return by_policy(returned_by, mark, policy_rule);
            }
            frames.pop();
            continue;
        };
        *idx += 1;
        let at = At {
            chain,
            rules,
            position: *idx,
        };
        if !rule_matches(rule, view, ipsets, mark) {
            continue;
        }
        let decided = |verdict, policy_rule| Run {
            verdict,
            ending: Ending::Rule(at),
            mark,
            policy_rule,
        };
        match &rule.target {
            Target::Accept => return decided(Verdict::Accept, policy_rule),
            Target::Drop => return decided(Verdict::Drop, None),
            Target::Masquerade => return decided(Verdict::Masquerade, None),
            Target::Return => {
                // Allow rules of selector policies RETURN with the accept mark, commented
                // `policy <name> rule <n>` by the compiler: remember the one that decided.
                let named = |c: &&str| c.starts_with("policy ") && c.contains(" rule ");
                if let Some(c) = rule.comment.as_deref().filter(named) {
                    policy_rule = Some(c);
                }
                returned_by = Some(at);
                if frames.len() == 1 {
                    return by_policy(returned_by, mark, policy_rule);
                }
                frames.pop();
            }
            Target::Jump(next) => {
                let Some((name, chain)) = enter(next) else {
                    return broken(format!("chain {next} does not exist"), mark);
                };
                frames.push((name, &chain.rules, 0));
            }
            Target::Goto(next) => {
                let Some((name, chain)) = enter(next) else {
                    return broken(format!("chain {next} does not exist"), mark);
                };
                if let Some(top) = frames.last_mut() {
                    *top = (name, &chain.rules, 0);
                }
            }
            Target::SetMark { value, mask } => mark = (mark & !mask) ^ value,
        }
    }
    broken(
        format!("gave up after {MAX_STEPS} rules (a jump loop?)"),
        mark,
    )
}

/// The rule at 1-based `position` exactly as `iptables-save` shows it (its hash covers the
/// rules before it). Rendered in place, rule by rule, keeping only the running hash: walks
/// render one of these per deciding or returning rule, and copying the chain up to it (as
/// `render_chain` would need) cost more than the rendering.
fn rendered_line(chain: &str, rules: &[Rule], position: usize) -> String {
    let mut prev = String::new();
    let mut line = String::new();
    for rule in rules.iter().take(position) {
        (line, prev) = render_rule_after(chain, rule, &prev);
    }
    line
}

fn iface_matches(pattern: &str, iface: Option<&str>) -> bool {
    let Some(iface) = iface else {
        return false;
    };
    match pattern.strip_suffix('+') {
        Some(prefix) => iface.starts_with(prefix),
        None => iface == pattern,
    }
}

fn set_contains(ipsets: &BTreeMap<String, IpSet>, name: &str, ip: IpAddr) -> bool {
    ipsets
        .get(name)
        .is_some_and(|set| set.members.iter().any(|net| net.contains(&ip)))
}

/// Whether every match of `rule` holds for the packet.
pub fn rule_matches(
    rule: &Rule,
    view: &PacketView<'_>,
    ipsets: &BTreeMap<String, IpSet>,
    mark: u32,
) -> bool {
    rule.matches
        .iter()
        .all(|m| match_holds(m, view, ipsets, mark))
}

fn match_holds(
    m: &Match,
    view: &PacketView<'_>,
    ipsets: &BTreeMap<String, IpSet>,
    mark: u32,
) -> bool {
    let p = view.packet;
    let icmp = |number: u8, want: u8, code: Option<u8>| {
        p.protocol.number() == number
            && matches!(p.l4, L4::Icmp { icmp_type, code: c, .. } if icmp_type == want && code.is_none_or(|code| code == c))
    };
    match m {
        Match::Protocol { protocol, negate } => {
            (p.protocol.number() == protocol.number()) != *negate
        }
        Match::Source { net, negate } => net.contains(&p.src) != *negate,
        Match::Destination { net, negate } => net.contains(&p.dst) != *negate,
        Match::InInterface { name, negate } => iface_matches(name, view.in_iface) != *negate,
        Match::OutInterface { name, negate } => iface_matches(name, view.out_iface) != *negate,
        Match::ConntrackState { states } => states.contains(&view.ctstate),
        Match::Mark { value, mask } => mark & mask == *value,
        Match::MacSource { mac, negate } => (view.src_mac == Some(*mac)) != *negate,
        Match::Set {
            name,
            direction,
            negate,
        } => {
            let ip = match direction {
                SetDirection::Src => p.src,
                SetDirection::Dst => p.dst,
            };
            set_contains(ipsets, name, ip) != *negate
        }
        Match::SourcePorts { ports } => {
            matches!(p.l4, L4::Ports { src, .. } if ports.iter().any(|r| r.contains(src)))
        }
        Match::DestinationPorts { ports } => {
            matches!(p.l4, L4::Ports { dst, .. } if ports.iter().any(|r| r.contains(dst)))
        }
        Match::IcmpType { icmp_type, code } => icmp(1, *icmp_type, *code),
        Match::Icmpv6Type { icmp_type, code } => icmp(58, *icmp_type, *code),
        // The negations need the packet to carry what they look at (iptables' multiport and
        // icmp modules match nothing else), then invert the test.
        Match::NotSourcePorts { ports } => {
            matches!(p.l4, L4::Ports { src, .. } if !ports.iter().any(|r| r.contains(src)))
        }
        Match::NotDestinationPorts { ports } => {
            matches!(p.l4, L4::Ports { dst, .. } if !ports.iter().any(|r| r.contains(dst)))
        }
        Match::NotIcmpType { icmp_type, code } => {
            p.protocol.number() == 1 && !icmp(1, *icmp_type, *code)
        }
        Match::NotIcmpv6Type { icmp_type, code } => {
            p.protocol.number() == 58 && !icmp(58, *icmp_type, *code)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use calico_core::desired::IpSetKind;
    use calico_core::iptables::{IpFamily, Table};

    use super::*;
    use crate::sim::netfilter::Netfilter;
    use calico_core::parse::iptables::parse_restore;

    const ID: TableId = TableId {
        family: IpFamily::V4,
        table: Table::Filter,
    };

    /// A filter table holding exactly the given text's chains.
    fn table(text: &str) -> NfTable {
        let mut nf = Netfilter::default();
        let blocks = parse_restore(text).unwrap();
        nf.install(ID, &blocks[0], &BTreeSet::new());
        nf.tables[&ID].clone()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(
        t: &NfTable,
        packet: &Packet,
        in_iface: &str,
        sets: &BTreeMap<String, IpSet>,
    ) -> Decision {
        let view = PacketView {
            packet,
            in_iface: Some(in_iface),
            out_iface: Some("eth0"),
            src_mac: Some("ee:ee:ee:ee:ee:01".parse().unwrap()),
            ctstate: CtState::New,
        };
        evaluate(ID, t, "FORWARD", &view, sets, 0)
    }

    fn tcp(dport: u16) -> Packet {
        Packet::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 1234, dport)
    }

    fn decided_at(d: &Decision) -> (String, usize) {
        match &d.decided_by {
            DecidedBy::Rule(r) => (r.chain.clone(), r.position),
            other => panic!("expected a rule decision, got {other:?}"),
        }
    }

    #[test]
    fn goto_returns_to_the_caller_of_the_caller() {
        let head = "*filter\n:FORWARD ACCEPT [0:0]\n:a - [0:0]\n:b - [0:0]\n-A FORWARD -j a\n\
                    -A FORWARD -m comment --comment \"cali:1 after a\" -j DROP\n-A b -j RETURN\n";
        let goto = table(&format!("{head}-A a -g b\n-A a -j ACCEPT\nCOMMIT\n"));
        let d = run(&goto, &tcp(80), "x", &BTreeMap::new());
        assert_eq!(d.verdict, Verdict::Drop);
        assert_eq!(decided_at(&d), ("FORWARD".to_string(), 2));
        assert_eq!(d.path, ["FORWARD", "a", "b"]);
        let DecidedBy::Rule(rule) = &d.decided_by else {
            panic!("not a rule");
        };
        assert_eq!(rule.comment.as_deref(), Some("after a"));
        assert!(
            rule.line
                .starts_with("-A FORWARD -m comment --comment \"cali:"),
            "{}",
            rule.line
        );
        assert!(rule.line.ends_with(" after a\" -j DROP"), "{}", rule.line);

        let jump = table(&format!("{head}-A a -j b\n-A a -j ACCEPT\nCOMMIT\n"));
        let d = run(&jump, &tcp(80), "x", &BTreeMap::new());
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(decided_at(&d), ("a".to_string(), 2));
    }

    #[test]
    fn return_from_builtin_applies_its_policy() {
        let t = table("*filter\n:FORWARD DROP [0:0]\n:a - [0:0]\n-A FORWARD -j a\n-A FORWARD -j ACCEPT\n-A a -j RETURN\nCOMMIT\n");
        // The hook keeps a foreign policy: install never changes built-in policies.
        assert_eq!(t.chains["FORWARD"].policy, Some(Policy::Accept));
        let mut t = t;
        if let Some(c) = t.chains.get_mut("FORWARD") {
            c.policy = Some(Policy::Drop);
            c.rules.insert(0, Rule::new(vec![], Target::Return));
        }
        let d = run(&t, &tcp(80), "x", &BTreeMap::new());
        assert_eq!(d.verdict, Verdict::Drop);
        assert!(
            matches!(&d.decided_by, DecidedBy::Policy { chain, returned_by: Some(r) } if chain == "FORWARD" && r.position == 1)
        );
        assert!(
            d.to_string()
                .contains("DROP by policy of FORWARD after RETURN"),
            "{d}"
        );
    }

    #[test]
    fn marks_are_set_and_matched() {
        let t = table(
            "*filter\n:FORWARD ACCEPT [0:0]\n:p - [0:0]\n\
             -A FORWARD -j MARK --set-xmark 0xff/0xffffffff\n-A FORWARD -j p\n\
             -A FORWARD -m mark --mark 0x1000000/0x1000000 -j ACCEPT\n-A FORWARD -j DROP\n\
             -A p -j MARK --set-xmark 0x1000000/0x1000000\nCOMMIT\n",
        );
        let d = run(&t, &tcp(80), "x", &BTreeMap::new());
        assert_eq!(d.verdict, Verdict::Accept);
        assert_eq!(d.mark, 0x100_00ff);
        assert_eq!(decided_at(&d), ("FORWARD".to_string(), 3));
    }

    #[test]
    fn interface_wildcards_and_negation() {
        let t = table(
            "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -i cali+ -j DROP\n\
             -A FORWARD ! -i tap0 -j ACCEPT\n-A FORWARD -j RETURN\nCOMMIT\n",
        );
        assert_eq!(
            run(&t, &tcp(1), "cali1234", &BTreeMap::new()).verdict,
            Verdict::Drop
        );
        let other = run(&t, &tcp(1), "eth0", &BTreeMap::new());
        assert_eq!(decided_at(&other), ("FORWARD".to_string(), 2));
        let tap = run(&t, &tcp(1), "tap0", &BTreeMap::new());
        assert!(matches!(tap.decided_by, DecidedBy::Policy { .. }));
    }

    #[test]
    fn set_matches_look_up_members() {
        let t = table(
            "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m set --match-set s src -j DROP\n\
             -A FORWARD -m set ! --match-set s dst -j ACCEPT\nCOMMIT\n",
        );
        let mut sets = BTreeMap::new();
        let set = IpSet {
            name: "s".into(),
            family: IpFamily::V4,
            kind: IpSetKind::HashIp,
            members: ["10.0.0.9/32".parse().unwrap()].into_iter().collect(),
        };
        sets.insert("s".to_string(), set);
        let from_member = Packet::tcp(ip("10.0.0.9"), ip("10.0.0.2"), 1, 2);
        assert_eq!(decided_at(&run(&t, &from_member, "x", &sets)).1, 1);
        assert_eq!(decided_at(&run(&t, &tcp(80), "x", &sets)).1, 2);
        let to_member = Packet::tcp(ip("10.0.0.1"), ip("10.0.0.9"), 1, 2);
        assert!(matches!(
            run(&t, &to_member, "x", &sets).decided_by,
            DecidedBy::Policy { .. }
        ));
    }

    #[test]
    fn multiport_ranges() {
        let t = table(
            "*filter\n:FORWARD DROP [0:0]\n\
             -A FORWARD -p tcp -m multiport --dports 80,8000:8080 -j ACCEPT\nCOMMIT\n",
        );
        let mut t = t;
        if let Some(c) = t.chains.get_mut("FORWARD") {
            c.policy = Some(Policy::Drop);
        }
        for (port, ok) in [
            (80, true),
            (81, false),
            (7999, false),
            (8000, true),
            (8050, true),
            (8080, true),
            (8081, false),
        ] {
            let d = run(&t, &tcp(port), "x", &BTreeMap::new());
            assert_eq!(d.verdict == Verdict::Accept, ok, "port {port}");
        }
        let udp = Packet::udp(ip("10.0.0.1"), ip("10.0.0.2"), 1, 80);
        assert_eq!(run(&t, &udp, "x", &BTreeMap::new()).verdict, Verdict::Drop);
    }

    #[test]
    fn icmp_type_and_code() {
        let t = table(
            "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p icmp -m icmp --icmp-type 8 -j DROP\n\
             -A FORWARD -p icmp -m icmp --icmp-type 3/1 -j DROP\n\
             -A FORWARD -m icmp6 --icmpv6-type 128 -j DROP\nCOMMIT\n",
        );
        let at = |p: Packet| match run(&t, &p, "x", &BTreeMap::new()).decided_by {
            DecidedBy::Rule(r) => Some(r.position),
            _ => None,
        };
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(at(Packet::ping(a, b, 1)), Some(1));
        assert_eq!(at(Packet::ping(a, b, 1).reply()), None);
        assert_eq!(at(Packet::icmp(a, b, 3, 1)), Some(2));
        assert_eq!(at(Packet::icmp(a, b, 3, 0)), None);
        assert_eq!(at(Packet::ping(ip("fd00::1"), ip("fd00::2"), 1)), Some(3));
        assert_eq!(at(tcp(8)), None);
    }

    #[test]
    fn a_jump_loop_ends_as_a_drop() {
        let t = table(
            "*filter\n:FORWARD ACCEPT [0:0]\n:a - [0:0]\n-A FORWARD -j a\n-A a -g a\nCOMMIT\n",
        );
        let d = run(&t, &tcp(1), "x", &BTreeMap::new());
        assert_eq!(d.verdict, Verdict::Drop);
        assert!(matches!(d.decided_by, DecidedBy::Broken { .. }));
    }
}
