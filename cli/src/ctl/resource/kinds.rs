//! The seven resource kinds of calicoctl 1.x and where each is stored in the v1 layout
//! (reference `calico-v1-policy-and-routing.md` 2), so the 0.x commands and the resource
//! commands see the same data.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use calico_core::codec::Value;
use calico_core::keys::{IpVersion, Key};
use calico_core::model::{
    validate_labels, validate_policy_name, AsNumber, BgpPeer, EndpointId, EndpointState,
    HostEndpoint, HostEndpointId, IpPool, LabelMap, MacAddr, Order, Policy, PolicyType, Rules,
    WorkloadEndpoint,
};
use calico_core::names::{validate_hostname, validate_name};
use calico_core::selector::Selector;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_norway::Value as Yaml;

use super::api::{address_of, is_empty_labels, rules_from_model, rules_to_model, ApiRule};

/// Every kind, as files spell it.
pub const KINDS: [&str; 7] = [
    "policy",
    "profile",
    "workloadEndpoint",
    "hostEndpoint",
    "ipPool",
    "bgpPeer",
    "node",
];

/// `{apiVersion, kind, metadata, spec}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope<M, S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: M,
    pub spec: S,
}

impl<M, S> Envelope<M, S> {
    fn new(kind: &str, metadata: M, spec: S) -> Self {
        Envelope {
            api_version: "v1".into(),
            kind: kind.into(),
            metadata,
            spec,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<ApiRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<ApiRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_empty_labels")]
    pub labels: LabelMap,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<ApiRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<ApiRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WepMeta {
    pub name: String,
    pub workload: String,
    pub orchestrator: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "is_empty_labels")]
    pub labels: LabelMap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WepSpec {
    #[serde(default)]
    pub ip_networks: Vec<IpNet>,
    #[serde(default)]
    pub profiles: Vec<String>,
    pub interface_name: String,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HepMeta {
    pub name: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "is_empty_labels")]
    pub labels: LabelMap,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HepSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrMeta {
    pub cidr: IpNet,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipip {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// Our extension, shaped like `ipip`: cross-host traffic of the pool goes through VXLAN.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vxlan {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip: Option<Ipip>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<Vxlan>,
    #[serde(default, rename = "nat-outgoing")]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Node,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerMeta {
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(rename = "peerIP")]
    pub peer_ip: IpAddr,
}

/// An AS number as a number or as dotted `a.b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Asn {
    Number(u32),
    Text(String),
}

impl Asn {
    fn parse(&self) -> Result<AsNumber, String> {
        let text = match self {
            Asn::Number(n) => n.to_string(),
            Asn::Text(t) => t.clone(),
        };
        AsNumber::from_str(&text).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerSpec {
    pub as_number: Asn,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeBgp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<Asn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgp>,
}

/// A node's stored BGP records: its addresses, their subnets, its AS.
#[derive(Debug, Clone, Default)]
pub struct NodeRecords {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    pub v4_net: Option<IpNet>,
    pub v6_net: Option<IpNet>,
    pub asn: Option<AsNumber>,
}

/// A parsed resource of any kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    Policy(Envelope<NameMeta, PolicySpec>),
    Profile(Envelope<ProfileMeta, ProfileSpec>),
    WorkloadEndpoint(Envelope<WepMeta, WepSpec>),
    HostEndpoint(Envelope<HepMeta, HepSpec>),
    IpPool(Envelope<CidrMeta, PoolSpec>),
    BgpPeer(Envelope<PeerMeta, PeerSpec>),
    Node(Envelope<NameMeta, NodeSpec>),
}

/// Where a resource lives: the key whose presence says it exists, what writing it puts (and
/// removes), and every key deleting it removes.
#[derive(Debug, Clone, PartialEq)]
pub struct Writes {
    pub primary: Key,
    pub puts: Vec<(Key, Value)>,
    pub removes: Vec<Key>,
}

impl Writes {
    fn one(key: Key, value: Value) -> Self {
        Writes {
            primary: key.clone(),
            puts: vec![(key, value)],
            removes: vec![],
        }
    }

