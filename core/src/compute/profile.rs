//! Profile rules → `cali-pri-<profile>` / `cali-pro-<profile>` chains (reference 3.7).
//!
//! A profile chain first sets the accept mark; each rule RETURNs (allow, the mark stays set) or
//! DROPs (deny); the last rule clears the mark again so the endpoint chain tries the next
//! profile. Rules of the other family are skipped, including rules whose `src_net`/`dst_net`
//! is of the other family (the original broadened those; that was a defect).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::names::{profile_inbound_chain, profile_outbound_chain, selector_set, tag_set};
use super::MARK_ACCEPT;
use crate::cluster::ProfileState;
use crate::iptables::{Chain, IpFamily, Match, Rule, SetDirection, Target};
use crate::model::{Action, PortRange, Protocol, Rule as PolicyRule};
use crate::selector::Selector;

/// Selectors referenced by compiled rules, by unique id (equal selectors share one set).
pub type SelectorRefs = BTreeMap<String, Selector>;

/// At most this many multiport entries per rule (a range counts as two).
pub const MAX_MULTIPORT_ENTRIES: usize = 15;

/// ICMP type 255 is reserved; a rule naming it is compiled to a DROP (fail closed).
pub const RESERVED_ICMP_TYPE: u8 = 255;

/// A profile's chains in one family and the tags its rules reference there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompiledProfile {
    /// `cali-pri-<p>` then `cali-pro-<p>`.
    pub chains: Vec<Chain>,
    pub tags: BTreeSet<String>,
    pub selectors: SelectorRefs,
}

/// Compiles profile `name` for `family`. A missing profile, or one without (valid) rules, gives
/// two chains that only drop, so endpoints using it drop everything.
pub fn profile_chains(
    name: &str,
    profile: Option<&ProfileState>,
    family: IpFamily,
) -> CompiledProfile {
    let inbound = profile_inbound_chain(name);
    let outbound = profile_outbound_chain(name);
    let Some(rules) = profile.and_then(|p| p.rules.as_ref()) else {
        let stub = |chain: String| Chain {
            name: chain,
            rules: vec![
                Rule::new(vec![], Target::Drop).with_comment(format!("missing profile {name}"))
            ],
        };
        return CompiledProfile {
            chains: vec![stub(inbound), stub(outbound)],
            ..CompiledProfile::default()
        };
    };
    let mut out = CompiledProfile::default();
    out.chains = vec![
        Chain {
            name: inbound,
            rules: chain_rules(&rules.inbound_rules, family, &mut out, None),
        },
        Chain {
            name: outbound,
            rules: chain_rules(&rules.outbound_rules, family, &mut out, None),
        },
    ];
    out
}

/// The rules of one profile or policy chain: set the accept mark, then each rule RETURNs
/// (allow) or DROPs (deny), then clear the mark (no verdict). With `label` (`policy NAME`)
/// every rule is commented `<label> rule <n>` (1-based), so a packet trace names the rule
/// that decided.
pub fn chain_rules(
    rules: &[PolicyRule],
    family: IpFamily,
    refs: &mut CompiledProfile,
    label: Option<&str>,
) -> Vec<Rule> {
    let mut out = vec![Rule::new(
        vec![],
        Target::SetMark {
            value: MARK_ACCEPT,
            mask: MARK_ACCEPT,
        },
    )];
    for (i, rule) in rules.iter().enumerate() {
        if let Some(compiled) = translate(rule, family) {
            refs.tags.extend(rule.src_tag.iter().cloned());
            refs.tags.extend(rule.dst_tag.iter().cloned());
            for sel in rule_selectors(rule) {
                refs.selectors
                    .entry(sel.unique_id())
                    .or_insert_with(|| sel.clone());
            }
            match label {
                Some(label) => out.extend(
                    compiled
                        .into_iter()
                        .map(|r| r.with_comment(format!("{label} rule {}", i + 1))),
                ),
                None => out.extend(compiled),
            }
        }
    }
    out.push(
        Rule::new(
            vec![],
            Target::SetMark {
                value: 0,
                mask: MARK_ACCEPT,
            },
        )
        .with_comment(match label {
            Some(label) => format!("no rule of {label} matched, on to the next"),
            None => "no match, fall through to next profile".to_string(),
        }),
    );
    out
}

