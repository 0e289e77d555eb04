use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// An IP pool (`/calico/v1/ipam/v{4,6}/pool/<cidr-dashed>`): where workload addresses come from
/// and which prefixes BIRD may export.
///
/// JSON as libcalico wrote it: `{"cidr": "192.168.0.0/16"}`, plus `"ipip": "tunl0"` and
/// `"masquerade": true` only when set, and `"ipam": false` / `"disabled": true` only when they
/// differ from the defaults. Our extension (Calico v3's `vxlanMode`): `"vxlan": true` when
/// cross-host traffic of the pool goes through `vxlan.calico`; only written when set, so
/// pools without it read and write exactly as the original's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPool {
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vxlan: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masquerade: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub ipam: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// Ranges no pool may overlap: loopback, link-local and multicast, v4 and v6.
const RESERVED: &[&str] = &[
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl IpPool {
    /// A plain pool (no IPIP, no NAT), its CIDR normalised to the network address.
    pub fn new(cidr: IpNet) -> Self {
        IpPool {
            cidr: cidr.trunc(),
            ipip: None,
            vxlan: false,
            masquerade: false,
            ipam: true,
            disabled: false,
        }
    }

    /// Whether cross-host traffic of this pool is tunnelled (IPIP or VXLAN), so BIRD must not
    /// install plain routes for it.
    pub fn is_overlay(&self) -> bool {
        self.ipip.is_some() || self.vxlan
    }

    /// Checks the invariants the original enforced (IPIP is IPv4-only; VXLAN likewise, and
    /// not both on one pool) and that the pool
    /// overlaps no range a workload must never be given or routed: loopback, link-local,
    /// multicast (so `0.0.0.0/0` and `::/0` are refused, naming the range they cover).
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Some(reserved) = RESERVED
            .iter()
            .filter_map(|r| r.parse::<IpNet>().ok())
            .find(|r| r.contains(&self.cidr) || self.cidr.contains(r))
        {
            return Err(ModelError::field(
                "cidr",
                self.cidr,
                format!("overlaps the reserved range {reserved}"),
            ));
        }
        if self.ipip.is_some() && matches!(self.cidr, IpNet::V6(_)) {
            return Err(ModelError::field(
                "ipip",
                self.cidr,
                "IPIP is only supported on IPv4 pools",
            ));
        }
        if self.vxlan && matches!(self.cidr, IpNet::V6(_)) {
            return Err(ModelError::field(
                "vxlan",
                self.cidr,
                "VXLAN is only supported on IPv4 pools",
            ));
        }
        if self.vxlan && self.ipip.is_some() {
            return Err(ModelError::field(
                "vxlan",
                self.cidr,
                "a pool is either IPIP or VXLAN, not both",
            ));
        }
        if let Some(dev) = &self.ipip {
            crate::names::validate_iface(dev)?;
        }
        Ok(())
    }
}
