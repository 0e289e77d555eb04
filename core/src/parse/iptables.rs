//! `iptables-restore` text → typed chains: the pure inverse of [`crate::render::iptables`],
//! accepting exactly what that renderer emits plus the trivial differences of `iptables-save`
//! output (counters, `#` lines, `-m tcp --dport`, upper-case MACs). Both dataplanes read with
//! it: the simulator its restore input, the Linux dataplane `iptables-save`.
//!
//! Nothing is skipped: an unknown option, module or target, a jump to an undeclared chain or an
//! unquoted comment is a [`ParseError`] naming the line. Comments of the form
//! `cali:<hash> <text>` keep only `<text>` (the hash is a rendering detail the renderer
//! recomputes); `cali:<hash>` alone becomes no comment; any other comment is kept whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ParseError;
use crate::iptables::{Chain, CtState, Match, Rule, SetDirection, Table, Target};
use crate::model::{MacAddr, PortRange, Protocol};

const WHAT: &str = "iptables-restore input";

/// The policy of a built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Accept => "ACCEPT",
            Policy::Drop => "DROP",
        }
    }
}

/// One chain as declared in a restore block: built-in chains carry a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChain {
    pub chain: Chain,
    pub policy: Option<Policy>,
}

/// One `*table` … `COMMIT` block, chains in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreBlock {
    pub table: Table,
    pub chains: Vec<ParsedChain>,
}

/// The kernel's built-in chains of a table (the ones that take a policy).
pub fn builtin_chains(table: Table) -> &'static [&'static str] {
    match table {
        Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
    }
}

/// Whether `chain` is one of the kernel's built-in chains of `table`.
pub fn is_builtin(table: Table, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

/// Parses a whole restore text (one or more table blocks).
///
/// # Errors
/// [`ParseError`] naming the first offending line.
pub fn parse_restore(text: &str) -> Result<Vec<RestoreBlock>, ParseError> {
    parse_restore_noflush(text, &|_| false)
}

/// Parses restore text meant for `iptables-restore --noflush` on a kernel that already holds
/// chains: a jump may also target a chain the text does not declare when `existing` says the
/// kernel has it (iptables-restore resolves such jumps against the kernel). This is how an
/// apply restores only the chains that changed: declaring an unchanged chain would flush it.
///
/// # Errors
/// [`ParseError`] naming the first offending line.
pub fn parse_restore_noflush(
    text: &str,
    existing: &dyn Fn(&str) -> bool,
) -> Result<Vec<RestoreBlock>, ParseError> {
    let mut blocks = Vec::new();
    let mut open: Option<OpenBlock> = None;
    let mut last_line = 0;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        last_line = line;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('*') {
            if open.is_some() {
                return Err(err(line, "new table before COMMIT of the previous one"));
            }
            let table = match name {
                "filter" => Table::Filter,
                "nat" => Table::Nat,
                other => return Err(err(line, format!("unsupported table {other}"))),
            };
            open = Some(OpenBlock::new(table, line));
            continue;
        }
        let Some(block) = open.as_mut() else {
            return Err(err(line, "line outside a *table block"));
        };
        if trimmed == "COMMIT" {
            if let Some(block) = open.take() {
                blocks.push(block.finish(existing)?);
            }
        } else if let Some(decl) = trimmed.strip_prefix(':') {
            block.declare(decl, line)?;
        } else {
            let tokens = tokenize(trimmed, line)?;
            block.append(&tokens, line)?;
        }
    }
    if let Some(block) = open {
        return Err(err(
            last_line.max(block.start),
            format!("table {} has no COMMIT", block.table.name()),
        ));
    }
    Ok(blocks)
}

/// Parses one rule given as the arguments after `-A <chain>` (as `render_rule` prints them,
/// with or without the leading `-A <chain>`), without checking jump targets.
///
/// # Errors
/// [`ParseError`] with line 1.
pub fn parse_rule_args(text: &str) -> Result<Rule, ParseError> {
    let tokens = tokenize(text.trim(), 1)?;
    let start = match tokens.first().map(|t| t.text.as_str()) {
        Some("-A") | Some("--append") => 2,
        _ => 0,
    };
    let args = tokens.get(start..).unwrap_or_default();
    Ok(parse_rule(args, 1)?.0)
}

fn err(line: usize, reason: impl Into<String>) -> ParseError {
    ParseError {
        what: WHAT,
        line,
        reason: reason.into(),
    }
}

