//! `get KIND [NAME]`: resources read back from the v1 layout, printed as the original did:
//! a table (`ps`) by default, or `-o yaml|json` as a list that is valid input again.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_backends::Datastore;
use calico_core::codec::Value;
use calico_core::keys::{Key, BGP_V1, V1};
use calico_core::model::{AsNumber, LabelMap, Rules};

use super::kinds::{self, Resource};
use crate::ctl::output::Table;
use crate::ctl::{Args, CtlError};

/// A node's BGP records: IPv4, IPv6, AS.
type NodeBgp = (Option<IpAddr>, Option<IpAddr>, Option<AsNumber>);

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
            let mut nodes: BTreeMap<String, NodeBgp> = BTreeMap::new();
            for (key, v) in ds.list(&format!("{BGP_V1}host/")).await? {
                match (key, v.value) {
                    (Key::HostIp { host, version }, Value::HostIp(ip)) => {
                        let entry = nodes.entry(host).or_default();
                        match version {
                            calico_core::keys::IpVersion::V4 => entry.0 = ip,
                            calico_core::keys::IpVersion::V6 => entry.1 = ip,
                        }
                    }
                    (Key::HostAsNum { host }, Value::AsNum(asn)) => {
                        nodes.entry(host).or_default().2 = Some(asn);
                    }
                    _ => {}
                }
            }
            for (n, (v4, v6, asn)) in nodes {
                if named(&n) {
                    out.push(kinds::node_resource(&n, v4, v6, asn));
                }
            }
        }
    }
    Ok(out)
}

/// Prints resources as a table, YAML or JSON.
///
/// # Errors
/// An output format other than ps, yaml or json.
pub fn render(kind: &str, found: &[Resource], format: Option<&str>) -> Result<String, CtlError> {
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
        Some(other) => Err(CtlError::BadArgument {
            what: "output format",
            value: other.to_string(),
            reason: "expected ps, yaml or json".into(),
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
