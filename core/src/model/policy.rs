//! Selector policies (reference 1.2, 2): `/calico/v1/policy/tier/default/policy/<name>` =
//! `{"order":100,"inbound_rules":[..],"outbound_rules":[..],"selector":"role == 'db'"}`.
//!
//! A policy applies to every endpoint its selector matches; policies run in `order` (absent:
//! last), then by name; the first rule that matches in any of them decides, and when at least
//! one policy applied and none decided, the packet is dropped.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::labels::LabelMap;
use super::Rule;
use crate::names::validate_name;
use crate::selector::Selector;
use crate::ModelError;

/// A policy's `order`: a finite number; lower runs first.
#[derive(Debug, Clone, Copy)]
pub struct Order(f64);

impl Order {
    /// # Errors
    /// `InvalidField` when `value` is NaN or infinite.
    pub fn new(value: f64) -> Result<Self, ModelError> {
        if value.is_finite() {
            Ok(Order(value))
        } else {
            Err(ModelError::field("order", value, "must be a finite number"))
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

impl PartialEq for Order {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Order {}

impl PartialOrd for Order {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Order {
    fn cmp(&self, other: &Self) -> Ordering {
        // -0.0 and 0.0 are one order.
        (self.0 + 0.0).total_cmp(&(other.0 + 0.0))
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whole orders are written as integers (`100`, as Go's encoder writes a whole float64).
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Serialize for Order {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < MAX_EXACT_INT {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Order::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Which directions a policy governs (`types`, Calico 2.6); empty means both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// A selector policy in tier `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_rules: Vec<Rule>,
    /// Always written, `""` meaning `all()`.
    pub selector: Selector,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
}

impl Policy {
    /// Validates every rule in place and the `types` list (no duplicates).
    ///
    /// # Errors
    /// The first bad rule field or a duplicate type.
    pub fn validate(&mut self) -> Result<(), ModelError> {
        for rule in self
            .inbound_rules
            .iter_mut()
            .chain(&mut self.outbound_rules)
        {
            rule.validate()?;
        }
        let mut seen = Vec::new();
        for t in &self.types {
            if seen.contains(t) {
                return Err(ModelError::field(
                    "types",
                    format!("{t:?}").to_lowercase(),
                    "is listed twice",
                ));
            }
            seen.push(*t);
        }
        Ok(())
    }

    /// Whether the policy governs traffic in `direction` (empty `types` governs both).
    pub fn governs(&self, direction: PolicyType) -> bool {
        self.types.is_empty() || self.types.contains(&direction)
    }
}

/// The order policies run in: `order` ascending with absent last, then name byte-wise.
pub fn policy_order(a: (&str, &Policy), b: (&str, &Policy)) -> Ordering {
    let key = |o: Option<Order>| (o.is_none(), o);
    key(a.1.order)
        .cmp(&key(b.1.order))
        .then_with(|| a.0.cmp(b.0))
}

/// Validates a policy name (`[a-zA-Z0-9_.-]{1,128}`).
///
/// # Errors
/// `InvalidName` naming the policy.
pub fn validate_policy_name(name: &str) -> Result<(), ModelError> {
    validate_name("policy", name)
}

/// Labels of a profile: `/calico/v1/policy/profile/<name>/labels`.
pub type ProfileLabels = LabelMap;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_references_example_round_trips() {
        let raw = r#"{"inbound_rules":[{"action":"allow","protocol":"tcp","src_selector":"role == 'frontend'","dst_ports":[6379]}],"outbound_rules":[{"action":"allow"}],"selector":"role == 'database'","types":["ingress","egress"]}"#;
        let mut p: Policy = serde_json::from_str(raw).unwrap();
        p.validate().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains(r#""selector":"role == 'database'""#),
            "{json}"
        );
        assert!(
            json.contains(r#""src_selector":"role == 'frontend'""#),
            "{json}"
        );
        let ordered: Policy = serde_json::from_str(r#"{"order":100,"selector":""}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ordered).unwrap(),
            r#"{"order":100,"selector":""}"#
        );
    }

    #[test]
    fn bad_policies_name_the_field() {
        for (raw, field) in [
            (r#"{"selector":"a = 'b'"}"#, "column 3"),
            (r#"{"selector":"","bogus":1}"#, "bogus"),
            (r#"{"selector":"","types":["sideways"]}"#, "sideways"),
        ] {
            let err = serde_json::from_str::<Policy>(raw).unwrap_err();
            assert!(err.to_string().contains(field), "{raw}: {err}");
        }
        let mut dup: Policy =
            serde_json::from_str(r#"{"selector":"","types":["ingress","ingress"]}"#).unwrap();
        assert!(dup.validate().unwrap_err().to_string().contains("types"));
    }

    #[test]
    fn policies_sort_by_order_absent_last_then_name() {
        let p = |order: Option<f64>| Policy {
            order: order.map(|o| Order::new(o).unwrap()),
            inbound_rules: vec![],
            outbound_rules: vec![],
            selector: Selector::all(),
            annotations: BTreeMap::new(),
            types: vec![],
        };
        let mut list = [
            ("z", p(None)),
            ("b", p(Some(10.0))),
            ("a", p(Some(10.0))),
            ("c", p(Some(-1.5))),
            ("y", p(None)),
        ];
        list.sort_by(|a, b| policy_order((a.0, &a.1), (b.0, &b.1)));
        let names: Vec<&str> = list.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["c", "a", "b", "y", "z"]);
    }
}
