//! `DesiredState`: everything one host's kernel and BIRD should hold, as plain sorted data.
//! The dataplanes take it whole (`Dataplane::apply`) and report what they hold in the same shape.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::iptables::{Chain, IpFamily, Table};
use crate::model::{AsNumber, BgpLogLevel, MacAddr};

/// Identifies one `iptables-restore` unit: a table of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    pub family: IpFamily,
    pub table: Table,
}

/// The chains we own in one table, and the jumps from the kernel's built-in chains into them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableState {
    pub chains: BTreeMap<String, Chain>,
    /// Built-in chain (`FORWARD`, `INPUT`, `POSTROUTING`) → our chain it jumps to first.
    pub hooks: BTreeMap<String, String>,
}

/// The kind of an ipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpSetKind {
    /// `hash:ip`: tag sets (members are host addresses, /32 or /128).
    HashIp,
    /// `hash:net`: pool sets for NAT-outgoing.
    HashNet,
}

/// One ipset and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    pub family: IpFamily,
    pub kind: IpSetKind,
    pub members: BTreeSet<IpNet>,
}

/// A link-scope route to a local workload (like `ip route replace <dst> dev <dev>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub dev: String,
}

/// A static neighbour entry for a workload's MAC (like `ip neigh replace <ip> lladdr <mac> dev <dev>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub dev: String,
}

/// A proxy-NDP entry: the host answers neighbour solicitations for `ip` arriving on `dev`
/// (like `ip -6 neigh add proxy <ip> dev <dev>`). Felix 1.x adds one per IPv6 workload
/// interface for the endpoint's `ipv6_gateway`, the next hop of the workload's v6 default
/// route, which the host holds on another interface (reference 3.2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyNeighbour {
    pub ip: Ipv6Addr,
    pub dev: String,
}

/// Which part of the configuration a BGP peer comes from (it names the BIRD protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// `Mesh_<ip>`: another calico host.
    Mesh,
    /// `Global_<ip>`: a global peer.
    Global,
    /// `Node_<ip>`: a peer of this host only.
    Node,
}

/// One BGP session BIRD should hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BirdPeer {
    pub kind: PeerKind,
    pub ip: IpAddr,
    pub as_num: AsNumber,
}

/// What one BIRD instance (v4 or v6) should run; rendered to `bird.cfg` by `render::bird`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    /// Always the host's IPv4 (BIRD router ids are 32-bit, also for BIRD6).
    pub router_id: Ipv4Addr,
    /// The source address of sessions (the host's address of this family).
    pub source_address: IpAddr,
    pub local_as: AsNumber,
    pub peers: BTreeSet<BirdPeer>,
    /// Only prefixes inside these pools are exported to peers.
    pub export_pools: BTreeSet<IpNet>,
    /// Pools whose cross-host routes go through a tunnel (IPIP or VXLAN): the agent programs
    /// those routes, so BIRD's kernel protocol must not install its own for them.
    pub overlay_pools: BTreeSet<IpNet>,
    /// IPAM blocks affine to this host (reference 4.4): each is a static blackhole route in
    /// BIRD, exported to peers as the one route for the block, while the more specific routes
    /// inside it (this host's workload /32s) are not exported. Routes of borrowed addresses
    /// outside these blocks are still exported one by one.
    pub blocks: BTreeSet<IpNet>,
    pub loglevel: Option<BgpLogLevel>,
}

/// Everything one host should hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    pub tables: BTreeMap<TableId, TableState>,
    pub ipsets: BTreeMap<String, IpSet>,
    pub routes: BTreeSet<Route>,
    pub neighbours: BTreeSet<Neighbour>,
    pub proxy_neighbours: BTreeSet<ProxyNeighbour>,
    /// Sysctl path (e.g. `net.ipv4.conf.cali1234.proxy_arp`) → value.
    pub sysctls: BTreeMap<String, String>,
    /// BIRD for IPv4; `None` when the host has no IPv4 BGP address.
    pub bird_v4: Option<BirdConfig>,
    /// BIRD6; `None` when the host has no IPv6 BGP address.
    pub bird_v6: Option<BirdConfig>,
    /// Tunnel devices and what goes through them (VXLAN and IPIP pools).
    pub overlay: crate::tunnel::Overlay,
}