    /// Every key the resource owns (deleted with it).
    pub fn owned(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.puts.iter().map(|(k, _)| k.clone()).collect();
        keys.extend(self.removes.iter().cloned());
        keys.retain(|k| !matches!(k, Key::GlobalConfig { .. }));
        keys
    }
}

macro_rules! each_kind {
    ($kind:expr, $parse:ident, $input:expr) => {
        match $kind {
            "policy" => $parse($input).map(Resource::Policy),
            "profile" => $parse($input).map(Resource::Profile),
            "workloadEndpoint" => $parse($input).map(Resource::WorkloadEndpoint),
            "hostEndpoint" => $parse($input).map(Resource::HostEndpoint),
            "ipPool" => $parse($input).map(Resource::IpPool),
            "bgpPeer" => $parse($input).map(Resource::BgpPeer),
            _ => $parse($input).map(Resource::Node),
        }
    };
}

fn text_of<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_norway::Error> {
    serde_norway::from_str(text)
}

fn value_of<T: serde::de::DeserializeOwned>(value: Yaml) -> Result<T, serde_norway::Error> {
    serde_norway::from_value(value)
}

impl Resource {
    /// The pool an `ipPool` resource writes (`None` for other kinds).
    pub fn pool(&self) -> Option<IpPool> {
        if !matches!(self, Resource::IpPool(_)) {
            return None;
        }
        self.writes()
            .ok()?
            .puts
            .into_iter()
            .find_map(|(_, v)| match v {
                Value::Pool(p) => Some(p),
                _ => None,
            })
    }

    /// The kind, as files spell it, when `kind` and `apiVersion` name one we know.
    ///
    /// # Errors
    /// The original's `Unknown resource type (<kind>) and/or version (<apiVersion>)`.
    pub fn check_envelope(
        kind: Option<&str>,
        version: Option<&str>,
    ) -> Result<&'static str, String> {
        let found = KINDS.iter().find(|k| Some(**k) == kind);
        match (found, version) {
            (Some(k), Some("v1")) => Ok(k),
            _ => Err(format!(
                "Unknown resource type ({}) and/or version ({}); kinds are {} with apiVersion v1",
                kind.unwrap_or(""),
                version.unwrap_or(""),
                KINDS.join(", ")
            )),
        }
    }

    /// Parses one document of kind `kind` strictly.
    ///
    /// # Errors
    /// The parser's error, naming the field and the line.
    pub fn from_text(kind: &str, text: &str) -> Result<Self, serde_norway::Error> {
        each_kind!(kind, text_of, text)
    }

    /// Parses an item of a sequence or list strictly.
    ///
    /// # Errors
    /// The parser's error, naming the field.
    pub fn from_value(kind: &str, value: Yaml) -> Result<Self, serde_norway::Error> {
        each_kind!(kind, value_of, value)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Policy(_) => "policy",
            Resource::Profile(_) => "profile",
            Resource::WorkloadEndpoint(_) => "workloadEndpoint",
            Resource::HostEndpoint(_) => "hostEndpoint",
            Resource::IpPool(_) => "ipPool",
            Resource::BgpPeer(_) => "bgpPeer",
            Resource::Node(_) => "node",
        }
    }

    /// The resource's identity as the original printed it: `Policy(name=p1)`.
    pub fn describe(&self) -> String {
        match self {
            Resource::Policy(r) => format!("Policy(name={})", r.metadata.name),
            Resource::Profile(r) => format!("Profile(name={})", r.metadata.name),
            Resource::WorkloadEndpoint(r) => format!(
                "WorkloadEndpoint(node={}, orchestrator={}, workload={}, name={})",
                r.metadata.node, r.metadata.orchestrator, r.metadata.workload, r.metadata.name
            ),
            Resource::HostEndpoint(r) => format!(
                "HostEndpoint(node={}, name={})",
                r.metadata.node, r.metadata.name
            ),
            Resource::IpPool(r) => format!("IPPool(cidr={})", r.metadata.cidr),
            Resource::BgpPeer(r) => match &r.metadata.node {
                Some(node) => format!("BGPPeer(node={node}, peerIP={})", r.metadata.peer_ip),
                None => format!("BGPPeer(scope=global, peerIP={})", r.metadata.peer_ip),
            },
            Resource::Node(r) => format!("Node(name={})", r.metadata.name),
        }
    }

