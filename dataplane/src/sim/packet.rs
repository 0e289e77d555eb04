//! The packets the simulator walks: addresses, protocol and the transport header fields
//! policy can match on.

use std::fmt;
use std::net::IpAddr;

use calico_core::iptables::IpFamily;
use calico_core::model::Protocol;

/// Transport fields of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP, UDP, SCTP, UDP-Lite.
    Ports { src: u16, dst: u16 },
    /// ICMP or ICMPv6.
    Icmp { icmp_type: u8, code: u8 },
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
        }
    }

    /// A UDP datagram.
    pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Packet {
            protocol: Protocol::Udp,
            ..Packet::tcp(src, dst, src_port, dst_port)
        }
    }

    /// An echo request (ICMP type 8, or ICMPv6 type 128 between IPv6 addresses).
    pub fn ping(src: IpAddr, dst: IpAddr) -> Self {
        let (protocol, icmp_type) = if src.is_ipv6() {
            (Protocol::Icmpv6, 128)
        } else {
            (Protocol::Icmp, 8)
        };
        Packet {
            src,
            dst,
            protocol,
            l4: L4::Icmp { icmp_type, code: 0 },
        }
    }

    /// An ICMP or ICMPv6 message of any type and code.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8) -> Self {
        Packet {
            l4: L4::Icmp { icmp_type, code },
            ..Packet::ping(src, dst)
        }
    }

    /// The answer: addresses and ports swapped, an echo request becomes an echo reply.
    pub fn reply(&self) -> Self {
        let l4 = match self.l4 {
            L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
            L4::Icmp { icmp_type: 8, code } => L4::Icmp { icmp_type: 0, code },
            L4::Icmp {
                icmp_type: 128,
                code,
            } => L4::Icmp {
                icmp_type: 129,
                code,
            },
            other => other,
        };
        Packet {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            l4,
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
            L4::Icmp { icmp_type, code } => write!(
                f,
                "{} {} -> {} type {icmp_type} code {code}",
                self.protocol, self.src, self.dst
            ),
            L4::Opaque => write!(f, "{} {} -> {}", self.protocol, self.src, self.dst),
        }
    }
}

fn fmt_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
