//! `Probe`: the kind of packet a reachability check sends (protocol, ports, ICMP type/code),
//! shared by the packet walk and the policy oracle so both judge the same packet.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use calico_core::model::Protocol;

/// The source port of TCP/UDP probes that name none (`tcp/80`): it stands for "an ephemeral
/// port", and [`crate::World::send`] sends each such probe from a fresh port of
/// [`EPHEMERAL_PORTS`], so probes are separate connections as in Linux.
pub const EPHEMERAL_PORT: u16 = 40000;

/// The ephemeral source ports [`crate::World::send`] draws from, one per probe, wrapping. The
/// oracle judges the probe by [`EPHEMERAL_PORT`], so a source-port rule must hold all of them
/// or none for the oracle and the walk to agree (the generators' ranges do).
pub const EPHEMERAL_PORTS: RangeInclusive<u16> = EPHEMERAL_PORT..=59999;

/// ICMP echo request, the `ping` probe.
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// One packet to try, from the sender's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// TCP or UDP (or another port protocol) from `src_port` to `dst_port`.
    Ports {
        protocol: Protocol,
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP (v4) or ICMPv6 with a type and code.
    Icmp {
        protocol: Protocol,
        icmp_type: u8,
        icmp_code: u8,
    },
    /// Any other protocol, matched by number only.
    Other { protocol: Protocol },
}

impl Probe {
    /// `tcp/<port>` from the ephemeral port.
    pub fn tcp(dst_port: u16) -> Self {
        Probe::Ports {
            protocol: Protocol::Tcp,
            src_port: EPHEMERAL_PORT,
            dst_port,
        }
    }

    /// `udp/<port>` from the ephemeral port.
    pub fn udp(dst_port: u16) -> Self {
        Probe::Ports {
            protocol: Protocol::Udp,
            src_port: EPHEMERAL_PORT,
            dst_port,
        }
    }

    /// An IPv4 ping (echo request, type 8 code 0).
    pub fn ping() -> Self {
        Probe::Icmp {
            protocol: Protocol::Icmp,
            icmp_type: ICMP_ECHO_REQUEST,
            icmp_code: 0,
        }
    }

    /// The IP protocol of the probe.
    pub fn protocol(&self) -> Protocol {
        match *self {
            Probe::Ports { protocol, .. }
            | Probe::Icmp { protocol, .. }
            | Probe::Other { protocol } => protocol,
        }
    }

    /// `(src_port, dst_port)` for port protocols.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            Probe::Ports {
                src_port, dst_port, ..
            } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// `(type, code)` for ICMP probes.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        match *self {
            Probe::Icmp {
                icmp_type,
                icmp_code,
                ..
            } => Some((icmp_type, icmp_code)),
            _ => None,
        }
    }

    /// The standard probes of the reachability property: ping, tcp/22, tcp/80, udp/1500.
    pub fn standard() -> [Probe; 4] {
        [
            Probe::ping(),
            Probe::tcp(22),
            Probe::tcp(80),
            Probe::udp(1500),
        ]
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Probe::Ports {
                protocol,
                src_port,
                dst_port,
            } if src_port == EPHEMERAL_PORT => write!(f, "{protocol}/{dst_port}"),
            Probe::Ports {
                protocol,
                src_port,
                dst_port,
            } => write!(f, "{protocol}/{src_port}->{dst_port}"),
            Probe::Icmp {
                protocol,
                icmp_type,
                icmp_code,
            } => write!(f, "{protocol}/{icmp_type}/{icmp_code}"),
            Probe::Other { protocol } => write!(f, "{protocol}"),
        }
    }
}

/// Why a probe spec could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid probe {spec:?}: {reason}")]
pub struct ProbeParseError {
    pub spec: String,
    pub reason: &'static str,
}

impl FromStr for Probe {
    type Err = ProbeParseError;

    /// `icmp`, `icmp/<type>[/<code>]`, `icmpv6[/...]`, `tcp/<port>`, `udp/<port>`,
    /// `tcp/<sport>-><dport>`, or a protocol name or number alone.
    fn from_str(spec: &str) -> Result<Self, ProbeParseError> {
        let bad = |reason| ProbeParseError {
            spec: spec.to_string(),
            reason,
        };
        let mut parts = spec.splitn(2, '/');
        let protocol: Protocol = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| bad("unknown protocol"))?;
        let rest = parts.next();
        if protocol.is_icmp() {
            let echo = if protocol == Protocol::Icmp { 8 } else { 128 };
            let (icmp_type, icmp_code) = match rest {
                None => (echo, 0),
                Some(rest) => {
                    let (t, c) = rest.split_once('/').unwrap_or((rest, "0"));
                    let t = t.parse().map_err(|_| bad("icmp type must be 0-255"))?;
                    let c = c.parse().map_err(|_| bad("icmp code must be 0-255"))?;
                    (t, c)
                }
            };
            return Ok(Probe::Icmp {
                protocol,
                icmp_type,
                icmp_code,
            });
        }
        if protocol.has_ports() {
            let rest = rest.ok_or_else(|| bad("a port protocol needs /<port>"))?;
            let (src, dst) = rest
                .split_once("->")
                .map_or((None, rest), |(s, d)| (Some(s), d));
            let port = |p: &str| p.parse::<u16>().map_err(|_| bad("ports must be 0-65535"));
            return Ok(Probe::Ports {
                protocol,
                src_port: src.map(port).transpose()?.unwrap_or(EPHEMERAL_PORT),
                dst_port: port(dst)?,
            });
        }
        if rest.is_some() {
            return Err(bad("only tcp, udp, sctp, udplite and icmp take arguments"));
        }
        Ok(Probe::Other { protocol })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        for spec in ["icmp/8/0", "tcp/80", "udp/1500", "tcp/22->80", "47"] {
            let probe: Probe = spec.parse().unwrap();
            assert_eq!(probe.to_string(), spec);
        }
        assert_eq!("icmp".parse::<Probe>().unwrap(), Probe::ping());
        assert_eq!(
            "tcp".parse::<Probe>().unwrap_err().reason,
            "a port protocol needs /<port>"
        );
        assert_eq!(
            "icmp/300".parse::<Probe>().unwrap_err().reason,
            "icmp type must be 0-255"
        );
    }
}
