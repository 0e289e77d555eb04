//! Host endpoints (reference 1.2, 2, 4.4): an interface of a host itself, policed by policy and
//! profiles like a workload. `/calico/v1/host/<host>/endpoint/<id>` =
//! `{"name":"eth0","expected_ipv4_addrs":["192.168.0.1"],"labels":{..},"profile_ids":[..]}`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::labels::{validate_labels, LabelMap};
use crate::names::{validate_hostname, validate_iface, validate_name};
use crate::ModelError;

/// Where a host endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostEndpointId {
    pub host: String,
    pub endpoint: String,
}

impl HostEndpointId {
    /// # Errors
    /// A bad hostname or endpoint id.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_hostname(&self.host)?;
        validate_name("host endpoint id", &self.endpoint)
    }
}

impl fmt::Display for HostEndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.endpoint)
    }
}

/// A host interface under policy: by `name`, or else by the interface holding one of the
/// expected addresses. Selectors see it through its expected addresses only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_ipv4_addrs: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_ipv6_addrs: Vec<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "LabelMap::is_empty")]
    pub labels: LabelMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile_ids: Vec<String>,
}

impl HostEndpoint {
    /// # Errors
    /// Neither an interface nor an expected IP; a bad interface, label or profile name.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.name.is_none()
            && self.expected_ipv4_addrs.is_empty()
            && self.expected_ipv6_addrs.is_empty()
        {
            return Err(ModelError::field(
                "name",
                "",
                "no interface or expected IPs have been specified",
            ));
        }
        if let Some(name) = &self.name {
            validate_iface(name)?;
        }
        validate_labels(&self.labels)?;
        for p in &self.profile_ids {
            validate_name("profile", p)?;
        }
        Ok(())
    }

    /// Every expected address, v4 then v6.
    pub fn expected_ips(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        let v4 = self.expected_ipv4_addrs.iter().map(|a| (*a).into());
        v4.chain(self.expected_ipv6_addrs.iter().map(|a| (*a).into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_references_example_round_trips_and_needs_an_interface_or_ip() {
        let raw = r#"{"name":"eth0","expected_ipv4_addrs":["192.168.0.1","192.168.0.2"],"labels":{"type":"production"},"profile_ids":["profile1","profile2"]}"#;
        let hep: HostEndpoint = serde_json::from_str(raw).unwrap();
        hep.validate().unwrap();
        assert_eq!(serde_json::to_string(&hep).unwrap(), raw);
        let err = HostEndpoint::default().validate().unwrap_err();
        assert!(
            err.to_string().contains("no interface or expected IPs"),
            "{err}"
        );
    }
}
