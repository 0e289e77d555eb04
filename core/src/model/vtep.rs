//! A host's VXLAN tunnel endpoint (`/calico/v1/host/<host>/vtep`): our extension in the spirit
//! of Calico v3's `ipv4VXLANTunnelAddr` / `vxlanTunnelMACAddr` node fields, kept under the
//! host's v1 tree like the original's per-host `IpInIpTunnelAddr`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::MacAddr;
use crate::ModelError;

/// The VXLAN port (IANA's 4789, as Calico v3 and Linux's `dstport 4789`).
pub const VXLAN_PORT: u16 = 4789;
/// The VXLAN network identifier Calico v3 uses.
pub const VXLAN_VNI: u32 = 4096;
/// The MTU of `vxlan.calico`: a 1500-byte link less the 50 bytes of VXLAN encapsulation.
pub const VXLAN_MTU: u32 = 1450;
/// The name of the VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.calico";

/// JSON `{"ip": "192.168.0.1", "mac": "66:0e:2c:..."}`: the address `vxlan.calico` holds
/// (from a VXLAN pool, assigned through IPAM to the host) and the device's MAC, which remote
/// hosts put in their ARP and FDB entries. The underlay address is the host's `bird_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vtep {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

impl Vtep {
    /// A VTEP whose MAC is derived from the host name, so every writer picks the same one.
    pub fn for_host(host: &str, ip: Ipv4Addr) -> Self {
        // FNV-1a: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in host.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        // Locally administered, unicast.
        Vtep {
            ip,
            mac: MacAddr([0x66, b[1], b[2], b[3], b[4], b[5]]),
        }
    }

    /// A usable VTEP has a unicast, locally administered MAC and a unicast address.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.mac.0[0] & 1 == 1 || self.mac.0 == [0; 6] {
            return Err(ModelError::field("mac", self.mac, "must be a unicast MAC"));
        }
        if self.ip.is_unspecified()
            || self.ip.is_loopback()
            || self.ip.is_multicast()
            || self.ip.is_broadcast()
        {
            return Err(ModelError::field(
                "ip",
                self.ip,
                "must be a unicast address",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_vteps_are_valid_and_stable() {
        let ip = Ipv4Addr::new(192, 168, 0, 1);
        let a = Vtep::for_host("host1", ip);
        assert_eq!(a, Vtep::for_host("host1", ip));
        assert_ne!(a.mac, Vtep::for_host("host2", ip).mac);
        a.validate().unwrap();
        let multicast = Vtep {
            mac: MacAddr([1, 0, 0, 0, 0, 1]),
            ..a
        };
        assert!(multicast
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mac"));
    }
}