    /// Checks everything writing the resource would store.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.writes().map(|_| ())
    }

    /// The stored form.
    ///
    /// # Errors
    /// As [`Resource::validate`].
    pub fn writes(&self) -> Result<Writes, String> {
        match self {
            Resource::Policy(r) => {
                validate_policy_name(&r.metadata.name).map_err(err("metadata.name"))?;
                let order = r
                    .spec
                    .order
                    .map(Order::new)
                    .transpose()
                    .map_err(err("spec.order"))?;
                let mut policy = Policy {
                    order,
                    inbound_rules: rules_to_model(&r.spec.ingress, "spec.ingress")?,
                    outbound_rules: rules_to_model(&r.spec.egress, "spec.egress")?,
                    selector: r.spec.selector.clone().unwrap_or_else(Selector::all),
                    annotations: r.metadata.annotations.clone(),
                    types: r.spec.types.clone(),
                };
                policy.validate().map_err(err("spec"))?;
                Ok(Writes::one(
                    Key::Policy {
                        name: r.metadata.name.clone(),
                    },
                    Value::Policy(policy),
                ))
            }
            Resource::Profile(r) => {
                let name = &r.metadata.name;
                validate_name("profile", name).map_err(err("metadata.name"))?;
                for tag in &r.metadata.tags {
                    validate_name("tag", tag).map_err(err("metadata.tags"))?;
                }
                validate_labels(&r.metadata.labels).map_err(err("metadata.labels"))?;
                let rules = Rules {
                    id: Some(name.clone()),
                    inbound_rules: rules_to_model(&r.spec.ingress, "spec.ingress")?,
                    outbound_rules: rules_to_model(&r.spec.egress, "spec.egress")?,
                };
                let profile = name.clone();
                Ok(Writes {
                    primary: Key::ProfileRules {
                        profile: profile.clone(),
                    },
                    puts: vec![
                        (
                            Key::ProfileTags {
                                profile: profile.clone(),
                            },
                            Value::Tags(r.metadata.tags.clone()),
                        ),
                        (
                            Key::ProfileRules {
                                profile: profile.clone(),
                            },
                            Value::Rules(rules),
                        ),
                        (
                            Key::ProfileLabels { profile },
                            Value::Labels(r.metadata.labels.clone()),
                        ),
                    ],
                    removes: vec![],
                })
            }
            Resource::WorkloadEndpoint(r) => {
                let m = &r.metadata;
                let id = EndpointId {
                    host: m.node.clone(),
                    orchestrator: m.orchestrator.clone(),
                    workload: m.workload.clone(),
                    endpoint: m.name.clone(),
                };
                id.validate().map_err(err("metadata"))?;
                let mut ep = WorkloadEndpoint {
                    state: EndpointState::Active,
                    name: r.spec.interface_name.clone(),
                    mac: r.spec.mac,
                    profile_ids: r.spec.profiles.clone(),
                    ipv4_nets: vec![],
                    ipv6_nets: vec![],
                    labels: m.labels.clone(),
                    ipv4_gateway: r.spec.ipv4_gateway,
                    ipv6_gateway: r.spec.ipv6_gateway,
                };
                for net in &r.spec.ip_networks {
                    match net {
                        IpNet::V4(n) if n.prefix_len() == 32 => ep.ipv4_nets.push(*n),
                        IpNet::V6(n) if n.prefix_len() == 128 => ep.ipv6_nets.push(*n),
                        _ => return Err(format!("spec.ipNetworks: {net} must be a /32 or /128")),
                    }
                }
                ep.validate().map_err(err("spec"))?;
                Ok(Writes::one(Key::Endpoint(id), Value::Endpoint(ep)))
            }
            Resource::HostEndpoint(r) => {
                let id = HostEndpointId {
                    host: r.metadata.node.clone(),
                    endpoint: r.metadata.name.clone(),
                };
                id.validate().map_err(err("metadata"))?;
                let mut hep = HostEndpoint {
                    name: r.spec.interface_name.clone(),
                    labels: r.metadata.labels.clone(),
                    profile_ids: r.spec.profiles.clone(),
                    ..HostEndpoint::default()
                };
                for ip in &r.spec.expected_ips {
                    match ip {
                        IpAddr::V4(a) => hep.expected_ipv4_addrs.push(*a),
                        IpAddr::V6(a) => hep.expected_ipv6_addrs.push(*a),
                    }
                }
                hep.validate().map_err(|e| {
                    let msg = e.to_string();
                    if msg.contains("no interface or expected IPs") {
                        "spec: no interface or expected IPs have been specified".to_string()
                    } else {
                        format!("spec: {msg}")
                    }
                })?;
                Ok(Writes::one(Key::HostEndpoint(id), Value::HostEndpoint(hep)))
            }
            Resource::IpPool(r) => {
                let cidr = r.metadata.cidr;
                if cidr.trunc() != cidr {
                    return Err(format!(
                        "metadata.cidr: {cidr} has host bits set (did you mean {}?)",
                        cidr.trunc()
                    ));
                }
                let ipip = r.spec.ipip.as_ref().is_some_and(|i| i.enabled);
                if let Some(i) = &r.spec.ipip {
                    if !matches!(i.mode.as_str(), "" | "always") {
                        return Err(format!(
                            "spec.ipip.mode: {:?} is not supported (always)",
                            i.mode
                        ));
                    }
                }
                let pool = IpPool {
                    cidr,
                    ipip: ipip.then(|| "tunl0".to_string()),
                    vxlan: r.spec.vxlan.as_ref().is_some_and(|v| v.enabled),
                    masquerade: r.spec.nat_outgoing,
                    ipam: !r.spec.disabled,
                    disabled: r.spec.disabled,
                };
                pool.validate().map_err(err(if pool.vxlan {
                    "spec.vxlan"
                } else {
                    "metadata.cidr"
                }))?;
                let mut writes = Writes::one(Key::Pool { cidr }, Value::Pool(pool));
                if ipip {
                    // As libcalico-go did: an IPIP pool turns IPIP on for Felix (never off).
                    writes.puts.push((
                        Key::GlobalConfig {
                            name: "IpInIpEnabled".into(),
                        },
                        Value::Config("true".into()),
                    ));
                }
                Ok(writes)
            }
            Resource::BgpPeer(r) => {
                let m = &r.metadata;
                let as_num = r
                    .spec
                    .as_number
                    .parse()
                    .map_err(|e| format!("spec.asNumber: {e}"))?;
                let peer = Value::Peer(BgpPeer {
                    ip: m.peer_ip,
                    as_num,
                });
                let key = match (m.scope, &m.node) {
                    (Scope::Global, None) => Key::GlobalPeer { ip: m.peer_ip },
                    (Scope::Node, Some(node)) => {
                        validate_hostname(node).map_err(err("metadata.node"))?;
                        Key::HostPeer {
                            host: node.clone(),
                            ip: m.peer_ip,
                        }
                    }
                    (Scope::Global, Some(_)) => {
                        return Err("metadata.node: must be empty for scope global".into())
                    }
                    (Scope::Node, None) => {
                        return Err("metadata.node: required for scope node".into())
                    }
                };
                Ok(Writes::one(key, peer))
            }
            Resource::Node(r) => node_writes(&r.metadata.name, &r.spec),
        }
    }
}

