use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::labels::{validate_labels, LabelMap};
use super::MacAddr;
use crate::names::{validate_hostname, validate_iface, validate_name};
use crate::ModelError;

/// Where an endpoint lives: `/calico/v1/host/<host>/workload/<orchestrator>/<workload>/endpoint/<endpoint>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointId {
    pub host: String,
    pub orchestrator: String,
    pub workload: String,
    pub endpoint: String,
}

impl EndpointId {
    /// Validates every segment, so the id is safe in keys and in rule comments.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_hostname(&self.host)?;
        validate_name("orchestrator id", &self.orchestrator)?;
        validate_name("workload id", &self.workload)?;
        validate_name("endpoint id", &self.endpoint)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.host, self.orchestrator, self.workload, self.endpoint
        )
    }
}

/// Whether Felix programs the endpoint (`active`) or stubs it to drop everything (`inactive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    Active,
    Inactive,
}

/// A workload's interface, as calicoctl v0.10 wrote it:
/// `{"state":"active","name":"cali1f0e3a5c6d7","mac":"ee:ee:..","profile_ids":[],
///   "ipv4_nets":["192.168.0.1/32"],"ipv6_nets":[],"ipv4_gateway":"10.0.0.1","ipv6_gateway":null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEndpoint")]
pub struct WorkloadEndpoint {
    pub state: EndpointState,
    /// Host-side interface name (`cali` + 11 characters of the endpoint id).
    pub name: String,
    /// The workload-side interface's MAC: the source MAC enforced on its traffic.
    pub mac: MacAddr,
    /// Profiles applied in order; the first allow or deny decides.
    pub profile_ids: Vec<String>,
    pub ipv4_nets: Vec<Ipv4Net>,
    pub ipv6_nets: Vec<Ipv6Net>,
    /// What policy selectors match on (with the profiles' labels behind them); written only
    /// when there are some, so a seed endpoint's JSON is unchanged.
    #[serde(default, skip_serializing_if = "LabelMap::is_empty")]
    pub labels: LabelMap,
    pub ipv4_gateway: Option<Ipv4Addr>,
    pub ipv6_gateway: Option<Ipv6Addr>,
}

impl WorkloadEndpoint {
    /// Checks names and normalises CIDRs to their network address.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_iface(&self.name)?;
        for p in &self.profile_ids {
            validate_name("profile", p)?;
        }
        validate_labels(&self.labels)
    }

    /// Every address of the endpoint, v4 then v6.
    pub fn nets(&self) -> impl Iterator<Item = ipnet::IpNet> + '_ {
        let v4 = self.ipv4_nets.iter().map(|n| ipnet::IpNet::V4(*n));
        v4.chain(self.ipv6_nets.iter().map(|n| ipnet::IpNet::V6(*n)))
    }
}

/// The wire form, accepting the legacy single `profile_id` as both Felix and libcalico did.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    state: EndpointState,
    name: String,
    mac: MacAddr,
    #[serde(default)]
    profile_ids: Option<Vec<String>>,
    #[serde(default)]
    profile_id: Option<String>,
    #[serde(default)]
    ipv4_nets: Vec<Ipv4Net>,
    #[serde(default)]
    ipv6_nets: Vec<Ipv6Net>,
    #[serde(default)]
    ipv4_gateway: Option<Ipv4Addr>,
    #[serde(default)]
    ipv6_gateway: Option<Ipv6Addr>,
    #[serde(default)]
    labels: Option<LabelMap>,
    /// Written by calicoctl 1.x (Calico 2.3+); nothing here depends on it.
    #[serde(default)]
    #[allow(dead_code)]
    active_instance_id: Option<String>,
}

impl TryFrom<RawEndpoint> for WorkloadEndpoint {
    type Error = ModelError;

    fn try_from(raw: RawEndpoint) -> Result<Self, ModelError> {
        let profile_ids = match (raw.profile_ids, raw.profile_id) {
            (Some(ids), _) => ids,
            (None, Some(id)) => vec![id],
            (None, None) => {
                return Err(ModelError::field(
                    "profile_ids",
                    "",
                    "missing from endpoint",
                ));
            }
        };
        let ep = WorkloadEndpoint {
            state: raw.state,
            name: raw.name,
            mac: raw.mac,
            profile_ids,
            ipv4_nets: raw.ipv4_nets.into_iter().map(|n| n.trunc()).collect(),
            ipv6_nets: raw.ipv6_nets.into_iter().map(|n| n.trunc()).collect(),
            labels: raw.labels.unwrap_or_default(),
            ipv4_gateway: raw.ipv4_gateway,
            ipv6_gateway: raw.ipv6_gateway,
        };
        ep.validate()?;
        Ok(ep)
    }
}
