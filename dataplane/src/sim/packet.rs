//! The packets the simulator walks: addresses, protocol and the transport header fields
//! policy can match on.

use std::fmt;
use std::net::IpAddr;

use calico_core::iptables::IpFamily;
use calico_core::model::Protocol;

/// Transport fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// TCP, UDP, SCTP, UDP-Lite.
    Ports { src: u16, dst: u16 },
    /// ICMP or ICMPv6. `id` is the identifier of query messages (echo, timestamp): each
    /// `ping` picks its own and the reply keeps it, so conntrack tells pings apart by it. Other
    /// messages carry 0.
    Icmp { icmp_type: u8, code: u8, id: u16 },
    /// Any other protocol: nothing to match beyond the protocol number.
    Opaque,
}

/// One IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub l4: L4,
    /// The packet a tunnel carries inside this one (VXLAN's UDP payload, IPIP's), or `None`.
    pub inner: Option<Inner>,
}

/// The headers of a tunnelled packet (one level: tunnels in tunnels are not modelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inner {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub l4: L4,
}

impl Inner {
    /// The headers of `packet`, to carry inside an outer packet.
    pub fn of(packet: &Packet) -> Self {
        Inner {
            src: packet.src,
            dst: packet.dst,
            protocol: packet.protocol,
            l4: packet.l4,
        }
    }

    /// The carried packet, as it leaves the tunnel.
    pub fn packet(&self) -> Packet {
        Packet {
            src: self.src,
            dst: self.dst,
            protocol: self.protocol,
            l4: self.l4,
            inner: None,
        }
    }
}

impl Packet {
    /// A TCP segment (the first of a connection when conntrack has not seen it).
    pub fn tcp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Packet {
            src,
            dst,
            protocol: Protocol::Tcp,
            l4: L4::Ports {
                src: src_port,
                dst: dst_port,
            },
            inner: None,
        }
    }

    /// A UDP datagram.
    pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Packet {
            protocol: Protocol::Udp,
            ..Packet::tcp(src, dst, src_port, dst_port)
        }
    }

    /// An echo request (ICMP type 8, or ICMPv6 type 128 between IPv6 addresses) with echo
    /// identifier `id`, like one `ping` run.
    pub fn ping(src: IpAddr, dst: IpAddr, id: u16) -> Self {
        let (protocol, icmp_type) = if src.is_ipv6() {
            (Protocol::Icmpv6, 128)
        } else {
            (Protocol::Icmp, 8)
        };
        Packet {
            src,
            dst,
            protocol,
            l4: L4::Icmp {
                icmp_type,
                code: 0,
                id,
            },
            inner: None,
        }
    }

    /// An ICMP or ICMPv6 message of any type and code (identifier 0).
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8) -> Self {
        Packet {
            l4: L4::Icmp {
                icmp_type,
                code,
                id: 0,
            },
            ..Packet::ping(src, dst, 0)
        }
    }

    /// The answer: addresses and ports swapped; a query (echo, timestamp request) becomes its
    /// reply with the same identifier.
    pub fn reply(&self) -> Self {
        let l4 = match self.l4 {
            L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
            L4::Icmp {
                icmp_type: icmp_type @ (8 | 13 | 128),
                code,
                id,
            } => L4::Icmp {
                icmp_type: icmp_counterpart(icmp_type),
                code,
                id,
            },
            other => other,
        };
        Packet {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            l4,
            inner: None,
        }
    }

    /// The family of the packet (by its destination).
    pub fn family(&self) -> IpFamily {
        if self.dst.is_ipv6() {
            IpFamily::V6
        } else {
            IpFamily::V4
        }
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_headers(f)?;
        match &self.inner {
            Some(inner) => write!(f, " carrying [{}]", inner.packet()),
            None => Ok(()),
        }
    }
}

impl Packet {
    fn fmt_headers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.l4 {
            L4::Ports { src, dst } => write!(
                f,
                "{} {}:{} -> {}:{}",
                self.protocol,
                fmt_addr(self.src),
                src,
                fmt_addr(self.dst),
                dst
            ),
            L4::Icmp {
                icmp_type,
                code,
                id,
            } => write!(
                f,
                "{} {} -> {} type {icmp_type} code {code} id {id}",
                self.protocol, self.src, self.dst
            ),
            L4::Opaque => write!(f, "{} {} -> {}", self.protocol, self.src, self.dst),
        }
    }
}

/// The other half of an ICMP query/reply pair (echo 8/0, timestamp 13/14, ICMPv6 echo
/// 128/129); any other type is its own counterpart.
pub fn icmp_counterpart(icmp_type: u8) -> u8 {
    match icmp_type {
        8 => 0,
        0 => 8,
        13 => 14,
        14 => 13,
        128 => 129,
        129 => 128,
        other => other,
    }
}

fn fmt_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