struct OpenBlock {
    table: Table,
    start: usize,
    chains: Vec<ParsedChain>,
    index: BTreeMap<String, usize>,
    /// (target chain, line) for every jump, checked at COMMIT.
    jumps: Vec<(String, usize)>,
}

impl OpenBlock {
    fn new(table: Table, start: usize) -> Self {
        OpenBlock {
            table,
            start,
            chains: Vec::new(),
            index: BTreeMap::new(),
            jumps: Vec::new(),
        }
    }

    fn declare(&mut self, decl: &str, line: usize) -> Result<(), ParseError> {
        let mut parts = decl.split_whitespace();
        let name = parts
            .next()
            .ok_or_else(|| err(line, "chain declaration without a name"))?;
        let policy = parts
            .next()
            .ok_or_else(|| err(line, format!("chain {name} declared without a policy or -")))?;
        if let Some(counters) = parts.next() {
            let ok = counters.starts_with('[') && counters.ends_with(']') && counters.contains(':');
            if !ok {
                return Err(err(
                    line,
                    format!("bad counters {counters} for chain {name}"),
                ));
            }
        }
        if let Some(extra) = parts.next() {
            return Err(err(line, format!("unexpected {extra} after chain {name}")));
        }
        let builtin = is_builtin(self.table, name);
        let policy = match (builtin, policy) {
            (true, "ACCEPT") => Some(Policy::Accept),
            (true, "DROP") => Some(Policy::Drop),
            (true, other) => {
                return Err(err(
                    line,
                    format!("built-in chain {name} needs policy ACCEPT or DROP, not {other}"),
                ))
            }
            (false, "-") => None,
            (false, other) => {
                return Err(err(
                    line,
                    format!("user chain {name} cannot have policy {other}"),
                ))
            }
        };
        if name.len() > 28 || name.starts_with('-') {
            return Err(err(line, format!("invalid chain name {name}")));
        }
        if self.index.contains_key(name) {
            return Err(err(line, format!("chain {name} declared twice")));
        }
        self.index.insert(name.to_string(), self.chains.len());
        self.chains.push(ParsedChain {
            chain: Chain {
                name: name.to_string(),
                rules: Vec::new(),
            },
            policy,
        });
        Ok(())
    }

    fn append(&mut self, tokens: &[Token], line: usize) -> Result<(), ParseError> {
        let (cmd, rest) = tokens
            .split_first()
            .ok_or_else(|| err(line, "empty command"))?;
        if cmd.text != "-A" && cmd.text != "--append" {
            return Err(err(line, format!("unsupported command {}", cmd.text)));
        }
        let (chain, args) = rest
            .split_first()
            .ok_or_else(|| err(line, "-A without a chain"))?;
        let slot = match self.index.get(&chain.text) {
            Some(slot) => *slot,
            None if is_builtin(self.table, &chain.text) => {
                // iptables-restore accepts appends to an undeclared built-in chain.
                self.index.insert(chain.text.clone(), self.chains.len());
                self.chains.push(ParsedChain {
                    chain: Chain {
                        name: chain.text.clone(),
                        rules: Vec::new(),
                    },
                    policy: Some(Policy::Accept),
                });
                self.chains.len() - 1
            }
            None => {
                return Err(err(
                    line,
                    format!("append to undeclared chain {}", chain.text),
                ))
            }
        };
        let (rule, jump) = parse_rule(args, line)?;
        if let Some(target) = jump {
            self.jumps.push((target, line));
        }
        if let Some(parsed) = self.chains.get_mut(slot) {
            parsed.chain.rules.push(rule);
        }
        Ok(())
    }

