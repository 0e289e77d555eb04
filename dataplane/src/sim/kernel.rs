//! One host's kernel state: network namespaces, links, addresses, routes, neighbours, sysctls,
//! netfilter, ipsets and conntrack, with operations named after the iproute2 commands they model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use calico_core::desired::{BirdConfig, IpSet, Neighbour, TableId};
use calico_core::model::MacAddr;
use calico_core::tunnel::TunnelDevice;
use ipnet::IpNet;

use super::conntrack::Conntrack;
use super::netfilter::Netfilter;
use super::route::{KernelRoute, RouteProto, RouteTable};
use crate::DataplaneError;

/// The name of the host's own (initial) network namespace, as the kernel calls it.
pub const ROOT_NS: &str = "init_net";

/// What kind of device a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Loopback,
    /// The host's wire interface (`eth0`); frames leaving it are the world's business.
    Wire,
    /// One end of a veth pair; `peer` is the other end's link id.
    Veth {
        peer: u64,
    },
    /// A tunnel device (`vxlan.calico`, `tunl0`); what it is lives in [`Kernel::tunnels`].
    Tunnel,
}

/// One network device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: u64,
    pub ns: String,
    pub name: String,
    pub mac: MacAddr,
    pub up: bool,
    pub kind: LinkKind,
    pub addrs: BTreeSet<IpNet>,
    /// Per-interface sysctls: (`ipv4.conf`, `proxy_arp`) → `1`; they vanish with the link.
    pub conf: BTreeMap<(String, String), String>,
}

/// A neighbour (ARP/NDP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighEntry {
    pub mac: MacAddr,
    /// Static (`ip neigh replace ... nud permanent`) rather than learned.
    pub permanent: bool,
}

/// Routing table and neighbours of one namespace (links live in [`Kernel::links`]).
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub routes: RouteTable,
    pub neighbours: BTreeMap<(IpAddr, String), NeighEntry>,
    /// Proxy-NDP entries (`ip -6 neigh add proxy <ip> dev <dev>`); see `proxy_ndp`.
    pub proxies: BTreeSet<(Ipv6Addr, String)>,
}

/// What `apply` owns, so it can remove what it no longer wants and `observe` can report it.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    pub tables: BTreeMap<TableId, BTreeSet<String>>,
    pub ipsets: BTreeSet<String>,
    pub sysctls: BTreeSet<String>,
    pub neighbours: BTreeSet<Neighbour>,
}

/// One host's kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub host: String,
    pub wire: String,
    pub namespaces: BTreeMap<String, Namespace>,
    pub links: BTreeMap<u64, Link>,
    next_link: u64,
    /// Global sysctls (`net.ipv4.ip_forward`, `net.ipv4.conf.all.rp_filter`, ...).
    pub sysctls: BTreeMap<String, String>,
    pub netfilter: Netfilter,
    pub ipsets: BTreeMap<String, IpSet>,
    pub conntrack: Conntrack,
    pub owned: Owned,
    pub bird_v4: Option<BirdConfig>,
    pub bird_v6: Option<BirdConfig>,
    /// Tunnel devices of the root namespace by name, as last set (see `super::tunnel`).
    pub tunnels: BTreeMap<String, TunnelDevice>,
    /// VXLAN forwarding entries: (device, remote MAC) → remote host address.
    pub fdb: BTreeMap<(String, MacAddr), IpAddr>,
}

/// A sysctl key split into its per-interface form: `net.<section>.<iface>.<param>`.
pub(crate) fn split_iface_sysctl(key: &str) -> Option<(String, &str, &str)> {
    let (family, kind, iface, param) = iface_sysctl_parts(key)?;
    Some((format!("{family}.{kind}"), iface, param))
}

/// [`split_iface_sysctl`] with the section in its two parts (`ipv4`, `conf`), copying nothing.
fn iface_sysctl_parts(key: &str) -> Option<(&str, &str, &str, &str)> {
    let rest = key.strip_prefix("net.")?;
    let (family, rest) = rest.split_once('.')?;
    let (kind, rest) = rest.split_once('.')?;
    if !matches!(family, "ipv4" | "ipv6") || !matches!(kind, "conf" | "neigh") {
        return None;
    }
    let (iface, param) = rest.rsplit_once('.')?;
    if matches!(iface, "all" | "default") {
        return None;
    }
    Some((family, kind, iface, param))
}

