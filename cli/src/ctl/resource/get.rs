//! `get KIND [NAME]`: resources read back from the v1 layout, printed as the original did:
//! a table (`ps`) by default, or `-o yaml|json` as a list that is valid input again.

use std::collections::BTreeMap;

use calico_backends::Datastore;
use calico_core::codec::Value;
use calico_core::keys::{IpVersion, Key, BGP_V1, V1};
use calico_core::model::{AsNumber, LabelMap, Rules};

use super::kinds::{self, Resource};
use crate::ctl::output::Table;
use crate::ctl::{Args, CtlError};

/// Every stored resource of `kind` (named `name`, when given), in key order.
///
/// # Errors
/// A datastore failure or an undecodable record (named by its key).
pub async fn list(
    ds: &Datastore,
    a: &Args,
    kind: &str,
    name: Option<&str>,
) -> Result<Vec<Resource>, CtlError> {
    let node = a.value("node");
    let named = |n: &str| name.is_none_or(|want| want == n);
    let on_node = |h: &str| node.is_none_or(|want| want == h);
    let mut out = Vec::new();
    match kind {
        "policy" => {
            for (key, v) in ds.list(&Key::policy_dir()).await? {
                if let (Key::Policy { name: n }, Value::Policy(p)) = (key, v.value) {
                    if named(&n) {
                        out.push(kinds::policy_resource(&n, &p));
                    }
                }
            }
        }
        "profile" => {
            let mut profiles: BTreeMap<String, (Vec<String>, LabelMap, Option<Rules>)> =
                BTreeMap::new();
            for (key, v) in ds.list(&format!("{V1}policy/profile/")).await? {
                match (key, v.value) {
                    (Key::ProfileTags { profile }, Value::Tags(t)) => {
                        profiles.entry(profile).or_default().0 = t;
                    }
                    (Key::ProfileLabels { profile }, Value::Labels(l)) => {
                        profiles.entry(profile).or_default().1 = l;
                    }
                    (Key::ProfileRules { profile }, Value::Rules(r)) => {
                        profiles.entry(profile).or_default().2 = Some(r);
                    }
                    _ => {}
                }
            }
            for (n, (tags, labels, rules)) in profiles {
                if named(&n) {
                    out.push(kinds::profile_resource(&n, tags, labels, rules.as_ref()));
                }
            }
        }
        "workloadEndpoint" | "hostEndpoint" => {
            for (key, v) in ds.list(&format!("{V1}host/")).await? {
                match (key, v.value) {
                    (Key::Endpoint(id), Value::Endpoint(ep)) if kind == "workloadEndpoint" => {
                        let wanted = named(&id.endpoint)
                            && on_node(&id.host)
                            && a.value("workload").is_none_or(|w| w == id.workload)
                            && a.value("orchestrator").is_none_or(|o| o == id.orchestrator);
                        if wanted {
                            out.push(kinds::wep_resource(&id, &ep));
                        }
                    }
                    (Key::HostEndpoint(id), Value::HostEndpoint(hep))
                        if kind == "hostEndpoint" && named(&id.endpoint) && on_node(&id.host) =>
                    {
                        out.push(kinds::hep_resource(&id, &hep));
                    }
                    _ => {}
                }
            }
        }
        "ipPool" => {
            for (key, v) in ds.list(&format!("{V1}ipam/")).await? {
                if let (Key::Pool { cidr }, Value::Pool(p)) = (key, v.value) {
                    if named(&cidr.to_string()) {
                        out.push(kinds::pool_resource(&p));
                    }
                }
            }
        }
        "bgpPeer" => {
            for (key, v) in ds.list(BGP_V1).await? {
                match (key, v.value) {
                    (Key::GlobalPeer { ip }, Value::Peer(p))
                        if node.is_none() && named(&ip.to_string()) =>
                    {
                        out.push(kinds::peer_resource(None, &p));
                    }
                    (Key::HostPeer { host, ip }, Value::Peer(p))
                        if named(&ip.to_string()) && on_node(&host) =>
                    {
                        out.push(kinds::peer_resource(Some(&host), &p));
                    }
                    _ => {}
                }
            }
        }
        _ => {
            let mut nodes: BTreeMap<String, kinds::NodeRecords> = BTreeMap::new();
            // A subnet alone makes no node: it only completes an address.
            let mut networks = Vec::new();
            for (key, v) in ds.list(&format!("{BGP_V1}host/")).await? {
                match (key, v.value) {
                    (Key::HostIp { host, version }, Value::HostIp(ip)) => {
                        let entry = nodes.entry(host).or_default();
                        match version {
                            IpVersion::V4 => entry.v4 = ip,
                            IpVersion::V6 => entry.v6 = ip,
                        }
                    }
                    (Key::HostNetwork { host, version }, Value::HostNetwork(net)) => {
                        networks.push((host, version, net));
                    }
                    (Key::HostAsNum { host }, Value::AsNum(asn)) => {
                        nodes.entry(host).or_default().asn = Some(asn);
                    }
                    _ => {}
                }
            }
            for (host, version, net) in networks {
                if let Some(entry) = nodes.get_mut(&host) {
                    match version {
                        IpVersion::V4 => entry.v4_net = Some(net),
                        IpVersion::V6 => entry.v6_net = Some(net),
                    }
                }
            }
            for (n, records) in nodes {
                if named(&n) {
                    out.push(kinds::node_resource(&n, &records));
                }
            }
        }
    }
    Ok(out)
}