    /// Closes the block; every jump must reach a chain it declares or one `existing` names.
    fn finish(self, existing: &dyn Fn(&str) -> bool) -> Result<RestoreBlock, ParseError> {
        for (target, line) in &self.jumps {
            if is_builtin(self.table, target) {
                return Err(err(*line, format!("jump to built-in chain {target}")));
            }
            if !self.index.contains_key(target) && !existing(target) {
                return Err(err(
                    *line,
                    format!("unknown target or undeclared chain {target}"),
                ));
            }
        }
        Ok(RestoreBlock {
            table: self.table,
            chains: self.chains,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    quoted: bool,
}

/// Splits on whitespace; `"..."` is one token (with `\"` and `\\` escapes).
fn tokenize(line_text: &str, line: usize) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = line_text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut text = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some(escaped) => text.push(escaped),
                        None => break,
                    },
                    other => text.push(other),
                }
            }
            if !closed {
                return Err(err(line, "unterminated quoted string"));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(err(line, "text right after a closing quote"));
            }
            tokens.push(Token { text, quoted: true });
        } else {
            let mut text = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '"' {
                    return Err(err(line, format!("stray quote in {text}\"")));
                }
                text.push(c);
                chars.next();
            }
            tokens.push(Token {
                text,
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

/// Cursor over a rule's tokens.
struct Args<'a> {
    tokens: &'a [Token],
    pos: usize,
    line: usize,
}

impl<'a> Args<'a> {
    fn next(&mut self) -> Option<&'a Token> {
        let t = self.tokens.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn value(&mut self, option: &str) -> Result<&'a str, ParseError> {
        match self.next() {
            Some(t) => Ok(t.text.as_str()),
            None => Err(err(self.line, format!("{option} needs a value"))),
        }
    }
}

/// Parses the arguments of one rule; also returns the chain it jumps or goes to, if any.
fn parse_rule(tokens: &[Token], line: usize) -> Result<(Rule, Option<String>), ParseError> {
    let mut args = Args {
        tokens,
        pos: 0,
        line,
    };
    let mut matches = Vec::new();
    let mut comment: Option<Option<String>> = None;
    let mut target: Option<Target> = None;
    let mut chain_ref = None;
    let mut module: Option<String> = None;
    let mut negate = false;
    while let Some(tok) = args.next() {
        let opt = tok.text.as_str();
        if opt == "!" {
            if negate {
                return Err(err(line, "double negation"));
            }
            negate = true;
            continue;
        }
        let was_negated = std::mem::take(&mut negate);
        let no_negation = |what: &str| {
            if was_negated {
                Err(err(line, format!("{what} cannot be negated")))
            } else {
                Ok(())
            }
        };
        match opt {
            "-s" | "--source" | "--src" => matches.push(Match::Source {
                net: parse_net(args.value(opt)?, line)?,
                negate: was_negated,
            }),
            "-d" | "--destination" | "--dst" => matches.push(Match::Destination {
                net: parse_net(args.value(opt)?, line)?,
                negate: was_negated,
            }),
            "-i" | "--in-interface" => matches.push(Match::InInterface {
                name: parse_iface(args.value(opt)?, line)?,
                negate: was_negated,
            }),
            "-o" | "--out-interface" => matches.push(Match::OutInterface {
                name: parse_iface(args.value(opt)?, line)?,
                negate: was_negated,
            }),
            "-p" | "--protocol" => matches.push(Match::Protocol {
                protocol: parse_protocol(args.value(opt)?, line)?,
                negate: was_negated,
            }),
            "-m" | "--match" => {
                no_negation("a module")?;
                let name = args.value(opt)?;
                match name {
                    "comment" | "conntrack" | "mark" | "mac" | "set" | "multiport" | "icmp"
                    | "icmp6" | "tcp" | "udp" | "sctp" | "udplite" => {
                        module = Some(name.to_string())
                    }
                    other => return Err(err(line, format!("unknown match module {other}"))),
                }
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                no_negation("a target")?;
                if target.is_some() {
                    return Err(err(line, "more than one target"));
                }
                let name = args.value(opt)?;
                let goto = opt == "-g" || opt == "--goto";
                let t = parse_target(name, goto, &mut args)?;
                if let Target::Jump(c) | Target::Goto(c) = &t {
                    chain_ref = Some(c.clone());
                }
                target = Some(t);
            }
            _ if opt.starts_with("--") => {
                let Some(m) = module.as_deref() else {
                    return Err(err(line, format!("unknown option {opt}")));
                };
                if m == "comment" && opt == "--comment" {
                    no_negation("a comment")?;
                    if comment.is_some() {
                        return Err(err(line, "more than one comment"));
                    }
                    let value = args
                        .next()
                        .ok_or_else(|| err(line, "--comment needs a value"))?;
                    if !value.quoted {
                        return Err(err(line, format!("unquoted comment {}", value.text)));
                    }
                    comment = Some(strip_hash(&value.text));
                } else {
                    matches.push(parse_module_option(m, opt, was_negated, &mut args)?);
                }
            }
            other => return Err(err(line, format!("unknown option {other}"))),
        }
    }
    if negate {
        return Err(err(line, "trailing !"));
    }
    let target = target.ok_or_else(|| err(line, "rule without a target"))?;
    Ok((
        Rule {
            matches,
            target,
            comment: comment.flatten(),
        },
        chain_ref,
    ))
}