/// The value of per-interface sysctl `net.<family>.<kind>.<link>.<param>`, if set.
fn link_conf<'l>(link: &'l Link, family: &str, kind: &str, param: &str) -> Option<&'l str> {
    let section = |s: &str| s.split_once('.') == Some((family, kind));
    link.conf
        .iter()
        .find(|((s, p), _)| p == param && section(s))
        .map(|(_, v)| v.as_str())
}

/// A deterministic locally administered MAC from the host name and a counter.
fn derive_mac(host: &str, n: u64) -> MacAddr {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    MacAddr([0x02 | (b[0] & 0xfc), b[1], b[2], b[3], b[4], b[5]])
}

impl Kernel {
    /// A host with `lo` and its wire interface (up, with the given addresses), and Linux's
    /// defaults: forwarding and rp_filter off (the agent's desired state turns them on).
    pub fn new(host: &str, wire: &str, mac: Option<MacAddr>, addrs: &[IpNet]) -> Self {
        let mut kernel = Kernel {
            host: host.to_string(),
            wire: wire.to_string(),
            namespaces: BTreeMap::new(),
            links: BTreeMap::new(),
            next_link: 1,
            sysctls: BTreeMap::new(),
            netfilter: Netfilter::default(),
            ipsets: BTreeMap::new(),
            conntrack: Conntrack::default(),
            owned: Owned::default(),
            bird_v4: None,
            bird_v6: None,
            tunnels: BTreeMap::new(),
            fdb: BTreeMap::new(),
        };
        for (key, value) in [
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv6.conf.all.forwarding", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            kernel.sysctls.insert(key.to_string(), value.to_string());
        }
        kernel
            .namespaces
            .insert(ROOT_NS.to_string(), Namespace::default());
        kernel.add_loopback(ROOT_NS);
        let mac = mac.unwrap_or_else(|| derive_mac(host, 0));
        let id = kernel.new_link(ROOT_NS, wire, LinkKind::Wire, Some(mac));
        if let Some(link) = kernel.links.get_mut(&id) {
            link.up = true;
        }
        for addr in addrs {
            // Cannot fail: the link was just made in the root namespace.
            let _ = kernel.addr_add(ROOT_NS, wire, *addr);
        }
        kernel
    }

