//! The Felix settings compute depends on, resolved per host: the host's
//! `/calico/v1/host/<h>/config/<name>` overrides the global `/calico/v1/config/<name>`.

use crate::cluster::ClusterState;
use crate::model::Protocol;
use crate::names::validate_name;
use crate::ModelError;

/// One failsafe entry: traffic of this protocol to this destination port always passes a
/// host endpoint.
pub type FailsafePort = (Protocol, u16);

/// The config name of the inbound failsafe list.
pub const FAILSAFE_INBOUND_KEY: &str = "FailsafeInboundHostPorts";
/// The config name of the outbound failsafe list.
pub const FAILSAFE_OUTBOUND_KEY: &str = "FailsafeOutboundHostPorts";

/// Inbound failsafe ports when `FailsafeInboundHostPorts` is unset: Felix 2.2's `tcp:22,
/// udp:68` plus BGP's tcp 179, so a bad policy cannot cut the BGP mesh (later Felix releases
/// open 179 too).
pub const DEFAULT_FAILSAFE_INBOUND: &[FailsafePort] = &[
    (Protocol::Tcp, 22),
    (Protocol::Tcp, 179),
    (Protocol::Udp, 68),
];

/// Outbound failsafe ports when `FailsafeOutboundHostPorts` is unset: Felix 2.2's etcd ports
/// (`tcp:2379,tcp:2380,tcp:4001,tcp:7001`), DNS and DHCP (`udp:53,udp:67`), plus BGP's tcp
/// 179 for the same reason as inbound: a host whose egress policy is wrong must still open
/// its BGP sessions.
pub const DEFAULT_FAILSAFE_OUTBOUND: &[FailsafePort] = &[
    (Protocol::Tcp, 179),
    (Protocol::Tcp, 2379),
    (Protocol::Tcp, 2380),
    (Protocol::Tcp, 4001),
    (Protocol::Tcp, 7001),
    (Protocol::Udp, 53),
    (Protocol::Udp, 67),
];

/// Parses a failsafe list in Felix's format: `tcp:22,udp:68`, a bare port meaning tcp, `none`
/// meaning no ports.
///
/// # Errors
/// `ModelError::InvalidField` naming `field` and the bad entry.
pub fn parse_failsafe_ports(
    field: &'static str,
    value: &str,
) -> Result<Vec<FailsafePort>, ModelError> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    if value.is_empty() {
        return Err(ModelError::field(
            field,
            value,
            "is empty (write none for no ports)",
        ));
    }
    value
        .split(',')
        .map(|entry| {
            let entry = entry.trim();
            let (proto, port) = entry.split_once(':').unwrap_or(("tcp", entry));
            let protocol = match proto.trim().to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => {
                    return Err(ModelError::field(
                        field,
                        entry,
                        "protocol must be tcp or udp",
                    ))
                }
            };
            match port.trim().parse::<u16>() {
                Ok(port) if port > 0 => Ok((protocol, port)),
                _ => Err(ModelError::field(field, entry, "port must be 1-65535")),
            }
        })
        .collect()
}

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
    /// `FailsafeInboundHostPorts`: always open into this host through its host endpoints.
    pub failsafe_inbound: Vec<FailsafePort>,
    /// `FailsafeOutboundHostPorts`: always open out of this host through its host endpoints.
    pub failsafe_outbound: Vec<FailsafePort>,
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
            // A bad value never reaches the state (the codec rejects it, naming the key), so
            // the fallback here only guards states built by hand.
            failsafe_inbound: lookup(FAILSAFE_INBOUND_KEY)
                .and_then(|v| parse_failsafe_ports(FAILSAFE_INBOUND_KEY, v).ok())
                .unwrap_or_else(|| DEFAULT_FAILSAFE_INBOUND.to_vec()),
            failsafe_outbound: lookup(FAILSAFE_OUTBOUND_KEY)
                .and_then(|v| parse_failsafe_ports(FAILSAFE_OUTBOUND_KEY, v).ok())
                .unwrap_or_else(|| DEFAULT_FAILSAFE_OUTBOUND.to_vec()),
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
                failsafe_inbound: DEFAULT_FAILSAFE_INBOUND.to_vec(),
                failsafe_outbound: DEFAULT_FAILSAFE_OUTBOUND.to_vec(),
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

    #[test]
    fn failsafe_lists_parse_like_felix_and_bad_ones_name_the_entry() {
        let parse = |v| parse_failsafe_ports(FAILSAFE_OUTBOUND_KEY, v);
        assert_eq!(
            parse("tcp:2379, udp:53,7001").unwrap(),
            vec![
                (Protocol::Tcp, 2379),
                (Protocol::Udp, 53),
                (Protocol::Tcp, 7001)
            ]
        );
        assert_eq!(parse("NONE").unwrap(), vec![]);
        for (bad, names) in [
            ("tcp:22,sctp:9", "sctp:9"),
            ("udp:", "udp:"),
            ("tcp:70000", "tcp:70000"),
            ("0", "0"),
            ("", "none"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(FAILSAFE_OUTBOUND_KEY), "{err}");
            assert!(err.contains(names), "{bad}: {err}");
        }
    }

    #[test]
    fn failsafe_ports_resolve_per_host_over_global() {
        let mut state = ClusterState::default();
        state.apply(
            "/calico/v1/config/FailsafeInboundHostPorts",
            Some(b"tcp:2222"),
        );
        state.apply(
            "/calico/v1/host/h1/config/FailsafeOutboundHostPorts",
            Some(b"none"),
        );
        let h1 = HostConfig::resolve(&state, "h1");
        assert_eq!(h1.failsafe_inbound, vec![(Protocol::Tcp, 2222)]);
        assert!(h1.failsafe_outbound.is_empty());
        let h2 = HostConfig::resolve(&state, "h2");
        assert_eq!(h2.failsafe_outbound, DEFAULT_FAILSAFE_OUTBOUND.to_vec());
        // A bad value is refused by the codec, naming the key, and the default stays.
        let applied = state.apply(
            "/calico/v1/host/h1/config/FailsafeInboundHostPorts",
            Some(b"tcp:ssh"),
        );
        let err = match applied {
            crate::cluster::Applied::Invalid(_, err) => err.to_string(),
            other => panic!("accepted a bad failsafe list: {other:?}"),
        };
        assert!(
            err.contains("/calico/v1/host/h1/config/FailsafeInboundHostPorts"),
            "{err}"
        );
        assert_eq!(
            HostConfig::resolve(&state, "h1").failsafe_inbound,
            vec![(Protocol::Tcp, 2222)]
        );
    }
}