fn strip_hash(text: &str) -> Option<String> {
    match text.strip_prefix("cali:") {
        Some(rest) => rest.split_once(' ').map(|(_hash, human)| human.to_string()),
        None => Some(text.to_string()),
    }
}

fn parse_module_option(
    module: &str,
    opt: &str,
    negate: bool,
    args: &mut Args<'_>,
) -> Result<Match, ParseError> {
    let line = args.line;
    let no_negation = || {
        if negate {
            Err(err(line, format!("{opt} cannot be negated here")))
        } else {
            Ok(())
        }
    };
    let unknown = || err(line, format!("unknown option {opt} for module {module}"));
    Ok(match (module, opt) {
        ("conntrack", "--ctstate") => {
            no_negation()?;
            let mut states = BTreeSet::new();
            for s in args.value(opt)?.split(',') {
                states.insert(match s {
                    "INVALID" => CtState::Invalid,
                    "NEW" => CtState::New,
                    "ESTABLISHED" => CtState::Established,
                    "RELATED" => CtState::Related,
                    other => return Err(err(line, format!("unknown ctstate {other}"))),
                });
            }
            Match::ConntrackState { states }
        }
        ("mark", "--mark") => {
            no_negation()?;
            let (value, mask) = parse_value_mask(args.value(opt)?, line)?;
            Match::Mark { value, mask }
        }
        ("mac", "--mac-source") => {
            let text = args.value(opt)?;
            let mac: MacAddr = text
                .parse()
                .map_err(|_| err(line, format!("bad MAC address {text}")))?;
            Match::MacSource { mac, negate }
        }
        ("set", "--match-set") => {
            let name = args.value(opt)?.to_string();
            let direction = match args.value(opt)? {
                "src" => SetDirection::Src,
                "dst" => SetDirection::Dst,
                other => {
                    return Err(err(
                        line,
                        format!("set direction must be src or dst, not {other}"),
                    ))
                }
            };
            Match::Set {
                name,
                direction,
                negate,
            }
        }
        ("multiport", "--sports" | "--source-ports") => {
            let ports = parse_ports(args.value(opt)?, line)?;
            if negate {
                Match::NotSourcePorts { ports }
            } else {
                Match::SourcePorts { ports }
            }
        }
        ("multiport", "--dports" | "--destination-ports") => {
            let ports = parse_ports(args.value(opt)?, line)?;
            if negate {
                Match::NotDestinationPorts { ports }
            } else {
                Match::DestinationPorts { ports }
            }
        }
        ("tcp" | "udp" | "sctp" | "udplite", "--sport" | "--source-port") => {
            no_negation()?;
            Match::SourcePorts {
                ports: vec![parse_port_range(args.value(opt)?, line)?],
            }
        }
        ("tcp" | "udp" | "sctp" | "udplite", "--dport" | "--destination-port") => {
            no_negation()?;
            Match::DestinationPorts {
                ports: vec![parse_port_range(args.value(opt)?, line)?],
            }
        }
        ("icmp", "--icmp-type") => {
            let (icmp_type, code) = parse_icmp_type(args.value(opt)?, line)?;
            if negate {
                Match::NotIcmpType { icmp_type, code }
            } else {
                Match::IcmpType { icmp_type, code }
            }
        }
        ("icmp6", "--icmpv6-type") => {
            let (icmp_type, code) = parse_icmp_type(args.value(opt)?, line)?;
            if negate {
                Match::NotIcmpv6Type { icmp_type, code }
            } else {
                Match::Icmpv6Type { icmp_type, code }
            }
        }
        _ => return Err(unknown()),
    })
}

