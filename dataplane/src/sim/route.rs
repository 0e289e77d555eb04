//! Routing tables: one per namespace, keyed by destination (like `ip route replace`), looked up
//! by longest prefix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Who installed a route (iproute2's `proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteProto {
    /// Connected routes the kernel adds for an address with a prefix.
    Kernel,
    /// Added by hand or by `container add` (`ip route replace` defaults to `boot`; we say static).
    Static,
    /// Ours: the /32 and /128 device routes to local workloads.
    Calico,
    /// Learned over BGP.
    Bird,
    /// Ours too: routes through a tunnel device (`via <gw> dev vxlan.calico onlink`); kept
    /// apart from [`RouteProto::Calico`] as the Linux dataplane keeps them apart.
    Overlay,
}

impl fmt::Display for RouteProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteProto::Kernel => "kernel",
            RouteProto::Static => "static",
            RouteProto::Calico => "calico",
            RouteProto::Bird => "bird",
            RouteProto::Overlay => "calico-overlay",
        })
    }
}

/// One route: `<dst> [via <gw>] [dev <dev>] [onlink] proto <proto>`; a route with neither a
/// gateway nor a device is `blackhole <dst>` (packets to it are dropped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    /// The gateway is reachable on `dev` without a covering route.
    pub onlink: bool,
    pub proto: RouteProto,
}

impl KernelRoute {
    /// `ip route replace <dst> dev <dev>` (scope link).
    pub fn dev(dst: IpNet, dev: &str, proto: RouteProto) -> Self {
        KernelRoute {
            dst,
            via: None,
            dev: Some(dev.to_string()),
            onlink: false,
            proto,
        }
    }

    /// `ip route replace blackhole <dst>`.
    pub fn blackhole(dst: IpNet, proto: RouteProto) -> Self {
        KernelRoute {
            dst,
            via: None,
            dev: None,
            onlink: false,
            proto,
        }
    }

    /// Whether packets to it are dropped (`blackhole <dst>`).
    pub fn is_blackhole(&self) -> bool {
        self.via.is_none() && self.dev.is_none()
    }

    /// `ip route replace <dst> via <gw> [dev <dev>]`.
    pub fn via(dst: IpNet, gw: IpAddr, dev: Option<&str>, proto: RouteProto) -> Self {
        KernelRoute {
            dst,
            via: Some(gw),
            dev: dev.map(str::to_string),
            onlink: false,
            proto,
        }
    }
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = match self.dst {
            IpNet::V4(n) if n.prefix_len() == 0 => true,
            IpNet::V6(n) if n.prefix_len() == 0 => true,
            _ => false,
        };
        if self.is_blackhole() {
            f.write_str("blackhole ")?;
        }
        if default {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        write!(f, " proto {}", self.proto)
    }
}

/// The main routing table of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    /// Shared between copies until one changes: what-if copies every host's kernel (a
    /// thousand routes each) and changes a few.
    routes: Arc<BTreeMap<IpNet, KernelRoute>>,
    /// How many routes have each (is IPv6, prefix length): a lookup tries only the lengths
    /// present (a host has four or so) instead of all 33 (129).
    lens: BTreeMap<(bool, u8), usize>,
}

fn len_key(net: &IpNet) -> (bool, u8) {
    (matches!(net, IpNet::V6(_)), net.prefix_len())
}

impl RouteTable {
    /// Like `ip route replace`: one route per destination.
    pub fn replace(&mut self, route: KernelRoute) -> Option<KernelRoute> {
        let key = route.dst.trunc();
        let old = Arc::make_mut(&mut self.routes).insert(key, route);
        if old.is_none() {
            *self.lens.entry(len_key(&key)).or_default() += 1;
        }
        old
    }

    /// Like `ip route del <dst>`.
    pub fn remove(&mut self, dst: &IpNet) -> Option<KernelRoute> {
        let key = dst.trunc();
        if !self.routes.contains_key(&key) {
            return None;
        }
        let old = Arc::make_mut(&mut self.routes).remove(&key)?;
        self.forget_len(&key);
        Some(old)
    }

    fn forget_len(&mut self, net: &IpNet) {
        if let Some(count) = self.lens.get_mut(&len_key(net)) {
            *count -= 1;
            if *count == 0 {
                self.lens.remove(&len_key(net));
            }
        }
    }

    pub fn get(&self, dst: &IpNet) -> Option<&KernelRoute> {
        self.routes.get(&dst.trunc())
    }

    pub fn iter(&self) -> impl Iterator<Item = &KernelRoute> {
        self.routes.values()
    }

