use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::validate_name;
use crate::selector::Selector;
use crate::ModelError;

/// What a matching rule does: `allow` (the default when absent) or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

/// An IP protocol: a name Felix knows or a number 1-255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Sctp,
    Udplite,
    Number(u8),
}

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
            Protocol::Udplite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// Whether port matches make sense (tcp, udp, sctp, udplite; also by number).
    pub fn has_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }

    /// Whether `icmp_type`/`icmp_code` make sense.
    pub fn is_icmp(self) -> bool {
        matches!(self.number(), 1 | 58)
    }

    fn from_number(n: u64) -> Result<Self, ModelError> {
        match n {
            1..=255 => Ok(Protocol::Number(n as u8)),
            _ => Err(ModelError::field(
                "protocol",
                n,
                "must be a name or a number 1-255",
            )),
        }
    }
}

impl FromStr for Protocol {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        Ok(match s {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::Icmpv6,
            "sctp" => Protocol::Sctp,
            "udplite" => Protocol::Udplite,
            _ => match s.parse::<u64>() {
                Ok(n) => Protocol::from_number(n)?,
                Err(_) => {
                    return Err(ModelError::field(
                        "protocol",
                        s,
                        "expected tcp, udp, icmp, icmpv6, sctp, udplite or 1-255",
                    ))
                }
            },
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::Sctp => f.write_str("sctp"),
            Protocol::Udplite => f.write_str("udplite"),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            named => s.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| ModelError::field("protocol", &n, "must be 1-255"))
                .and_then(Protocol::from_number)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "invalid protocol {other}"
            ))),
        }
    }
}

/// A port or an inclusive port range; JSON `80` or `"1000:2000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl FromStr for PortRange {
    type Err = ModelError;

    /// `"80"`, `"lo:hi"` or `"lo-hi"` (the CLI's forms).
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = |reason: &str| ModelError::field("port", s, reason);
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| bad("expected a port 0-65535"))
        };
        let range = match s.split_once([':', '-']) {
            Some((lo, hi)) => PortRange {
                first: parse(lo)?,
                last: parse(hi)?,
            },
            None => PortRange::single(parse(s)?),
        };
        if range.first > range.last {
            return Err(bad("range start is after its end"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .map(PortRange::single)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid port {n}"))),
            other => Err(serde::de::Error::custom(format!("invalid port {other}"))),
        }
    }
}

/// One profile rule (reference 1.4). Every present match must hold; absent ones match anything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Matches every protocol but this one.
    #[serde(default, rename = "!protocol", skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_net: Option<IpNet>,
    /// Matches every source outside this network.
    #[serde(default, rename = "!src_net", skip_serializing_if = "Option::is_none")]
    pub not_src_net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_selector: Option<Selector>,
    /// Matches every source that is not a Calico endpoint the selector matches.
    #[serde(
        default,
        rename = "!src_selector",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_src_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_ports: Vec<PortRange>,
    /// Matches a source port outside all of these.
    #[serde(default, rename = "!src_ports", skip_serializing_if = "Vec::is_empty")]
    pub not_src_ports: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_net: Option<IpNet>,
    /// Matches every destination outside this network.
    #[serde(default, rename = "!dst_net", skip_serializing_if = "Option::is_none")]
    pub not_dst_net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_selector: Option<Selector>,
    #[serde(
        default,
        rename = "!dst_selector",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_dst_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<PortRange>,
    /// Matches a destination port outside all of these.
    #[serde(default, rename = "!dst_ports", skip_serializing_if = "Vec::is_empty")]
    pub not_dst_ports: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Matches ICMP other than this type (and code, when given).
    #[serde(
        default,
        rename = "!icmp_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_icmp_type: Option<u8>,
    #[serde(
        default,
        rename = "!icmp_code",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_icmp_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
}

impl Rule {
    /// Felix's `validate_rules` for one rule; also normalises CIDRs to their network.
    pub fn validate(&mut self) -> Result<(), ModelError> {
        for tag in self.src_tag.iter().chain(&self.dst_tag) {
            validate_name("tag", tag)?;
        }
        let has_ports = [
            &self.src_ports,
            &self.dst_ports,
            &self.not_src_ports,
            &self.not_dst_ports,
        ]
        .iter()
        .any(|p| !p.is_empty());
        if has_ports && !self.protocol.is_some_and(Protocol::has_ports) {
            let proto = self.protocol.map(|p| p.to_string()).unwrap_or_default();
            return Err(ModelError::field(
                "protocol",
                proto,
                "ports are only allowed with tcp, udp, sctp or udplite",
            ));
        }
        let icmp_pairs = [
            ("icmp_type", "icmp_code", self.icmp_type, self.icmp_code),
            (
                "!icmp_type",
                "!icmp_code",
                self.not_icmp_type,
                self.not_icmp_code,
            ),
        ];
        for (type_field, code_field, icmp_type, icmp_code) in icmp_pairs {
            if icmp_type.is_some() && !self.protocol.is_some_and(Protocol::is_icmp) {
                return Err(ModelError::field(
                    type_field,
                    icmp_type.unwrap_or_default(),
                    "needs protocol icmp or icmpv6",
                ));
            }
            // iptables reads 255 as "any type" and the kernel never sees a type or code 255.
            if let Some(n) = icmp_type.filter(|n| *n == 255) {
                return Err(ModelError::field(type_field, n, "must be 0-254"));
            }
            if let Some(n) = icmp_code.filter(|n| *n == 255) {
                return Err(ModelError::field(code_field, n, "must be 0-254"));
            }
            if icmp_code.is_some() && icmp_type.is_none() {
                return Err(ModelError::field(
                    code_field,
                    icmp_code.unwrap_or_default(),
                    format!("needs {type_field}"),
                ));
            }
        }
        if let Some(v) = self.ip_version {
            if v != 4 && v != 6 {
                return Err(ModelError::field("ip_version", v, "must be 4 or 6"));
            }
        }
        // iptables takes one `-s`, `-d` and `-p` per rule, so a match and its negation of the
        // same kind cannot be rendered together.
        let both = [
            (
                "!protocol",
                self.protocol.is_some() && self.not_protocol.is_some(),
            ),
            (
                "!src_net",
                self.src_net.is_some() && self.not_src_net.is_some(),
            ),
            (
                "!dst_net",
                self.dst_net.is_some() && self.not_dst_net.is_some(),
            ),
        ];
        if let Some((field, _)) = both.iter().find(|(_, b)| *b) {
            return Err(ModelError::field(
                field,
                "",
                format!("cannot be combined with {}", &field[1..]),
            ));
        }
        for net in [
            &mut self.src_net,
            &mut self.dst_net,
            &mut self.not_src_net,
            &mut self.not_dst_net,
        ] {
            *net = net.map(|n| n.trunc());
        }
        Ok(())
    }
}

