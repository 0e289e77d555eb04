//! The calicoctl 1.x `apiVersion: v1` resource shapes (libcalico-go v1 `lib/api`, reference
//! `calico-v1-policy-and-routing.md` 1.2, 1.3), camelCase as users write them, and their
//! conversion to and from the stored v1 model.
//!
//! Rules carry the fields the node agent enforces: `action` (allow, deny), `ipVersion`,
//! `protocol`, `notProtocol`, `icmp`, `notICMP`, and per side `tag`, `net`, `notNet`,
//! `selector`, `notSelector`, `ports`, `notPorts`. Any other field is refused by name rather
//! than silently ignored.

use std::net::IpAddr;

use calico_core::model::{Action, LabelMap, PortRange, Protocol, Rule};
use calico_core::selector::Selector;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `icmp: {type: 8, code: 0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Icmp {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// One side of a rule (`source` or `destination`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_net: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<PortRange>,
}

impl EntityRule {
    fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// A rule as calicoctl 1.x reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiRule {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<Icmp>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
}

impl ApiRule {
    /// The stored rule, validated as the agent would.
    ///
    /// # Errors
    /// An action other than allow or deny, or what `Rule::validate` refuses.
    pub fn to_model(&self) -> Result<Rule, String> {
        let action = match self.action.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            "log" | "pass" => {
                return Err(format!(
                    "action {:?} is not supported by this agent (allow or deny)",
                    self.action
                ))
            }
            other => return Err(format!("action {other:?} must be allow or deny")),
        };
        let mut rule = Rule {
            action,
            protocol: self.protocol,
            not_protocol: self.not_protocol,
            ip_version: self.ip_version,
            icmp_type: self.icmp.as_ref().map(|i| i.icmp_type),
            icmp_code: self.icmp.as_ref().and_then(|i| i.code),
            not_icmp_type: self.not_icmp.as_ref().map(|i| i.icmp_type),
            not_icmp_code: self.not_icmp.as_ref().and_then(|i| i.code),
            src_tag: self.source.tag.clone(),
            src_net: self.source.net,
            not_src_net: self.source.not_net,
            src_selector: self.source.selector.clone(),
            not_src_selector: self.source.not_selector.clone(),
            src_ports: self.source.ports.clone(),
            not_src_ports: self.source.not_ports.clone(),
            dst_tag: self.destination.tag.clone(),
            dst_net: self.destination.net,
            not_dst_net: self.destination.not_net,
            dst_selector: self.destination.selector.clone(),
            not_dst_selector: self.destination.not_selector.clone(),
            dst_ports: self.destination.ports.clone(),
            not_dst_ports: self.destination.not_ports.clone(),
        };
        rule.validate().map_err(|e| e.to_string())?;
        Ok(rule)
    }

    /// The API form of a stored rule.
    pub fn from_model(rule: &Rule) -> Self {
        ApiRule {
            action: match rule.action {
                Action::Allow => "allow".into(),
                Action::Deny => "deny".into(),
            },
            ip_version: rule.ip_version,
            protocol: rule.protocol,
            not_protocol: rule.not_protocol,
            icmp: rule.icmp_type.map(|t| Icmp {
                icmp_type: t,
                code: rule.icmp_code,
            }),
            not_icmp: rule.not_icmp_type.map(|t| Icmp {
                icmp_type: t,
                code: rule.not_icmp_code,
            }),
            source: EntityRule {
                tag: rule.src_tag.clone(),
                net: rule.src_net,
                not_net: rule.not_src_net,
                selector: rule.src_selector.clone(),
                not_selector: rule.not_src_selector.clone(),
                ports: rule.src_ports.clone(),
                not_ports: rule.not_src_ports.clone(),
            },
            destination: EntityRule {
                tag: rule.dst_tag.clone(),
                net: rule.dst_net,
                not_net: rule.not_dst_net,
                selector: rule.dst_selector.clone(),
                not_selector: rule.not_dst_selector.clone(),
                ports: rule.dst_ports.clone(),
                not_ports: rule.not_dst_ports.clone(),
            },
        }
    }
}

/// Converts a list of API rules, naming the failing one (`ingress[2]`).
pub fn rules_to_model(list: &[ApiRule], what: &str) -> Result<Vec<Rule>, String> {
    list.iter()
        .enumerate()
        .map(|(i, r)| r.to_model().map_err(|e| format!("{what}[{i}]: {e}")))
        .collect()
}

pub fn rules_from_model(list: &[Rule]) -> Vec<ApiRule> {
    list.iter().map(ApiRule::from_model).collect()
}

pub fn is_empty_labels(l: &LabelMap) -> bool {
    l.is_empty()
}

/// The address of an `ip/prefix` or bare IP (node BGP addresses take either).
pub fn address_of(text: &str) -> Result<(IpAddr, Option<IpNet>), String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok((net.addr(), Some(net.trunc())));
    }
    text.parse::<IpAddr>()
        .map(|ip| (ip, None))
        .map_err(|_| format!("{text:?} is not an IP address or IP/prefix"))
}