fn parse_target(name: &str, goto: bool, args: &mut Args<'_>) -> Result<Target, ParseError> {
    let line = args.line;
    let builtin_target = matches!(name, "ACCEPT" | "DROP" | "RETURN" | "MARK" | "MASQUERADE");
    if goto && builtin_target {
        return Err(err(line, format!("-g needs a chain, not {name}")));
    }
    Ok(match name {
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        "RETURN" => Target::Return,
        "MASQUERADE" => Target::Masquerade,
        "MARK" => {
            let opt = args.value("MARK")?;
            let (value, mask) = parse_value_mask(args.value(opt)?, line)?;
            match opt {
                "--set-xmark" => Target::SetMark { value, mask },
                // --set-mark V/M is (mark & !M) | V: the same as xmark when V lies inside M.
                "--set-mark" if value & !mask == 0 => Target::SetMark { value, mask },
                "--set-mark" => {
                    return Err(err(
                        line,
                        format!("--set-mark value {value:#x} has bits outside mask {mask:#x}"),
                    ))
                }
                other => return Err(err(line, format!("unknown MARK option {other}"))),
            }
        }
        chain if goto => Target::Goto(chain.to_string()),
        chain => Target::Jump(chain.to_string()),
    })
}

fn parse_net(text: &str, line: usize) -> Result<IpNet, ParseError> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| err(line, format!("bad address {text}")))
}

fn parse_iface(text: &str, line: usize) -> Result<String, ParseError> {
    let body = text.strip_suffix('+').unwrap_or(text);
    let ok = text.len() <= 15
        && !text.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(err(line, format!("bad interface name {text}")))
    }
}

fn parse_protocol(text: &str, line: usize) -> Result<Protocol, ParseError> {
    match text {
        "ipv6-icmp" => Ok(Protocol::Icmpv6),
        // iptables-save names protocols from /etc/protocols: IPIP (4) is `ipencap`.
        "ipencap" => Ok(Protocol::Number(4)),
        other => other
            .parse()
            .map_err(|_| err(line, format!("unknown protocol {other}"))),
    }
}

fn parse_u32(text: &str, line: usize) -> Result<u32, ParseError> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| err(line, format!("bad number {text}")))
}

fn parse_value_mask(text: &str, line: usize) -> Result<(u32, u32), ParseError> {
    match text.split_once('/') {
        Some((v, m)) => Ok((parse_u32(v, line)?, parse_u32(m, line)?)),
        None => Ok((parse_u32(text, line)?, u32::MAX)),
    }
}

fn parse_port_range(text: &str, line: usize) -> Result<PortRange, ParseError> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| err(line, format!("bad port {p}")))
    };
    let range = match text.split_once(':') {
        Some((lo, hi)) => PortRange {
            first: port(lo)?,
            last: port(hi)?,
        },
        None => PortRange::single(port(text)?),
    };
    if range.first > range.last {
        return Err(err(line, format!("port range {text} is backwards")));
    }
    Ok(range)
}

fn parse_ports(text: &str, line: usize) -> Result<Vec<PortRange>, ParseError> {
    let ports = text
        .split(',')
        .map(|p| parse_port_range(p, line))
        .collect::<Result<Vec<_>, _>>()?;
    let weight: usize = ports
        .iter()
        .map(|r| if r.first == r.last { 1 } else { 2 })
        .sum();
    if weight > 15 {
        return Err(err(
            line,
            format!("multiport list {text} has more than 15 ports"),
        ));
    }
    Ok(ports)
}

