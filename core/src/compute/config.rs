//! The Felix settings compute depends on, resolved per host: the host's
//! `/calico/v1/host/<h>/config/<name>` overrides the global `/calico/v1/config/<name>`.

use crate::cluster::ClusterState;
use crate::names::validate_name;

/// The workload interface prefix when none (or an invalid one) is configured.
pub const DEFAULT_INTERFACE_PREFIX: &str = "cali";

/// What happens to traffic from a workload to its own host (`DefaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHostAction {
    /// Drop everything not explicitly allowed by `cali-INPUT` (DHCP, DNS, established).
    #[default]
    Drop,
    /// Apply the endpoint's outbound policy, then accept.
    Accept,
    /// Apply the endpoint's outbound policy, then return to the kernel's INPUT chain.
    Return,
}

impl EndpointToHostAction {
    /// Parses a config value, case-insensitively; anything unknown is the safe default, DROP.
    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_uppercase().as_str() {
            "ACCEPT" => EndpointToHostAction::Accept,
            "RETURN" => EndpointToHostAction::Return,
            _ => EndpointToHostAction::Drop,
        }
    }
}

/// The resolved settings of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Prefix of workload interfaces; `<prefix>+` is the iptables wildcard for all of them.
    pub interface_prefix: String,
    pub endpoint_to_host: EndpointToHostAction,
    /// `IpInIpEnabled`: IPIP from unknown hosts is dropped in `cali-INPUT`.
    pub ipip_enabled: bool,
    /// The host has host endpoints: `cali-INPUT` sends traffic arriving on other interfaces
    /// to their policy.
    pub host_endpoints: bool,
}

impl HostConfig {
    /// Resolves the settings of `host` from its own config, then the global config, then defaults.
    pub fn resolve(state: &ClusterState, host: &str) -> Self {
        let lookup = |name: &str| {
            state
                .hosts
                .get(host)
                .and_then(|h| h.config.get(name))
                .or_else(|| state.global_config.get(name))
                .map(String::as_str)
        };
        let interface_prefix = lookup("InterfacePrefix")
            .filter(|p| validate_name("interface prefix", p).is_ok() && p.len() < 15)
            .unwrap_or(DEFAULT_INTERFACE_PREFIX)
            .to_string();
        HostConfig {
            interface_prefix,
            endpoint_to_host: lookup("DefaultEndpointToHostAction")
                .map(EndpointToHostAction::parse)
                .unwrap_or_default(),
            ipip_enabled: lookup("IpInIpEnabled")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            host_endpoints: state.host_endpoints.keys().any(|id| id.host == host),
        }
    }

    /// The iptables wildcard matching every workload interface, e.g. `cali+`.
    pub fn wildcard(&self) -> String {
        format!("{}+", self.interface_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_config_overrides_global_and_bad_values_fall_back() {
        let mut state = ClusterState::default();
        state.apply(
            "/calico/v1/config/DefaultEndpointToHostAction",
            Some(b"ACCEPT"),
        );
        state.apply("/calico/v1/config/InterfacePrefix", Some(b"bad prefix!"));
        assert_eq!(
            HostConfig::resolve(&state, "h1"),
            HostConfig {
                interface_prefix: "cali".into(),
                endpoint_to_host: EndpointToHostAction::Accept,
                ipip_enabled: false,
                host_endpoints: false,
            }
        );
        state.apply(
            "/calico/v1/host/h1/config/DefaultEndpointToHostAction",
            Some(b"return"),
        );
        state.apply("/calico/v1/config/InterfacePrefix", Some(b"tap"));
        let cfg = HostConfig::resolve(&state, "h1");
        assert_eq!(cfg.endpoint_to_host, EndpointToHostAction::Return);
        assert_eq!(cfg.wildcard(), "tap+");
        assert_eq!(
            HostConfig::resolve(&state, "h2").endpoint_to_host,
            EndpointToHostAction::Accept
        );
    }
}
