//! The v1 key layout (reference 1.2): every key the system reads or writes, parsed from and
//! rendered to its path. `Key::parse(k.path()) == k` for every valid key.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{EndpointId, HostEndpointId};
use crate::names::{validate_hostname, validate_name};
use crate::ModelError;

/// Prefix of Felix's tree.
pub const V1: &str = "/calico/v1/";
/// Prefix of confd's (BIRD's) tree.
pub const BGP_V1: &str = "/calico/bgp/v1/";
/// Prefix of block IPAM.
pub const IPAM_V2: &str = "/calico/ipam/v2/";
/// Prefix of Felix's status reports.
pub const FELIX_V1: &str = "/calico/felix/v1/";
/// Everything the node agent watches.
pub const CALICO: &str = "/calico/";

/// IP family of a pool, peer or IPAM block key segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => IpVersion::V4,
            IpNet::V6(_) => IpVersion::V6,
        }
    }

    pub fn of_addr(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    fn digit(self) -> char {
        match self {
            IpVersion::V4 => '4',
            IpVersion::V6 => '6',
        }
    }
}

/// A key in the datastore.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `/calico/v1/Ready`: `"true"` once global config is written.
    Ready,
    /// `/calico/v1/config/<name>`: a global Felix parameter.
    GlobalConfig { name: String },
    /// `/calico/v1/host/<host>/config/<name>`: a per-host Felix parameter (also `marker`).
    HostConfig { host: String, name: String },
    /// `/calico/v1/host/<host>/bird_ip`: the host's IPv4, for Felix.
    BirdIp { host: String },
    /// `/calico/v1/host/<host>/vtep`: the host's VXLAN tunnel endpoint (our extension, see
    /// [`crate::model::Vtep`]).
    HostVtep { host: String },
    /// `/calico/v1/host/<host>/workload/<orch>/<workload>/endpoint/<id>`.
    Endpoint(EndpointId),
    /// `/calico/v1/policy/profile/<name>/tags`.
    ProfileTags { profile: String },
    /// `/calico/v1/policy/profile/<name>/rules`.
    ProfileRules { profile: String },
    /// `/calico/v1/policy/profile/<name>/labels`.
    ProfileLabels { profile: String },
    /// `/calico/v1/policy/tier/default/policy/<name>`. Only tier `default` exists (what
    /// libcalico-go writes and Go Felix reads); keys of other tiers are not ours.
    Policy { name: String },
    /// `/calico/v1/host/<host>/endpoint/<id>`.
    HostEndpoint(HostEndpointId),
    /// `/calico/v1/ipam/v4/pool/<cidr-dashed>` (or v6).
    Pool { cidr: IpNet },
    /// `/calico/bgp/v1/global/as_num`.
    GlobalAsNum,
    /// `/calico/bgp/v1/global/node_mesh`.
    NodeMesh,
    /// `/calico/bgp/v1/global/loglevel`.
    GlobalBgpLogLevel,
    /// `/calico/bgp/v1/global/peer_v4/<ip>` (or peer_v6).
    GlobalPeer { ip: IpAddr },
    /// `/calico/bgp/v1/host/<host>/ip_addr_v4` (or ip_addr_v6).
    HostIp { host: String, version: IpVersion },
    /// `/calico/bgp/v1/host/<host>/network_v4` (or network_v6): the host's subnet, from the
    /// prefix of the node resource's `ipv4Address` (calico 2.1+; compute does not use it).
    HostNetwork { host: String, version: IpVersion },
    /// `/calico/bgp/v1/host/<host>/as_num`.
    HostAsNum { host: String },
    /// `/calico/bgp/v1/host/<host>/loglevel`.
    HostBgpLogLevel { host: String },
    /// `/calico/bgp/v1/host/<host>/peer_v4/<ip>` (or peer_v6).
    HostPeer { host: String, ip: IpAddr },
    /// `/calico/ipam/v2/assignment/ipv4/block/<cidr-dashed>`.
    IpamBlock { cidr: IpNet },
    /// `/calico/ipam/v2/host/<host>/ipv4/block/<cidr-dashed>`: `""`, marks the host's affinity.
    IpamAffinity { host: String, cidr: IpNet },
    /// `/calico/ipam/v2/handle/<id>`.
    IpamHandle { id: String },
    /// `/calico/felix/v1/host/<host>/status` (with a TTL in the original).
    FelixStatus { host: String },
    /// `/calico/felix/v1/host/<host>/last_reported_status`.
    FelixLastReported { host: String },
}