/// Names the field a model error is about.
fn err(field: &'static str) -> impl Fn(calico_core::ModelError) -> String {
    move |e| format!("{field}: {e}")
}

fn node_writes(host: &str, spec: &NodeSpec) -> Result<Writes, String> {
    validate_hostname(host).map_err(|e| format!("metadata.name: {e}"))?;
    let h = host.to_string();
    let v4_key = Key::HostIp {
        host: h.clone(),
        version: IpVersion::V4,
    };
    let v6_key = Key::HostIp {
        host: h.clone(),
        version: IpVersion::V6,
    };
    let bird = Key::BirdIp { host: h.clone() };
    let as_key = Key::HostAsNum { host: h.clone() };
    let bgp = spec.bgp.clone().unwrap_or_default();
    type Address = (Option<IpAddr>, Option<IpNet>);
    let addr = |text: &Option<String>, field: &str, v6: bool| -> Result<Address, String> {
        let Some(text) = text else {
            return Ok((None, None));
        };
        let (ip, net) = address_of(text).map_err(|e| format!("spec.bgp.{field}: {e}"))?;
        if ip.is_ipv6() != v6 {
            return Err(format!("spec.bgp.{field}: {ip} is of the wrong IP version"));
        }
        Ok((Some(ip), net))
    };
    let (v4, v4_net) = addr(&bgp.ipv4_address, "ipv4Address", false)?;
    let (v6, v6_net) = addr(&bgp.ipv6_address, "ipv6Address", true)?;
    if spec.bgp.is_some() && v4.is_none() && v6.is_none() {
        return Err("spec.bgp: at least one of ipv4Address and ipv6Address is required".into());
    }
    let mut writes = Writes {
        primary: v4_key.clone(),
        puts: vec![(v4_key, Value::HostIp(v4)), (v6_key, Value::HostIp(v6))],
        removes: vec![],
    };
    // The prefix (calicoctl 1.x `10.0.0.1/24`) is the host's subnet, kept beside the address
    // as calico 2.1+ did (`network_v4`); a bare address has none.
    for (net, version) in [(v4_net, IpVersion::V4), (v6_net, IpVersion::V6)] {
        let key = Key::HostNetwork {
            host: h.clone(),
            version,
        };
        match net {
            Some(net) => writes.puts.push((key, Value::HostNetwork(net))),
            None => writes.removes.push(key),
        }
    }
    match v4 {
        Some(IpAddr::V4(ip)) => writes.puts.push((bird, Value::BirdIp(ip))),
        _ => writes.removes.push(bird),
    }
    match bgp.as_number {
        Some(asn) => {
            let asn = asn.parse().map_err(|e| format!("spec.bgp.asNumber: {e}"))?;
            writes.puts.push((as_key, Value::AsNum(asn)));
        }
        None => writes.removes.push(as_key),
    }
    Ok(writes)
}