fn parse_icmp_type(text: &str, line: usize) -> Result<(u8, Option<u8>), ParseError> {
    let num = |s: &str| {
        s.parse::<u8>()
            .map_err(|_| err(line, format!("bad icmp type {text}")))
    };
    match text.split_once('/') {
        Some((t, c)) => Ok((num(t)?, Some(num(c)?))),
        None => Ok((num(text)?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_rule(args: &str) -> Rule {
        let text = format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:c - [0:0]\n:d - [0:0]\n-A c {args}\nCOMMIT\n"
        );
        let blocks = parse_restore(&text).unwrap();
        blocks[0].chains[1].chain.rules[0].clone()
    }

    #[test]
    fn noflush_text_may_jump_to_chains_the_kernel_holds() {
        let text = "*filter\n:FORWARD ACCEPT [0:0]\n:c - [0:0]\n\
                    -A FORWARD -j kept\n-A c -g kept\nCOMMIT\n";
        let kernel_has = |name: &str| name == "kept";
        let blocks = parse_restore_noflush(text, &kernel_has).unwrap();
        let names: Vec<&str> = blocks[0]
            .chains
            .iter()
            .map(|c| c.chain.name.as_str())
            .collect();
        assert_eq!(names, ["FORWARD", "c"]);
        assert_eq!(
            blocks[0].chains[1].chain.rules[0].target,
            Target::Goto("kept".to_string())
        );
        // Without the kernel's chain it is the usual error, and an append still needs a
        // declaration (declaring is what would flush a chain).
        let e = parse_restore(text).unwrap_err();
        assert!(e.to_string().contains("undeclared chain kept"), "{e}");
        let e =
            parse_restore_noflush("*filter\n-A kept -j DROP\nCOMMIT\n", &kernel_has).unwrap_err();
        assert!(
            e.to_string().contains("append to undeclared chain kept"),
            "{e}"
        );
    }

    fn parse_line_error(text: &str) -> (usize, String) {
        match parse_restore(text) {
            Err(ParseError { line, reason, .. }) => (line, reason),
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_basic_match() {
        let rule = one_rule(
            "! -s 10.0.0.0/8 -d 192.168.1.1 ! -i cali+ -o eth0 ! -p tcp -m comment --comment \"cali:0123 text here\" -j ACCEPT",
        );
        assert_eq!(
            rule.matches,
            vec![
                Match::Source {
                    net: "10.0.0.0/8".parse().unwrap(),
                    negate: true
                },
                Match::Destination {
                    net: "192.168.1.1/32".parse().unwrap(),
                    negate: false
                },
                Match::InInterface {
                    name: "cali+".into(),
                    negate: true
                },
                Match::OutInterface {
                    name: "eth0".into(),
                    negate: false
                },
                Match::Protocol {
                    protocol: Protocol::Tcp,
                    negate: true
                },
            ]
        );
        assert_eq!(rule.comment.as_deref(), Some("text here"));
        assert_eq!(rule.target, Target::Accept);
    }

    #[test]
    fn parses_protocol_spellings() {
        for (text, want) in [
            ("icmp", Protocol::Icmp),
            ("icmpv6", Protocol::Icmpv6),
            ("ipv6-icmp", Protocol::Icmpv6),
            ("sctp", Protocol::Sctp),
            ("udplite", Protocol::Udplite),
            ("47", Protocol::Number(47)),
            ("ipencap", Protocol::Number(4)),
        ] {
            let rule = one_rule(&format!("-p {text} -j DROP"));
            assert_eq!(
                rule.matches,
                vec![Match::Protocol {
                    protocol: want,
                    negate: false
                }],
                "{text}"
            );
        }
    }

    #[test]
    fn parses_every_module() {
        let rule = one_rule(
            "-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED -m mark --mark 0x1000000/0x1000000 \
             -m mac ! --mac-source EE:EE:EE:EE:EE:01 -m set ! --match-set cali4-t-X src \
             -m set --match-set s2 dst -m multiport --sports 1,2:3 -m multiport --destination-ports 80,8000:8080 \
             -m icmp --icmp-type 3/1 -m icmp6 --icmpv6-type 128 -j RETURN",
        );
        let all = [
            CtState::Invalid,
            CtState::New,
            CtState::Related,
            CtState::Established,
        ];
        assert_eq!(
            rule.matches,
            vec![
                Match::ConntrackState {
                    states: all.into_iter().collect()
                },
                Match::Mark {
                    value: 0x100_0000,
                    mask: 0x100_0000
                },
                Match::MacSource {
                    mac: "ee:ee:ee:ee:ee:01".parse().unwrap(),
                    negate: true
                },
                Match::Set {
                    name: "cali4-t-X".into(),
                    direction: SetDirection::Src,
                    negate: true
                },
                Match::Set {
                    name: "s2".into(),
                    direction: SetDirection::Dst,
                    negate: false
                },
                Match::SourcePorts {
                    ports: vec![PortRange::single(1), PortRange { first: 2, last: 3 }]
                },
                Match::DestinationPorts {
                    ports: vec![
                        PortRange::single(80),
                        PortRange {
                            first: 8000,
                            last: 8080
                        }
                    ]
                },
                Match::IcmpType {
                    icmp_type: 3,
                    code: Some(1)
                },
                Match::Icmpv6Type {
                    icmp_type: 128,
                    code: None
                },
            ]
        );
        assert_eq!(rule.comment, None);
        assert_eq!(rule.target, Target::Return);
    }

    #[test]
    fn parses_every_target() {
        assert_eq!(one_rule("-j DROP").target, Target::Drop);
        assert_eq!(one_rule("-j d").target, Target::Jump("d".into()));
        assert_eq!(one_rule("-g d").target, Target::Goto("d".into()));
        assert_eq!(one_rule("--goto d").target, Target::Goto("d".into()));
        assert_eq!(one_rule("-j MASQUERADE").target, Target::Masquerade);
        assert_eq!(
            one_rule("-j MARK --set-xmark 0x1/0xff").target,
            Target::SetMark {
                value: 1,
                mask: 0xff
            }
        );
        assert_eq!(
            one_rule("-j MARK --set-mark 0x4").target,
            Target::SetMark {
                value: 4,
                mask: u32::MAX
            }
        );
    }

    #[test]
    fn comments_keep_the_human_part() {
        assert_eq!(
            one_rule("-m comment --comment \"cali:abc\" -j DROP").comment,
            None
        );
        assert_eq!(
            one_rule("-m comment --comment \"not ours \\\"quoted\\\"\" -j DROP")
                .comment
                .as_deref(),
            Some("not ours \"quoted\"")
        );
    }

    #[test]
    fn accepts_iptables_save_forms() {
        let text = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [12:345]\n\
                    :POSTROUTING ACCEPT [0:0]\n:cali-nat - [0:0]\n\
                    -A POSTROUTING -j cali-nat\n\
                    -A cali-nat -p tcp -m tcp --dport 80 -m udp --sport 1:2 -j MASQUERADE\n\
                    COMMIT\n# Completed\n";
        let blocks = parse_restore(text).unwrap();
        assert_eq!(blocks[0].table, Table::Nat);
        let names: Vec<&str> = blocks[0]
            .chains
            .iter()
            .map(|c| c.chain.name.as_str())
            .collect();
        assert_eq!(names, ["PREROUTING", "POSTROUTING", "cali-nat"]);
        assert_eq!(
            blocks[0].chains[2].chain.rules[0].matches[1..],
            [
                Match::DestinationPorts {
                    ports: vec![PortRange::single(80)]
                },
                Match::SourcePorts {
                    ports: vec![PortRange { first: 1, last: 2 }]
                }
            ]
        );
    }

    #[test]
    fn rejects_unknown_things_naming_the_line() {
        let head = "*filter\n:FORWARD ACCEPT [0:0]\n:c - [0:0]\n";
        for (rule, want) in [
            ("-A c --frob 1 -j DROP", "unknown option --frob"),
            (
                "-A c -m limit --limit 5 -j DROP",
                "unknown match module limit",
            ),
            ("-A c -j LOG", "unknown target or undeclared chain LOG"),
            ("-A c -j nowhere", "undeclared chain nowhere"),
            (
                "-A c -m comment --comment bare -j DROP",
                "unquoted comment bare",
            ),
            ("-A c -m comment --comment \"open -j DROP", "unterminated"),
            (
                "-A c -m mark --mark 0x1 --frob -j DROP",
                "unknown option --frob for module mark",
            ),
            (
                "-A c -m multiport --ports 1 -j DROP",
                "unknown option --ports",
            ),
            ("-A c -p tcp", "rule without a target"),
            ("-A c -j ACCEPT -j DROP", "more than one target"),
            ("-A c ! -m mark --mark 1 -j DROP", "cannot be negated"),
            ("-A c -j MARK --and-mark 1", "unknown MARK option"),
            (
                "-A c -j MASQUERADE --to-ports 1",
                "unknown option --to-ports",
            ),
            ("-A nope -j DROP", "undeclared chain nope"),
            ("-A c -s 10.0.0.300 -j DROP", "bad address"),
            ("-A c -m icmp --icmp-type echo -j DROP", "bad icmp type"),
            ("-I c -j DROP", "unsupported command -I"),
        ] {
            let (line, reason) = parse_line_error(&format!("{head}{rule}\nCOMMIT\n"));
            assert_eq!(line, 4, "{rule}");
            assert!(reason.contains(want), "{rule}: {reason}");
        }
        assert_eq!(parse_line_error("*raw\nCOMMIT\n").0, 1);
        assert_eq!(parse_line_error("*filter\n:c ACCEPT\nCOMMIT\n").0, 2);
        assert_eq!(parse_line_error("*filter\n:FORWARD -\nCOMMIT\n").0, 2);
        assert_eq!(parse_line_error("*filter\n:c -\n:c -\nCOMMIT\n").0, 3);
        assert_eq!(parse_line_error("-A c -j DROP\n").0, 1);
        let (line, reason) = parse_line_error("*filter\n:c - [0:0]\n");
        assert_eq!(line, 2);
        assert!(reason.contains("no COMMIT"), "{reason}");
    }
}