    /// Drops every route through `dev` (the kernel does this when a link goes away).
    pub fn remove_dev(&mut self, dev: &str) {
        let gone: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|(_, r)| r.dev.as_deref() == Some(dev))
            .map(|(dst, _)| *dst)
            .collect();
        for dst in gone {
            self.remove(&dst);
        }
    }

    /// Renames `dev` in every route (a link rename keeps its routes).
    pub fn rename_dev(&mut self, from: &str, to: &str) {
        if !self.routes.values().any(|r| r.dev.as_deref() == Some(from)) {
            return;
        }
        for route in Arc::make_mut(&mut self.routes).values_mut() {
            if route.dev.as_deref() == Some(from) {
                route.dev = Some(to.to_string());
            }
        }
    }

    /// Longest-prefix match.
    pub fn lookup(&self, ip: IpAddr) -> Option<&KernelRoute> {
        let v6 = ip.is_ipv6();
        let mut present = self.lens.range((v6, 0)..=(v6, u8::MAX)).rev();
        present.find_map(|(&(_, len), _)| {
            let net = IpNet::new(ip, len).ok()?.trunc();
            self.routes.get(&net)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn dev_route(dst: &str, dev: &str, proto: RouteProto) -> KernelRoute {
        KernelRoute::dev(net(dst), dev, proto)
    }

    #[test]
    fn longest_prefix_wins() {
        let mut table = RouteTable::default();
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        table.replace(KernelRoute::via(
            net("0.0.0.0/0"),
            gw,
            None,
            RouteProto::Static,
        ));
        table.replace(dev_route("192.168.0.0/16", "eth0", RouteProto::Kernel));
        table.replace(dev_route("192.168.1.2/32", "cali1", RouteProto::Calico));
        let dev = |table: &RouteTable, ip: &str| {
            table
                .lookup(ip.parse().unwrap())
                .and_then(|r| r.dev.clone())
        };
        assert_eq!(dev(&table, "192.168.1.2").as_deref(), Some("cali1"));
        assert_eq!(dev(&table, "192.168.1.3").as_deref(), Some("eth0"));
        assert_eq!(dev(&table, "8.8.8.8"), None);
        assert_eq!(
            table.lookup("8.8.8.8".parse().unwrap()).map(|r| r.dst),
            Some(net("0.0.0.0/0"))
        );
        assert_eq!(table.lookup("fd00::1".parse().unwrap()), None);

        // Lookups try only the prefix lengths present: removing the last route of a length
        // (or every route of a device) must not leave it tried, nor hide what is left.
        table.remove(&net("192.168.1.2/32"));
        assert_eq!(dev(&table, "192.168.1.2").as_deref(), Some("eth0"));
        table.replace(dev_route("fd00::/64", "eth0", RouteProto::Kernel));
        table.remove_dev("eth0");
        assert_eq!(
            table.lookup("192.168.1.3".parse().unwrap()).map(|r| r.dst),
            Some(net("0.0.0.0/0"))
        );
        assert_eq!(table.lookup("fd00::1".parse().unwrap()), None);
        table.replace(dev_route("192.168.1.2/32", "cali1", RouteProto::Calico));
        table.replace(dev_route("192.168.1.2/32", "cali2", RouteProto::Calico));
        table.remove(&net("192.168.1.2/32"));
        assert_eq!(
            table.lookup("192.168.1.2".parse().unwrap()).map(|r| r.dst),
            Some(net("0.0.0.0/0"))
        );
        let mut fresh = RouteTable::default();
        fresh.replace(KernelRoute::via(
            net("0.0.0.0/0"),
            gw,
            None,
            RouteProto::Static,
        ));
        assert_eq!(table, fresh);
    }

    #[test]
    fn a_copy_changes_apart_from_its_original() {
        let mut original = RouteTable::default();
        original.replace(dev_route("192.168.1.2/32", "cali1", RouteProto::Calico));
        let mut copy = original.clone();
        copy.rename_dev("cali1", "cali9");
        copy.replace(dev_route("10.0.0.0/8", "eth0", RouteProto::Kernel));
        assert_eq!(original.iter().count(), 1);
        let dev = |t: &RouteTable| t.lookup("192.168.1.2".parse().unwrap()).cloned();
        assert_eq!(dev(&original).and_then(|r| r.dev).as_deref(), Some("cali1"));
        assert_eq!(dev(&copy).and_then(|r| r.dev).as_deref(), Some("cali9"));
        original.remove(&net("192.168.1.2/32"));
        assert_eq!(copy.iter().count(), 2);
        assert_eq!(original.lookup("192.168.1.2".parse().unwrap()), None);
    }

    #[test]
    fn replace_is_keyed_by_destination() {
        let mut table = RouteTable::default();
        table.replace(dev_route("192.168.1.2/32", "cali1", RouteProto::Calico));
        table.replace(dev_route("192.168.1.2/32", "cali2", RouteProto::Calico));
        assert_eq!(table.iter().count(), 1);
        table.rename_dev("cali2", "cali3");
        assert_eq!(
            table
                .get(&net("192.168.1.2/32"))
                .and_then(|r| r.dev.clone())
                .as_deref(),
            Some("cali3")
        );
        table.remove_dev("cali3");
        assert_eq!(table.iter().count(), 0);
    }
}