/// A profile's rules (`/calico/v1/policy/profile/<name>/rules`):
/// `{"id": "<profile>", "inbound_rules": [...], "outbound_rules": [...]}`. Both lists are
/// required; `id` is informational.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inbound_rules: Vec<Rule>,
    pub outbound_rules: Vec<Rule>,
}

impl Rules {
    /// What `calicoctl profile add NAME` writes: inbound allow from the profile's own tag,
    /// outbound allow all (no explicit deny, so a later profile can still allow).
    pub fn default_for(profile: &str) -> Self {
        Rules {
            id: Some(profile.to_string()),
            inbound_rules: vec![Rule {
                src_tag: Some(profile.to_string()),
                ..Rule::default()
            }],
            outbound_rules: vec![Rule::default()],
        }
    }

    /// Validates every rule in place.
    pub fn validate(&mut self) -> Result<(), ModelError> {
        self.inbound_rules
            .iter_mut()
            .chain(&mut self.outbound_rules)
            .try_for_each(Rule::validate)
    }
}

/// The index at which `profile <P> rule add --at=<position>` inserts into a list of `len`
/// rules. Positions are 1-based and `len + 1` appends, so the valid range is `1..=len + 1`.
///
/// The original warned about any other value and still ran Python's `list.insert(N-1, ..)`:
/// 0 and negatives counted from the end, huge values appended. Those silent
/// reinterpretations are refused here instead, for every entry point.
///
/// # Errors
/// `position` is outside `1..=len + 1`; the message names it and the valid range.
pub fn insert_position(position: i64, len: usize) -> Result<usize, ModelError> {
    let last = len.saturating_add(1);
    usize::try_from(position)
        .ok()
        .filter(|p| (1..=last).contains(p))
        .map(|p| p - 1)
        .ok_or_else(|| {
            ModelError::field(
                "rule position",
                position,
                format!("must be from 1 to {last} ({last} appends after the {len} rules there)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negated_matches_round_trip_and_refuse_their_positive_twin() {
        let raw =
            r#"{"action":"deny","!protocol":"tcp","!src_net":"10.1.2.3/8","!dst_net":"fd00::/8"}"#;
        let mut rule: Rule = serde_json::from_str(raw).unwrap();
        rule.validate().unwrap();
        assert_eq!(rule.not_protocol, Some(Protocol::Tcp));
        assert_eq!(rule.not_src_net, Some("10.0.0.0/8".parse().unwrap()));
        let back = serde_json::to_string(&rule).unwrap();
        assert!(back.contains(r#""!src_net":"10.0.0.0/8""#), "{back}");
        for (raw, field) in [
            (r#"{"protocol":"udp","!protocol":"tcp"}"#, "!protocol"),
            (
                r#"{"src_net":"10.0.0.0/8","!src_net":"10.1.0.0/16"}"#,
                "!src_net",
            ),
            (
                r#"{"dst_net":"10.0.0.0/8","!dst_net":"10.1.0.0/16"}"#,
                "!dst_net",
            ),
        ] {
            let mut rule: Rule = serde_json::from_str(raw).unwrap();
            let err = rule.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{raw}: {err}");
        }
    }

    #[test]
    fn negated_ports_and_icmp_need_their_protocol() {
        let mut ok: Rule =
            serde_json::from_str(r#"{"protocol":"icmp","!icmp_type":8,"!icmp_code":0}"#).unwrap();
        ok.validate().unwrap();
        for (raw, field) in [
            (r#"{"!dst_ports":[80]}"#, "protocol"),
            (r#"{"protocol":"icmp","!src_ports":[80]}"#, "protocol"),
            (r#"{"protocol":"tcp","!icmp_type":8}"#, "!icmp_type"),
            (r#"{"protocol":"icmp","!icmp_code":0}"#, "!icmp_code"),
            (r#"{"protocol":"icmp","!icmp_type":255}"#, "!icmp_type"),
        ] {
            let mut rule: Rule = serde_json::from_str(raw).unwrap();
            let err = rule.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{raw}: {err}");
        }
    }
}