/// A workload endpoint's API form.
pub fn wep_resource(id: &EndpointId, ep: &WorkloadEndpoint) -> Resource {
    Resource::WorkloadEndpoint(Envelope::new(
        "workloadEndpoint",
        WepMeta {
            name: id.endpoint.clone(),
            workload: id.workload.clone(),
            orchestrator: id.orchestrator.clone(),
            node: id.host.clone(),
            labels: ep.labels.clone(),
        },
        WepSpec {
            ip_networks: ep.nets().collect(),
            profiles: ep.profile_ids.clone(),
            interface_name: ep.name.clone(),
            mac: ep.mac,
            ipv4_gateway: ep.ipv4_gateway,
            ipv6_gateway: ep.ipv6_gateway,
        },
    ))
}

pub fn policy_resource(name: &str, p: &Policy) -> Resource {
    Resource::Policy(Envelope::new(
        "policy",
        NameMeta {
            name: name.to_string(),
            annotations: p.annotations.clone(),
        },
        PolicySpec {
            order: p.order.map(Order::value),
            selector: Some(p.selector.clone()),
            ingress: rules_from_model(&p.inbound_rules),
            egress: rules_from_model(&p.outbound_rules),
            types: p.types.clone(),
        },
    ))
}

pub fn profile_resource(
    name: &str,
    tags: Vec<String>,
    labels: LabelMap,
    rules: Option<&Rules>,
) -> Resource {
    Resource::Profile(Envelope::new(
        "profile",
        ProfileMeta {
            name: name.to_string(),
            tags,
            labels,
        },
        ProfileSpec {
            ingress: rules
                .map(|r| rules_from_model(&r.inbound_rules))
                .unwrap_or_default(),
            egress: rules
                .map(|r| rules_from_model(&r.outbound_rules))
                .unwrap_or_default(),
        },
    ))
}

pub fn hep_resource(id: &HostEndpointId, hep: &HostEndpoint) -> Resource {
    Resource::HostEndpoint(Envelope::new(
        "hostEndpoint",
        HepMeta {
            name: id.endpoint.clone(),
            node: id.host.clone(),
            labels: hep.labels.clone(),
        },
        HepSpec {
            interface_name: hep.name.clone(),
            expected_ips: hep.expected_ips().collect(),
            profiles: hep.profile_ids.clone(),
        },
    ))
}

pub fn pool_resource(pool: &IpPool) -> Resource {
    Resource::IpPool(Envelope::new(
        "ipPool",
        CidrMeta { cidr: pool.cidr },
        PoolSpec {
            ipip: pool.ipip.as_ref().map(|_| Ipip {
                enabled: true,
                mode: String::new(),
            }),
            vxlan: pool.vxlan.then_some(Vxlan { enabled: true }),
            nat_outgoing: pool.masquerade,
            disabled: pool.disabled,
        },
    ))
}

pub fn peer_resource(node: Option<&str>, peer: &BgpPeer) -> Resource {
    Resource::BgpPeer(Envelope::new(
        "bgpPeer",
        PeerMeta {
            scope: if node.is_some() {
                Scope::Node
            } else {
                Scope::Global
            },
            node: node.map(str::to_string),
            peer_ip: peer.ip,
        },
        PeerSpec {
            as_number: Asn::Number(peer.as_num.0),
        },
    ))
}

pub fn node_resource(name: &str, records: &NodeRecords) -> Resource {
    // With its subnet's prefix when one is stored, as it was written.
    let shown = |ip: Option<IpAddr>, net: Option<IpNet>| {
        ip.map(|ip| match net {
            Some(net) if net.contains(&ip) => format!("{ip}/{}", net.prefix_len()),
            _ => ip.to_string(),
        })
    };
    let bgp = (records.v4.is_some() || records.v6.is_some()).then(|| NodeBgp {
        as_number: records.asn.map(|a| Asn::Number(a.0)),
        ipv4_address: shown(records.v4, records.v4_net),
        ipv6_address: shown(records.v6, records.v6_net),
    });
    Resource::Node(Envelope::new(
        "node",
        NameMeta {
            name: name.to_string(),
            annotations: BTreeMap::new(),
        },
        NodeSpec { bgp },
    ))
}