    fn add_loopback(&mut self, ns: &str) {
        let id = self.new_link(ns, "lo", LinkKind::Loopback, Some(MacAddr([0; 6])));
        if let Some(lo) = self.links.get_mut(&id) {
            lo.up = true;
            lo.addrs.insert(IpNet::from(IpAddr::from([127, 0, 0, 1])));
            lo.addrs
                .insert(IpNet::from(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])));
        }
    }

    pub(crate) fn new_link(
        &mut self,
        ns: &str,
        name: &str,
        kind: LinkKind,
        mac: Option<MacAddr>,
    ) -> u64 {
        let id = self.next_link;
        self.next_link += 1;
        let mac = mac.unwrap_or_else(|| derive_mac(&self.host, id));
        self.links.insert(
            id,
            Link {
                id,
                ns: ns.to_string(),
                name: name.to_string(),
                mac,
                up: false,
                kind,
                addrs: BTreeSet::new(),
                conf: BTreeMap::new(),
            },
        );
        id
    }

    pub fn ns(&self, ns: &str) -> Result<&Namespace, DataplaneError> {
        self.namespaces
            .get(ns)
            .ok_or_else(|| DataplaneError::NamespaceNotFound {
                netns: ns.to_string(),
            })
    }

    pub fn ns_mut(&mut self, ns: &str) -> Result<&mut Namespace, DataplaneError> {
        self.namespaces
            .get_mut(ns)
            .ok_or_else(|| DataplaneError::NamespaceNotFound {
                netns: ns.to_string(),
            })
    }

    /// The link called `name` in namespace `ns`.
    pub fn link(&self, ns: &str, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.ns == ns && l.name == name)
    }

    fn link_id(&self, ns: &str, name: &str) -> Result<u64, DataplaneError> {
        self.link(ns, name)
            .map(|l| l.id)
            .ok_or_else(|| DataplaneError::InterfaceNotFound {
                iface: format!("{name} in namespace {ns}"),
            })
    }

    /// Like `ip netns add <name>`: a namespace with only `lo`.
    pub fn netns_add(&mut self, name: &str) -> Result<(), DataplaneError> {
        if name == ROOT_NS || name.is_empty() || name.contains('/') {
            return Err(DataplaneError::Kernel {
                operation: format!("adding namespace {name}"),
                reason: "reserved or invalid name".to_string(),
            });
        }
        if self.namespaces.contains_key(name) {
            return Err(DataplaneError::Kernel {
                operation: format!("adding namespace {name}"),
                reason: "it already exists".to_string(),
            });
        }
        self.namespaces
            .insert(name.to_string(), Namespace::default());
        self.add_loopback(name);
        Ok(())
    }

    /// Like `ip netns del <name>`: its links go too (a veth's peer with them).
    pub fn netns_del(&mut self, name: &str) -> Result<(), DataplaneError> {
        if name == ROOT_NS {
            return Err(DataplaneError::Kernel {
                operation: format!("deleting namespace {name}"),
                reason: "the host namespace cannot be deleted".to_string(),
            });
        }
        self.ns(name)?;
        let ids: Vec<u64> = self
            .links
            .values()
            .filter(|l| l.ns == name)
            .map(|l| l.id)
            .collect();
        for id in ids {
            self.link_del_id(id);
        }
        self.namespaces.remove(name);
        Ok(())
    }

    /// Like `ip link add <a> type veth peer name <b>` in namespace `ns`; returns both ids.
    pub fn veth_add(&mut self, ns: &str, a: &str, b: &str) -> Result<(u64, u64), DataplaneError> {
        self.ns(ns)?;
        for name in [a, b] {
            if self.link(ns, name).is_some() || a == b {
                return Err(DataplaneError::InterfaceExists {
                    iface: name.to_string(),
                });
            }
        }
        let ida = self.new_link(ns, a, LinkKind::Veth { peer: 0 }, None);
        let idb = self.new_link(ns, b, LinkKind::Veth { peer: ida }, None);
        if let Some(link) = self.links.get_mut(&ida) {
            link.kind = LinkKind::Veth { peer: idb };
        }
        Ok((ida, idb))
    }

    /// Like `ip link set <name> up|down`.
    pub fn link_set_up(&mut self, ns: &str, name: &str, up: bool) -> Result<(), DataplaneError> {
        let id = self.link_id(ns, name)?;
        if let Some(link) = self.links.get_mut(&id) {
            link.up = up;
        }
        Ok(())
    }

    /// Like `ip link set <name> netns <to>`: addresses, routes and sysctls stay behind, the
    /// link arrives down.
    pub fn link_set_ns(&mut self, ns: &str, name: &str, to: &str) -> Result<(), DataplaneError> {
        self.ns(to)?;
        let id = self.link_id(ns, name)?;
        if self.link(to, name).is_some() {
            return Err(DataplaneError::InterfaceExists {
                iface: format!("{name} in namespace {to}"),
            });
        }
        self.forget_dev(ns, name);
        if let Some(link) = self.links.get_mut(&id) {
            link.ns = to.to_string();
            link.up = false;
            link.addrs.clear();
            link.conf.clear();
        }
        Ok(())
    }

    /// Like `ip link set <name> name <new>`.
    pub fn link_rename(&mut self, ns: &str, name: &str, new: &str) -> Result<(), DataplaneError> {
        let id = self.link_id(ns, name)?;
        if self.link(ns, new).is_some() {
            return Err(DataplaneError::InterfaceExists {
                iface: format!("{new} in namespace {ns}"),
            });
        }
        if let Some(link) = self.links.get_mut(&id) {
            link.name = new.to_string();
        }
        if let Ok(space) = self.ns_mut(ns) {
            space.routes.rename_dev(name, new);
            let moved: Vec<_> = space
                .neighbours
                .iter()
                .filter(|((_, dev), _)| dev == name)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for ((ip, _), entry) in moved {
                space.neighbours.remove(&(ip, name.to_string()));
                space.neighbours.insert((ip, new.to_string()), entry);
            }
            let proxied: Vec<Ipv6Addr> = space
                .proxies
                .iter()
                .filter(|(_, dev)| dev == name)
                .map(|(ip, _)| *ip)
                .collect();
            for ip in proxied {
                space.proxies.remove(&(ip, name.to_string()));
                space.proxies.insert((ip, new.to_string()));
            }
        }
        Ok(())
    }

    /// Like `ip link del <name>`; a veth takes its peer with it. False when absent.
    pub fn link_del(&mut self, ns: &str, name: &str) -> bool {
        match self.link(ns, name).map(|l| l.id) {
            Some(id) => {
                self.link_del_id(id);
                true
            }
            None => false,
        }
    }

    fn link_del_id(&mut self, id: u64) {
        let Some(link) = self.links.remove(&id) else {
            return;
        };
        self.forget_dev(&link.ns, &link.name);
        if let LinkKind::Veth { peer } = link.kind {
            if let Some(peer) = self.links.remove(&peer) {
                self.forget_dev(&peer.ns, &peer.name);
            }
        }
    }

    /// Drops routes and neighbours through a device leaving a namespace.
    fn forget_dev(&mut self, ns: &str, dev: &str) {
        if let Some(space) = self.namespaces.get_mut(ns) {
            space.routes.remove_dev(dev);
            space.neighbours.retain(|(_, d), _| d != dev);
            space.proxies.retain(|(_, d)| d != dev);
        }
    }

    /// Like `ip addr add <net> dev <iface>`; a prefix shorter than a host adds the connected
    /// route (proto kernel).
    pub fn addr_add(&mut self, ns: &str, iface: &str, net: IpNet) -> Result<(), DataplaneError> {
        let id = self.link_id(ns, iface)?;
        let Some(link) = self.links.get_mut(&id) else {
            return Ok(());
        };
        if !link.addrs.insert(net) {
            return Err(DataplaneError::Kernel {
                operation: format!("adding address {net} to {iface} in namespace {ns}"),
                reason: "address already assigned".to_string(),
            });
        }
        if net.prefix_len() < net.max_prefix_len() {
            let route = KernelRoute::dev(net.trunc(), iface, RouteProto::Kernel);
            self.ns_mut(ns)?.routes.replace(route);
        }
        Ok(())
    }

    /// Like `ip addr del <net> dev <iface>`.
    pub fn addr_del(&mut self, ns: &str, iface: &str, net: IpNet) -> Result<(), DataplaneError> {
        let id = self.link_id(ns, iface)?;
        let removed = self
            .links
            .get_mut(&id)
            .is_some_and(|link| link.addrs.remove(&net));
        if !removed {
            return Err(DataplaneError::Kernel {
                operation: format!("deleting address {net} from {iface} in namespace {ns}"),
                reason: "address not assigned".to_string(),
            });
        }
        if net.prefix_len() < net.max_prefix_len() {
            let space = self.ns_mut(ns)?;
            if space
                .routes
                .get(&net.trunc())
                .is_some_and(|r| r.proto == RouteProto::Kernel)
            {
                space.routes.remove(&net.trunc());
            }
        }
        Ok(())
    }

    /// Like `ip route replace`; a `dev` must exist in the namespace.
    pub fn route_replace(&mut self, ns: &str, route: KernelRoute) -> Result<(), DataplaneError> {
        if let Some(dev) = &route.dev {
            self.link_id(ns, dev)?;
        }
        self.ns_mut(ns)?.routes.replace(route);
        Ok(())
    }

    /// The link (in `ns`) that owns local address `ip`, if any.
    pub fn local_link(&self, ns: &str, ip: IpAddr) -> Option<&Link> {
        self.links
            .values()
            .find(|l| l.ns == ns && l.addrs.iter().any(|a| a.addr() == ip))
    }

    /// The other end of a veth.
    pub fn peer(&self, link: &Link) -> Option<&Link> {
        match link.kind {
            LinkKind::Veth { peer } => self.links.get(&peer),
            _ => None,
        }
    }

    /// Sets a sysctl (per-interface keys need the interface in the host namespace).
    pub fn sysctl_set(&mut self, key: &str, value: &str) -> Result<(), DataplaneError> {
        match split_iface_sysctl(key) {
            Some((section, iface, param)) => {
                let id = self.link_id(ROOT_NS, iface)?;
                if let Some(link) = self.links.get_mut(&id) {
                    link.conf
                        .insert((section, param.to_string()), value.to_string());
                }
            }
            None => {
                self.sysctls.insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }

    /// Reads a sysctl; `None` when it (or its interface) does not exist.
    pub fn sysctl_get(&self, key: &str) -> Option<String> {
        self.sysctl_str(key).map(str::to_string)
    }

    /// [`Kernel::sysctl_get`] without copying the value (packet walks read several a hop).
    pub fn sysctl_str(&self, key: &str) -> Option<&str> {
        match iface_sysctl_parts(key) {
            Some((family, kind, iface, param)) => {
                link_conf(self.link(ROOT_NS, iface)?, family, kind, param)
            }
            None => self.sysctls.get(key).map(String::as_str),
        }
    }

    /// Whether a 0/1 sysctl is on (absent counts as off).
    pub fn sysctl_on(&self, key: &str) -> bool {
        self.sysctl_str(key).is_some_and(|v| v.trim() != "0")
    }

    /// The effective IPv4 rp_filter of a host interface: max(all, iface or default).
    pub fn rp_filter(&self, iface: &str) -> u32 {
        let num = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
        let all = num(self.sysctl_str("net.ipv4.conf.all.rp_filter"));
        // Read on every forwarded packet: the interface's own value straight from its link.
        let own = match iface {
            "all" | "default" => self.sysctl_str(&format!("net.ipv4.conf.{iface}.rp_filter")),
            _ => self
                .link(ROOT_NS, iface)
                .and_then(|link| link_conf(link, "ipv4", "conf", "rp_filter")),
        }
        .or_else(|| self.sysctl_str("net.ipv4.conf.default.rp_filter"));
        all.max(num(own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rp_filter_is_the_stricter_of_all_and_the_interface_or_default() {
        let mut k = Kernel::new("h", "eth0", None, &[]);
        k.veth_add(ROOT_NS, "cali1", "tmp1").unwrap();
        let set = |k: &mut Kernel, key: &str, v: &str| k.sysctl_set(key, v).unwrap();
        set(&mut k, "net.ipv4.conf.all.rp_filter", "0");
        set(&mut k, "net.ipv4.conf.default.rp_filter", "2");
        assert_eq!(k.rp_filter("cali1"), 2);
        set(&mut k, "net.ipv4.conf.cali1.rp_filter", "1");
        assert_eq!(k.rp_filter("cali1"), 1);
        assert_eq!(k.sysctl_str("net.ipv4.conf.cali1.rp_filter"), Some("1"));
        assert_eq!(
            k.sysctl_get("net.ipv4.conf.cali1.rp_filter").as_deref(),
            Some("1")
        );
        // Another section's parameter of the same name is not the IPv4 one.
        set(&mut k, "net.ipv6.conf.cali1.rp_filter", "0");
        assert_eq!(k.rp_filter("cali1"), 1);
        // An interface nobody has falls back to the default.
        assert_eq!(k.rp_filter("nosuch"), 2);
        set(&mut k, "net.ipv4.conf.all.rp_filter", "2");
        assert_eq!(k.rp_filter("cali1"), 2);
        assert!(k.sysctl_on("net.ipv4.conf.all.rp_filter"));
        assert!(!k.sysctl_on("net.ipv4.ip_forward_nonexistent"));
    }
}
