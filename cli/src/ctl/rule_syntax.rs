//! The CLI's rule grammar (reference 2.7) and the one-line rule rendering of `rule show`:
//!
//! ```text
//! (allow|deny) [tcp|udp [from [ports P] [tag T] [cidr C]] [to [ports P] [tag T] [cidr C]]]
//! (allow|deny) [icmp [type N [code M]] [from [tag T] [cidr C]] [to [tag T] [cidr C]]]
//! (allow|deny) [from [tag T] [cidr C]] [to [tag T] [cidr C]]
//! ```

use calico_core::model::{Action, PortRange, Protocol, Rule};
use ipnet::IpNet;

use super::args::parse_as;
use super::CtlError;

fn unexpected(word: &str) -> CtlError {
    CtlError::UnexpectedArgument {
        arg: word.to_string(),
    }
}

fn icmp_value(what: &'static str, s: &str) -> Result<u8, CtlError> {
    let n: u8 = parse_as(what, s)?;
    if n == 255 {
        return Err(CtlError::BadArgument {
            what,
            value: s.to_string(),
            reason: "must be 0-254".into(),
        });
    }
    Ok(n)
}

fn ports(s: &str) -> Result<Vec<PortRange>, CtlError> {
    s.split(',').map(|p| parse_as("port", p)).collect()
}

/// Parses `words` (starting at the action) into a validated rule.
///
/// # Errors
/// The first word that does not fit the grammar, or an invalid value naming it.
pub fn parse_rule(words: &[&str]) -> Result<Rule, CtlError> {
    let mut rule = Rule::default();
    let mut it = words.iter().copied().peekable();
    rule.action = match it.next() {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        Some(other) => {
            return Err(CtlError::BadArgument {
                what: "rule action",
                value: other.to_string(),
                reason: "expected allow or deny".into(),
            })
        }
        None => {
            return Err(CtlError::MissingArgument {
                what: "rule action (allow|deny)",
            })
        }
    };
    if let Some(p @ ("tcp" | "udp" | "icmp" | "icmpv6")) = it.peek().copied() {
        it.next();
        rule.protocol = Some(parse_as::<Protocol>("protocol", p)?);
    }
    let icmp = rule.protocol.is_some_and(Protocol::is_icmp);
    if icmp && it.peek() == Some(&"type") {
        it.next();
        let t = it
            .next()
            .ok_or(CtlError::MissingArgument { what: "icmp type" })?;
        rule.icmp_type = Some(icmp_value("icmp type", t)?);
        if it.peek() == Some(&"code") {
            it.next();
            let c = it
                .next()
                .ok_or(CtlError::MissingArgument { what: "icmp code" })?;
            rule.icmp_code = Some(icmp_value("icmp code", c)?);
        }
    }
    let with_ports = rule.protocol.is_some_and(Protocol::has_ports);
    for side in ["from", "to"] {
        if it.peek() != Some(&side) {
            continue;
        }
        it.next();
        let (mut p, mut tag, mut net): (Vec<PortRange>, Option<String>, Option<IpNet>) =
            (Vec::new(), None, None);
        while let Some(word @ ("ports" | "tag" | "cidr")) = it.peek().copied() {
            it.next();
            let value = it.next().ok_or(CtlError::MissingArgument {
                what: "value after ports/tag/cidr",
            })?;
            match word {
                "ports" if with_ports && p.is_empty() => p = ports(value)?,
                "tag" if tag.is_none() => {
                    calico_core::names::validate_name("tag", value)?;
                    tag = Some(value.to_string());
                }
                "cidr" if net.is_none() => net = Some(parse_as::<IpNet>("cidr", value)?.trunc()),
                _ => return Err(unexpected(word)),
            }
        }
        if side == "from" {
            (rule.src_ports, rule.src_tag, rule.src_net) = (p, tag, net);
        } else {
            (rule.dst_ports, rule.dst_tag, rule.dst_net) = (p, tag, net);
        }
    }
    if let Some(extra) = it.next() {
        return Err(unexpected(extra));
    }
    rule.validate()?;
    Ok(rule)
}

/// One line in the CLI grammar, e.g. `allow tcp from ports 80 tag web to cidr 10.0.0.0/8`.
pub fn render_rule(rule: &Rule) -> String {
    let mut out = vec![match rule.action {
        Action::Allow => "allow".to_string(),
        Action::Deny => "deny".to_string(),
    }];
    if let Some(p) = rule.protocol {
        out.push(p.to_string());
    }
    if let Some(t) = rule.icmp_type {
        out.push(format!("type {t}"));
        if let Some(c) = rule.icmp_code {
            out.push(format!("code {c}"));
        }
    }
    let side = |name: &str, ports: &[PortRange], tag: &Option<String>, net: &Option<IpNet>| {
        let mut parts = Vec::new();
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
            parts.push(format!("ports {}", list.join(",")));
        }
        if let Some(t) = tag {
            parts.push(format!("tag {t}"));
        }
        if let Some(n) = net {
            parts.push(format!("cidr {n}"));
        }
        if parts.is_empty() {
            None
        } else {
            Some(format!("{name} {}", parts.join(" ")))
        }
    };
    out.extend(side("from", &rule.src_ports, &rule.src_tag, &rule.src_net));
    out.extend(side("to", &rule.dst_ports, &rule.dst_tag, &rule.dst_net));
    if let Some(v) = rule.ip_version {
        out.push(format!("(IPv{v} only)"));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn grammar_round_trips_through_rendering() {
        for s in [
            "allow",
            "deny",
            "allow tcp to ports 80",
            "allow udp from ports 53,1000:2000 tag dns cidr 10.0.0.0/8 to tag web",
            "deny icmp type 8 code 0 from cidr 192.168.0.0/16",
            "allow from tag PROF_A_B",
            "allow from cidr 192.168.0.0/16 to cidr 10.1.0.0/16",
        ] {
            let rule = parse_rule(&words(s)).unwrap();
            assert_eq!(render_rule(&rule), s);
        }
        let r = parse_rule(&words("allow tcp to ports 1000-2000")).unwrap();
        assert_eq!(render_rule(&r), "allow tcp to ports 1000:2000");
    }

    #[test]
    fn grammar_errors_name_the_word() {
        for (s, bad) in [
            ("permit", "permit"),
            ("allow from ports 80", "ports"),
            ("allow icmp type 255", "255"),
            ("allow tcp to ports 99999", "99999"),
            ("allow from tag a;b", "a;b"),
            ("allow to cidr 10.0.0.0/8 extra", "extra"),
        ] {
            let err = parse_rule(&words(s)).unwrap_err();
            assert!(err.to_string().contains(bad), "{s}: {err}");
        }
    }
}