/// Prints resources as a table (`ps`, or `wide` with more columns), YAML or JSON.
/// `default_as` is the global AS number a node without its own shows in `wide`.
///
/// # Errors
/// An output format other than ps, wide, yaml or json.
pub fn render(
    kind: &str,
    found: &[Resource],
    format: Option<&str>,
    default_as: Option<AsNumber>,
) -> Result<String, CtlError> {
    match format {
        Some("yaml") => serde_norway::to_string(found).map_err(|e| CtlError::BadArgument {
            what: "output",
            value: "yaml".into(),
            reason: e.to_string(),
        }),
        Some("json") => Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(found).unwrap_or_default()
        )),
        None | Some("ps") | Some("table") => Ok(table(kind, found)),
        Some("wide") => Ok(wide_table(kind, found, default_as)),
        Some(other) => Err(CtlError::BadArgument {
            what: "output format",
            value: other.to_string(),
            reason: "expected ps, wide, yaml or json".into(),
        }),
    }
}

fn table(kind: &str, found: &[Resource]) -> String {
    let header: &[&str] = match kind {
        "workloadEndpoint" => &["NODE", "ORCHESTRATOR", "WORKLOAD", "NAME"],
        "hostEndpoint" => &["NODE", "NAME"],
        "ipPool" => &["CIDR"],
        "bgpPeer" => &["SCOPE", "PEERIP", "NODE", "ASN"],
        _ => &["NAME"],
    };
    let mut t = Table::new(header);
    for r in found {
        let row = match r {
            Resource::Policy(p) => vec![p.metadata.name.clone()],
            Resource::Profile(p) => vec![p.metadata.name.clone()],
            Resource::WorkloadEndpoint(w) => vec![
                w.metadata.node.clone(),
                w.metadata.orchestrator.clone(),
                w.metadata.workload.clone(),
                w.metadata.name.clone(),
            ],
            Resource::HostEndpoint(h) => vec![h.metadata.node.clone(), h.metadata.name.clone()],
            Resource::IpPool(p) => vec![p.metadata.cidr.to_string()],
            Resource::BgpPeer(b) => vec![
                match b.metadata.scope {
                    kinds::Scope::Global => "global".into(),
                    kinds::Scope::Node => "node".into(),
                },
                b.metadata.peer_ip.to_string(),
                b.metadata.node.clone().unwrap_or_default(),
                match &b.spec.as_number {
                    kinds::Asn::Number(n) => n.to_string(),
                    kinds::Asn::Text(t) => t.clone(),
                },
            ],
            Resource::Node(n) => vec![n.metadata.name.clone()],
        };
        t.row(row);
    }
    format!("{}\n", t.render())
}

/// `-o wide`: calicoctl 1.x's wide columns per kind (reference 1.4); lists joined by commas.
fn wide_table(kind: &str, found: &[Resource], default_as: Option<AsNumber>) -> String {
    let header: &[&str] = match kind {
        "policy" => &["NAME", "ORDER", "SELECTOR"],
        "profile" => &["NAME", "TAGS"],
        "workloadEndpoint" => &[
            "NODE",
            "ORCHESTRATOR",
            "WORKLOAD",
            "NAME",
            "NETWORKS",
            "NATS",
            "INTERFACE",
            "PROFILES",
        ],
        "hostEndpoint" => &["NODE", "NAME", "INTERFACE", "IPS", "PROFILES"],
        "ipPool" => &["CIDR", "NAT", "IPIP"],
        "bgpPeer" => return table(kind, found),
        _ => &["NAME", "ASN", "IPV4", "IPV6"],
    };
    let join = |items: Vec<String>| items.join(",");
    let mut t = Table::new(header);
    for r in found {
        let row = match r {
            Resource::Policy(p) => vec![
                p.metadata.name.clone(),
                p.spec.order.map(|o| o.to_string()).unwrap_or_default(),
                p.spec
                    .selector
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            ],
            Resource::Profile(p) => vec![p.metadata.name.clone(), join(p.metadata.tags.clone())],
            Resource::WorkloadEndpoint(w) => vec![
                w.metadata.node.clone(),
                w.metadata.orchestrator.clone(),
                w.metadata.workload.clone(),
                w.metadata.name.clone(),
                join(w.spec.ip_networks.iter().map(|n| n.to_string()).collect()),
                // 1:1 NAT is not modelled: the column is always empty.
                String::new(),
                w.spec.interface_name.clone(),
                join(w.spec.profiles.clone()),
            ],
            Resource::HostEndpoint(h) => vec![
                h.metadata.node.clone(),
                h.metadata.name.clone(),
                h.spec.interface_name.clone().unwrap_or_default(),
                join(
                    h.spec
                        .expected_ips
                        .iter()
                        .map(|ip| ip.to_string())
                        .collect(),
                ),
                join(h.spec.profiles.clone()),
            ],
            Resource::IpPool(p) => vec![
                p.metadata.cidr.to_string(),
                p.spec.nat_outgoing.to_string(),
                p.spec.ipip.as_ref().is_some_and(|i| i.enabled).to_string(),
            ],
            Resource::BgpPeer(_) => continue,
            Resource::Node(n) => {
                let bgp = n.spec.bgp.clone().unwrap_or_default();
                let asn = match (&bgp.as_number, default_as) {
                    (Some(kinds::Asn::Number(a)), _) => a.to_string(),
                    (Some(kinds::Asn::Text(a)), _) => a.clone(),
                    // Inherited from the global value, in parentheses as calicoctl printed it.
                    (None, Some(global)) => format!("({})", global.0),
                    (None, None) => String::new(),
                };
                vec![
                    n.metadata.name.clone(),
                    asn,
                    bgp.ipv4_address.unwrap_or_default(),
                    bgp.ipv6_address.unwrap_or_default(),
                ]
            }
        };
        t.row(row);
    }
    format!("{}\n", t.render())
}
