//! The overlay part of a [`crate::desired::DesiredState`]: tunnel devices (`vxlan.calico`,
//! `tunl0`), the routes through them, and for VXLAN the ARP and FDB entries that map a remote
//! VTEP's MAC to its host. The agent programs these itself from the datastore (stock BIRD 2
//! has no `krt_tunnel`, and VXLAN routes never came from BGP), so both dataplanes take them
//! like the rest of the desired state, and [`changes`] diffs them like [`crate::plan`] does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::desired::Neighbour;
use crate::model::MacAddr;
use crate::plan::Change;

/// What kind of tunnel a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TunnelKind {
    /// `ip link add <name> address <mac> type vxlan id <vni> dstport <port> nolearning`.
    Vxlan { vni: u32, port: u16, mac: MacAddr },
    /// `ip tunnel add <name> mode ipip` (the kernel's fallback device `tunl0`).
    Ipip,
}

/// One tunnel device, up, with `mtu` and (when known) `addr/32` as its only IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelDevice {
    pub name: String,
    pub kind: TunnelKind,
    pub mtu: u32,
    pub addr: Option<Ipv4Addr>,
}

impl fmt::Display for TunnelDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TunnelKind::Vxlan { vni, port, mac } => write!(
                f,
                "{} vxlan id {vni} dstport {port} address {mac} mtu {}",
                self.name, self.mtu
            )?,
            TunnelKind::Ipip => write!(f, "{} ipip mtu {}", self.name, self.mtu)?,
        }
        match self.addr {
            Some(addr) => write!(f, " addr {addr}/32"),
            None => f.write_str(" no addr"),
        }
    }
}

/// A route through a tunnel (like `ip route replace <dst> via <via> dev <dev> onlink`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelRoute {
    pub dst: IpNet,
    pub via: IpAddr,
    pub dev: String,
}

impl fmt::Display for TunnelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {} dev {} onlink", self.dst, self.via, self.dev)
    }
}

/// A VXLAN forwarding entry (like `bridge fdb replace <mac> dev <dev> dst <dst> self permanent`):
/// frames for `mac` are sent in UDP to the host at `dst`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: IpAddr,
    pub dev: String,
}

impl fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dst {} dev {}", self.mac, self.dst, self.dev)
    }
}

/// Everything overlay one host should hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overlay {
    /// Device name → device.
    pub devices: BTreeMap<String, TunnelDevice>,
    pub routes: BTreeSet<TunnelRoute>,
    /// Permanent ARP entries on tunnel devices: remote VTEP address → remote VTEP MAC.
    pub neighbours: BTreeSet<Neighbour>,
    pub fdb: BTreeSet<FdbEntry>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        *self == Overlay::default()
    }
}

/// The steps from `observed` to `desired`: devices first (routes need them), then forwarding
/// and ARP entries, then routes; removals in the reverse order, devices last.
pub fn changes(desired: &Overlay, observed: &Overlay) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, dev) in &desired.devices {
        if observed.devices.get(name) != Some(dev) {
            out.push(Change::SetTunnel(dev.clone()));
        }
    }
    out.extend(
        observed
            .routes
            .difference(&desired.routes)
            .cloned()
            .map(Change::DelTunnelRoute),
    );
    out.extend(
        observed
            .neighbours
            .difference(&desired.neighbours)
            .cloned()
            .map(Change::DelTunnelNeighbour),
    );
    out.extend(
        observed
            .fdb
            .difference(&desired.fdb)
            .cloned()
            .map(Change::DelFdb),
    );
    out.extend(
        desired
            .fdb
            .difference(&observed.fdb)
            .cloned()
            .map(Change::AddFdb),
    );
    out.extend(
        desired
            .neighbours
            .difference(&observed.neighbours)
            .cloned()
            .map(Change::AddTunnelNeighbour),
    );
    out.extend(
        desired
            .routes
            .difference(&observed.routes)
            .cloned()
            .map(Change::AddTunnelRoute),
    );
    for name in observed.devices.keys() {
        if !desired.devices.contains_key(name) {
            out.push(Change::DeleteTunnel { name: name.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> Overlay {
        let dev = "vxlan.calico".to_string();
        let mac = MacAddr([0x66, 0, 0, 0, 0, 2]);
        let peer: IpAddr = "10.77.0.64".parse().unwrap();
        Overlay {
            devices: [(
                dev.clone(),
                TunnelDevice {
                    name: dev.clone(),
                    kind: TunnelKind::Vxlan {
                        vni: 4096,
                        port: 4789,
                        mac: MacAddr([0x66, 0, 0, 0, 0, 1]),
                    },
                    mtu: 1450,
                    addr: Some(Ipv4Addr::new(10, 77, 0, 0)),
                },
            )]
            .into(),
            routes: [TunnelRoute {
                dst: "10.77.0.64/26".parse().unwrap(),
                via: peer,
                dev: dev.clone(),
            }]
            .into(),
            neighbours: [Neighbour {
                ip: peer,
                mac,
                dev: dev.clone(),
            }]
            .into(),
            fdb: [FdbEntry {
                mac,
                dst: "172.31.250.2".parse().unwrap(),
                dev,
            }]
            .into(),
        }
    }

    fn steps(changes: &[Change]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn devices_come_first_and_go_last() {
        let empty = Overlay::default();
        assert_eq!(
            steps(&changes(&overlay(), &empty)),
            [
                "set tunnel vxlan.calico vxlan id 4096 dstport 4789 address 66:00:00:00:00:01 mtu 1450 addr 10.77.0.0/32",
                "add fdb 66:00:00:00:00:02 dst 172.31.250.2 dev vxlan.calico",
                "add neighbour 10.77.0.64 lladdr 66:00:00:00:00:02 dev vxlan.calico",
                "add route 10.77.0.64/26 via 10.77.0.64 dev vxlan.calico onlink",
            ]
        );
        assert_eq!(
            steps(&changes(&empty, &overlay())),
            [
                "del route 10.77.0.64/26 via 10.77.0.64 dev vxlan.calico onlink",
                "del neighbour 10.77.0.64 dev vxlan.calico",
                "del fdb 66:00:00:00:00:02 dst 172.31.250.2 dev vxlan.calico",
                "delete tunnel vxlan.calico",
            ]
        );
        assert!(changes(&overlay(), &overlay()).is_empty());
    }
}