fn net_family(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The selectors of a rule, positive and negated, source and destination.
pub fn rule_selectors(rule: &PolicyRule) -> impl Iterator<Item = &Selector> {
    rule.src_selector
        .iter()
        .chain(&rule.not_src_selector)
        .chain(&rule.dst_selector)
        .chain(&rule.not_dst_selector)
}

/// Whether `rule` applies to `family` at all.
pub fn applies_to(rule: &PolicyRule, family: IpFamily) -> bool {
    let version_ok = match rule.ip_version {
        Some(4) => family == IpFamily::V4,
        Some(6) => family == IpFamily::V6,
        _ => true,
    };
    let nets_ok = rule
        .src_net
        .iter()
        .chain(&rule.dst_net)
        .chain(&rule.not_src_net)
        .chain(&rule.not_dst_net)
        .all(|n| net_family(n) == family);
    let proto_ok = match rule.protocol.map(Protocol::number) {
        Some(1) => family == IpFamily::V4,
        Some(58) => family == IpFamily::V6,
        _ => true,
    };
    version_ok && nets_ok && proto_ok
}

/// Splits a port list into multiport-sized chunks; an empty list is one chunk matching any port.
fn port_chunks(ports: &[PortRange]) -> Vec<Vec<PortRange>> {
    if ports.is_empty() {
        return vec![Vec::new()];
    }
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for port in ports {
        let weight = if port.first == port.last { 1 } else { 2 };
        if used + weight > MAX_MULTIPORT_ENTRIES {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(*port);
        used += weight;
    }
    chunks.push(current);
    chunks
}

/// One policy rule as iptables rules in `family`, or `None` when it does not apply there.
pub fn translate(rule: &PolicyRule, family: IpFamily) -> Option<Vec<Rule>> {
    if !applies_to(rule, family) {
        return None;
    }
    let target = match rule.action {
        Action::Allow => Target::Return,
        Action::Deny => Target::Drop,
    };
    if rule.icmp_type == Some(RESERVED_ICMP_TYPE) {
        return Some(vec![Rule::new(vec![], Target::Drop)
            .with_comment("icmp type 255 is reserved, rule replaced by drop")]);
    }
    // Addresses before the protocol: the order iptables-save prints them in, so the rules
    // read back from the kernel equal these.
    // A rule holds at most one of a match and its negation (`Rule::validate`).
    let mut base = Vec::new();
    for (net, negate) in [(rule.src_net, false), (rule.not_src_net, true)] {
        if let Some(net) = net {
            base.push(Match::Source { net, negate });
        }
    }
    for (net, negate) in [(rule.dst_net, false), (rule.not_dst_net, true)] {
        if let Some(net) = net {
            base.push(Match::Destination { net, negate });
        }
    }
    for (protocol, negate) in [(rule.protocol, false), (rule.not_protocol, true)] {
        if let Some(protocol) = protocol {
            base.push(Match::Protocol { protocol, negate });
        }
    }
    for (tag, direction) in [
        (&rule.src_tag, SetDirection::Src),
        (&rule.dst_tag, SetDirection::Dst),
    ] {
        if let Some(tag) = tag {
            base.push(Match::Set {
                name: tag_set(tag, family),
                direction,
                negate: false,
            });
        }
    }
    for (sel, direction, negate) in [
        (&rule.src_selector, SetDirection::Src, false),
        (&rule.not_src_selector, SetDirection::Src, true),
        (&rule.dst_selector, SetDirection::Dst, false),
        (&rule.not_dst_selector, SetDirection::Dst, true),
    ] {
        if let Some(sel) = sel {
            base.push(Match::Set {
                name: selector_set(&sel.unique_id(), family),
                direction,
                negate,
            });
        }
    }
    if let Some(icmp_type) = rule.icmp_type {
        base.push(match family {
            IpFamily::V4 => Match::IcmpType {
                icmp_type,
                code: rule.icmp_code,
            },
            IpFamily::V6 => Match::Icmpv6Type {
                icmp_type,
                code: rule.icmp_code,
            },
        });
    }
    if let Some(icmp_type) = rule.not_icmp_type {
        base.push(match family {
            IpFamily::V4 => Match::NotIcmpType {
                icmp_type,
                code: rule.not_icmp_code,
            },
            IpFamily::V6 => Match::NotIcmpv6Type {
                icmp_type,
                code: rule.not_icmp_code,
            },
        });
    }
    // A negated port list must exclude every chunk at once: all chunks in each rule.
    for chunk in port_chunks(&rule.not_src_ports) {
        if !chunk.is_empty() {
            base.push(Match::NotSourcePorts { ports: chunk });
        }
    }
    for chunk in port_chunks(&rule.not_dst_ports) {
        if !chunk.is_empty() {
            base.push(Match::NotDestinationPorts { ports: chunk });
        }
    }
    let mut out = Vec::new();
    for src in port_chunks(&rule.src_ports) {
        for dst in port_chunks(&rule.dst_ports) {
            let mut matches = base.clone();
            if !src.is_empty() {
                matches.push(Match::SourcePorts { ports: src.clone() });
            }
            if !dst.is_empty() {
                matches.push(Match::DestinationPorts { ports: dst });
            }
            out.push(Rule::new(matches, target.clone()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_port_lists_are_chunked_into_the_cross_product() {
        let rule = PolicyRule {
            protocol: Some(Protocol::Tcp),
            src_ports: (1..=16).map(PortRange::single).collect(),
            dst_ports: vec![PortRange { first: 1, last: 9 }; 8],
            ..PolicyRule::default()
        };
        let rules = translate(&rule, IpFamily::V4).unwrap();
        assert_eq!(rules.len(), 4);
        let Match::SourcePorts { ports } = &rules[0].matches[1] else {
            panic!("expected source ports, got {:?}", rules[0].matches);
        };
        assert_eq!(ports.len(), 15);
        let Match::DestinationPorts { ports } = &rules[0].matches[2] else {
            panic!("expected destination ports, got {:?}", rules[0].matches);
        };
        assert_eq!(ports.len(), 7);
    }

    #[test]
    fn rules_of_the_other_family_are_skipped_not_broadened() {
        let rule = PolicyRule {
            src_net: Some("10.0.0.0/8".parse().unwrap()),
            ..PolicyRule::default()
        };
        assert_eq!(translate(&rule, IpFamily::V6), None);
        assert_eq!(translate(&rule, IpFamily::V4).unwrap().len(), 1);
        let icmp = PolicyRule {
            protocol: Some(Protocol::Icmp),
            ..PolicyRule::default()
        };
        assert_eq!(translate(&icmp, IpFamily::V6), None);
    }
}