/// `192.168.0.0/16` → `192.168.0.0-16`, as the original keyed CIDRs.
pub fn dash_cidr(net: &IpNet) -> String {
    net.to_string().replace('/', "-")
}

fn undash_cidr(seg: &str, key: &str) -> Result<IpNet, ModelError> {
    let (addr, len) = seg.rsplit_once('-').ok_or_else(|| unknown(key))?;
    let net: IpNet = format!("{addr}/{len}").parse().map_err(|_| unknown(key))?;
    if net.trunc() != net {
        return Err(unknown(key));
    }
    Ok(net)
}

fn unknown(key: &str) -> ModelError {
    ModelError::UnknownKey {
        key: key.to_string(),
    }
}

fn version_seg(seg: &str, style: &str, key: &str) -> Result<IpVersion, ModelError> {
    match seg.strip_prefix(style) {
        Some("4") => Ok(IpVersion::V4),
        Some("6") => Ok(IpVersion::V6),
        _ => Err(unknown(key)),
    }
}

impl Key {
    /// Parses a datastore key. Anything outside the layout, or with an invalid name, CIDR or IP
    /// segment, is `ModelError::UnknownKey`.
    pub fn parse(key: &str) -> Result<Key, ModelError> {
        let segs: Vec<&str> = key.split('/').collect();
        let host = |h: &str| {
            validate_hostname(h)
                .map(|_| h.to_string())
                .map_err(|_| unknown(key))
        };
        let name = |what, n: &str| {
            validate_name(what, n)
                .map(|_| n.to_string())
                .map_err(|_| unknown(key))
        };
        let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| unknown(key));
        let parsed = match segs.as_slice() {
            ["", "calico", "v1", "Ready"] => Key::Ready,
            ["", "calico", "v1", "config", n] => Key::GlobalConfig {
                name: name("config name", n)?,
            },
            ["", "calico", "v1", "host", h, "config", n] => Key::HostConfig {
                host: host(h)?,
                name: name("config name", n)?,
            },
            ["", "calico", "v1", "host", h, "bird_ip"] => Key::BirdIp { host: host(h)? },
            ["", "calico", "v1", "host", h, "vtep"] => Key::HostVtep { host: host(h)? },
            ["", "calico", "v1", "host", h, "workload", o, w, "endpoint", e] => {
                Key::Endpoint(EndpointId {
                    host: host(h)?,
                    orchestrator: name("orchestrator", o)?,
                    workload: name("workload", w)?,
                    endpoint: name("endpoint", e)?,
                })
            }
            ["", "calico", "v1", "policy", "profile", p, "tags"] => Key::ProfileTags {
                profile: name("profile", p)?,
            },
            ["", "calico", "v1", "policy", "profile", p, "rules"] => Key::ProfileRules {
                profile: name("profile", p)?,
            },
            ["", "calico", "v1", "policy", "profile", p, "labels"] => Key::ProfileLabels {
                profile: name("profile", p)?,
            },
            ["", "calico", "v1", "policy", "tier", "default", "policy", p] => Key::Policy {
                name: name("policy", p)?,
            },
            ["", "calico", "v1", "host", h, "endpoint", e] => Key::HostEndpoint(HostEndpointId {
                host: host(h)?,
                endpoint: name("host endpoint", e)?,
            }),
            ["", "calico", "v1", "ipam", v, "pool", c] => {
                let cidr = undash_cidr(c, key)?;
                if version_seg(v, "v", key)? != IpVersion::of(&cidr) {
                    return Err(unknown(key));
                }
                Key::Pool { cidr }
            }
            ["", "calico", "bgp", "v1", "global", "as_num"] => Key::GlobalAsNum,
            ["", "calico", "bgp", "v1", "global", "node_mesh"] => Key::NodeMesh,
            ["", "calico", "bgp", "v1", "global", "loglevel"] => Key::GlobalBgpLogLevel,
            ["", "calico", "bgp", "v1", "global", v, p] if v.starts_with("peer_v") => {
                let ip = ip(p)?;
                if version_seg(v, "peer_v", key)? != IpVersion::of_addr(&ip) {
                    return Err(unknown(key));
                }
                Key::GlobalPeer { ip }
            }
            ["", "calico", "bgp", "v1", "host", h, v] if v.starts_with("ip_addr_v") => {
                Key::HostIp {
                    host: host(h)?,
                    version: version_seg(v, "ip_addr_v", key)?,
                }
            }
            ["", "calico", "bgp", "v1", "host", h, v] if v.starts_with("network_v") => {
                Key::HostNetwork {
                    host: host(h)?,
                    version: version_seg(v, "network_v", key)?,
                }
            }
            ["", "calico", "bgp", "v1", "host", h, "as_num"] => Key::HostAsNum { host: host(h)? },
            ["", "calico", "bgp", "v1", "host", h, "loglevel"] => {
                Key::HostBgpLogLevel { host: host(h)? }
            }
            ["", "calico", "bgp", "v1", "host", h, v, p] if v.starts_with("peer_v") => {
                let ip = ip(p)?;
                if version_seg(v, "peer_v", key)? != IpVersion::of_addr(&ip) {
                    return Err(unknown(key));
                }
                Key::HostPeer { host: host(h)?, ip }
            }
            ["", "calico", "ipam", "v2", "assignment", v, "block", c] => {
                let cidr = undash_cidr(c, key)?;
                if version_seg(v, "ipv", key)? != IpVersion::of(&cidr) {
                    return Err(unknown(key));
                }
                Key::IpamBlock { cidr }
            }
            ["", "calico", "ipam", "v2", "host", h, v, "block", c] => {
                let cidr = undash_cidr(c, key)?;
                if version_seg(v, "ipv", key)? != IpVersion::of(&cidr) {
                    return Err(unknown(key));
                }
                Key::IpamAffinity {
                    host: host(h)?,
                    cidr,
                }
            }
            ["", "calico", "ipam", "v2", "handle", id] => Key::IpamHandle {
                id: name("handle", id)?,
            },
            ["", "calico", "felix", "v1", "host", h, "status"] => {
                Key::FelixStatus { host: host(h)? }
            }
            ["", "calico", "felix", "v1", "host", h, "last_reported_status"] => {
                Key::FelixLastReported { host: host(h)? }
            }
            _ => return Err(unknown(key)),
        };
        Ok(parsed)
    }

    /// The directory holding everything of one host in Felix's tree.
    pub fn host_dir(host: &str) -> String {
        format!("{V1}host/{host}/")
    }

    /// The directory holding everything of one host in BIRD's tree.
    pub fn bgp_host_dir(host: &str) -> String {
        format!("{BGP_V1}host/{host}/")
    }

    /// The directory holding one profile's keys.
    pub fn profile_dir(profile: &str) -> String {
        format!("{V1}policy/profile/{profile}/")
    }

    /// The directory of every selector policy.
    pub fn policy_dir() -> String {
        format!("{V1}policy/tier/default/policy/")
    }

    /// The directory of one host's host endpoints.
    pub fn host_endpoint_dir(host: &str) -> String {
        format!("{V1}host/{host}/endpoint/")
    }

    /// The directory of one workload's endpoints.
    pub fn workload_dir(host: &str, orchestrator: &str, workload: &str) -> String {
        format!("{V1}host/{host}/workload/{orchestrator}/{workload}/")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ready => write!(f, "{V1}Ready"),
            Key::GlobalConfig { name } => write!(f, "{V1}config/{name}"),
            Key::HostConfig { host, name } => write!(f, "{V1}host/{host}/config/{name}"),
            Key::BirdIp { host } => write!(f, "{V1}host/{host}/bird_ip"),
            Key::HostVtep { host } => write!(f, "{V1}host/{host}/vtep"),
            Key::Endpoint(id) => write!(
                f,
                "{V1}host/{}/workload/{}/{}/endpoint/{}",
                id.host, id.orchestrator, id.workload, id.endpoint
            ),
            Key::ProfileTags { profile } => write!(f, "{V1}policy/profile/{profile}/tags"),
            Key::ProfileRules { profile } => write!(f, "{V1}policy/profile/{profile}/rules"),
            Key::ProfileLabels { profile } => write!(f, "{V1}policy/profile/{profile}/labels"),
            Key::Policy { name } => write!(f, "{V1}policy/tier/default/policy/{name}"),
            Key::HostEndpoint(id) => write!(f, "{V1}host/{}/endpoint/{}", id.host, id.endpoint),
            Key::Pool { cidr } => {
                write!(
                    f,
                    "{V1}ipam/v{}/pool/{}",
                    IpVersion::of(cidr).digit(),
                    dash_cidr(cidr)
                )
            }
            Key::GlobalAsNum => write!(f, "{BGP_V1}global/as_num"),
            Key::NodeMesh => write!(f, "{BGP_V1}global/node_mesh"),
            Key::GlobalBgpLogLevel => write!(f, "{BGP_V1}global/loglevel"),
            Key::GlobalPeer { ip } => {
                write!(
                    f,
                    "{BGP_V1}global/peer_v{}/{ip}",
                    IpVersion::of_addr(ip).digit()
                )
            }
            Key::HostIp { host, version } => {
                write!(f, "{BGP_V1}host/{host}/ip_addr_v{}", version.digit())
            }
            Key::HostNetwork { host, version } => {
                write!(f, "{BGP_V1}host/{host}/network_v{}", version.digit())
            }
            Key::HostAsNum { host } => write!(f, "{BGP_V1}host/{host}/as_num"),
            Key::HostBgpLogLevel { host } => write!(f, "{BGP_V1}host/{host}/loglevel"),
            Key::HostPeer { host, ip } => {
                write!(
                    f,
                    "{BGP_V1}host/{host}/peer_v{}/{ip}",
                    IpVersion::of_addr(ip).digit()
                )
            }
            Key::IpamBlock { cidr } => write!(
                f,
                "{IPAM_V2}assignment/ipv{}/block/{}",
                IpVersion::of(cidr).digit(),
                dash_cidr(cidr)
            ),
            Key::IpamAffinity { host, cidr } => write!(
                f,
                "{IPAM_V2}host/{host}/ipv{}/block/{}",
                IpVersion::of(cidr).digit(),
                dash_cidr(cidr)
            ),
            Key::IpamHandle { id } => write!(f, "{IPAM_V2}handle/{id}"),
            Key::FelixStatus { host } => write!(f, "{FELIX_V1}host/{host}/status"),
            Key::FelixLastReported { host } => {
                write!(f, "{FELIX_V1}host/{host}/last_reported_status")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_key_round_trips() {
        let keys = [
            "/calico/v1/Ready",
            "/calico/v1/config/InterfacePrefix",
            "/calico/v1/host/host1/config/marker",
            "/calico/v1/host/host1/bird_ip",
            "/calico/v1/host/host1/vtep",
            "/calico/v1/host/host1/workload/docker/abc/endpoint/0123456789abcdef",
            "/calico/v1/policy/profile/PROF_A_B/tags",
            "/calico/v1/policy/profile/PROF_A_B/rules",
            "/calico/v1/policy/profile/PROF_A_B/labels",
            "/calico/v1/policy/tier/default/policy/db-from-web",
            "/calico/v1/host/host1/endpoint/eth0",
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64",
            "/calico/bgp/v1/global/as_num",
            "/calico/bgp/v1/global/node_mesh",
            "/calico/bgp/v1/global/loglevel",
            "/calico/bgp/v1/global/peer_v4/172.31.250.9",
            "/calico/bgp/v1/global/peer_v6/fd00::9",
            "/calico/bgp/v1/host/host1/ip_addr_v4",
            "/calico/bgp/v1/host/host1/ip_addr_v6",
            "/calico/bgp/v1/host/host1/as_num",
            "/calico/bgp/v1/host/host1/loglevel",
            "/calico/bgp/v1/host/host1/peer_v4/172.31.250.9",
            "/calico/ipam/v2/assignment/ipv4/block/192.168.1.0-26",
            "/calico/ipam/v2/host/host1/ipv4/block/192.168.1.0-26",
            "/calico/ipam/v2/handle/abc",
            "/calico/felix/v1/host/host1/status",
            "/calico/felix/v1/host/host1/last_reported_status",
        ];
        for k in keys {
            let parsed = Key::parse(k).unwrap();
            assert_eq!(parsed.to_string(), k);
        }
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for k in [
            "/calico/v1/ipam/v6/pool/192.168.0.0-16",
            "/calico/v1/ipam/v4/pool/192.168.0.1-16",
            "/calico/bgp/v1/global/peer_v6/1.2.3.4",
            "/calico/v1/policy/profile/a b/tags",
            "/calico/v1/host//bird_ip",
            "/calico/v1/policy/tier/other/policy/p",
            "/calico/v1/policy/tier/default/policy/a b",
            "/calico/v1/host/h/endpoint/..",
            "/etc/passwd",
        ] {
            assert_eq!(
                Key::parse(k),
                Err(ModelError::UnknownKey { key: k.to_string() })
            );
        }
    }
}
