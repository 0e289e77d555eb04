//! `SimDataplane`: one host's Linux kernel in memory, programmed through the same restore text
//! the real kernel gets, with a packet walk that explains every step.
//!
//! - [`kernel`]: namespaces, links (veth pairs, the wire), addresses, neighbours, sysctls.
//! - [`route`]: routing tables with longest-prefix match and route protocols.
//! - [`netfilter`]: `iptables-restore` parser, tables, chain evaluation.
//! - [`ipset`]: `ipset restore` parser and sets.
//! - [`conntrack`]: 5-tuple flows, NEW vs ESTABLISHED, masquerade.
//! - [`packet`], [`trace`], `walk`: packets, the walk and its explanation.
//! - `apply`: `impl Dataplane`; `plumbing`: `impl WorkloadPlumbing`.
//!
//! [`SimDataplane`] is a cheap `Clone` handle over one shared kernel, so the multi-host world,
//! the node agent and `calicoctl container add` can all work on the same host.

mod apply;
pub mod conntrack;
pub mod ipset;
pub mod kernel;
pub mod netfilter;
pub mod packet;
mod plumbing;
mod proxy_ndp;
pub mod route;
pub mod trace;
mod tunnel;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use calico_core::desired::{BirdConfig, TableId};
use calico_core::iptables::{IpFamily, Table};
use calico_core::model::MacAddr;
use ipnet::IpNet;

pub use kernel::{Kernel, Link, LinkKind, ROOT_NS};
pub use netfilter::eval::{DecidedBy, Decision, RuleRef, Verdict};
pub use packet::{Inner, Packet, L4};
pub use route::{KernelRoute, RouteProto};
pub use trace::{Hop, HostOutcome, NeighSource};
pub use walk::Detail;

use crate::DataplaneError;

/// The host's wire interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireConfig {
    /// Interface name, usually `eth0`.
    pub iface: String,
    /// Its MAC; `None` derives one from the host name.
    pub mac: Option<MacAddr>,
    /// Its addresses with prefix (`172.31.250.1/24`): each adds a connected route.
    pub addrs: Vec<IpNet>,
}

impl WireConfig {
    /// `eth0` with the given addresses and a MAC derived from the host name.
    pub fn eth0(addrs: impl IntoIterator<Item = IpNet>) -> Self {
        WireConfig {
            iface: "eth0".to_string(),
            mac: None,
            addrs: addrs.into_iter().collect(),
        }
    }
}

/// One simulated host's kernel. Clones share the same kernel.
#[derive(Debug, Clone)]
pub struct SimDataplane {
    kernel: Arc<Mutex<Kernel>>,
}

impl SimDataplane {
    /// A host named `host` with its wire interface up and addressed.
    pub fn new(host: &str, wire: WireConfig) -> Self {
        let kernel = Kernel::new(host, &wire.iface, wire.mac, &wire.addrs);
        SimDataplane {
            kernel: Arc::new(Mutex::new(kernel)),
        }
    }

    /// Locks the kernel (a poisoned lock is taken over: the kernel holds plain data only).
    pub fn lock(&self) -> MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the kernel; for state the handle has no method for.
    pub fn with_kernel<R>(&self, f: impl FnOnce(&mut Kernel) -> R) -> R {
        f(&mut self.lock())
    }

    pub fn host(&self) -> String {
        self.lock().host.clone()
    }

    /// The wire interface's name and MAC.
    pub fn wire(&self) -> (String, MacAddr) {
        let k = self.lock();
        let mac = k.link(ROOT_NS, &k.wire).map_or(MacAddr([0; 6]), |l| l.mac);
        (k.wire.clone(), mac)
    }

    /// Addresses of the wire interface.
    pub fn wire_addrs(&self) -> Vec<IpNet> {
        let k = self.lock();
        k.link(ROOT_NS, &k.wire)
            .map(|l| l.addrs.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Like `ip netns add <name>`: a workload with no network (only `lo`).
    ///
    /// # Errors
    /// [`DataplaneError::Kernel`] when it exists or the name is reserved.
    pub fn add_namespace(&self, name: &str) -> Result<(), DataplaneError> {
        self.lock().netns_add(name)
    }

    /// Like `ip netns del <name>`: the namespace and its links (veth peers included) go.
    ///
    /// # Errors
    /// [`DataplaneError::NamespaceNotFound`].
    pub fn remove_namespace(&self, name: &str) -> Result<(), DataplaneError> {
        self.lock().netns_del(name)
    }

    /// Names of the workload namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock()
            .namespaces
            .keys()
            .filter(|n| *n != ROOT_NS)
            .cloned()
            .collect()
    }

    /// Links of a namespace, sorted by name.
    pub fn links(&self, ns: &str) -> Vec<Link> {
        let k = self.lock();
        let mut links: Vec<Link> = k.links.values().filter(|l| l.ns == ns).cloned().collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        links
    }

    /// Like `ip link set <iface> address <mac>` inside `ns` (a workload forging its MAC).
    ///
    /// # Errors
    /// [`DataplaneError::InterfaceNotFound`].
    pub fn set_link_mac(&self, ns: &str, iface: &str, mac: MacAddr) -> Result<(), DataplaneError> {
        let mut k = self.lock();
        let id =
            k.link(ns, iface)
                .map(|l| l.id)
                .ok_or_else(|| DataplaneError::InterfaceNotFound {
                    iface: format!("{iface} in namespace {ns}"),
                })?;
        if let Some(link) = k.links.get_mut(&id) {
            link.mac = mac;
        }
        Ok(())
    }

    /// Routes of a namespace (like `ip route show`).
    pub fn routes(&self, ns: &str) -> Vec<KernelRoute> {
        let k = self.lock();
        k.ns(ns)
            .map(|s| s.routes.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Like `ip route replace` in a namespace (`dev` must exist there).
    ///
    /// # Errors
    /// Namespace or device missing.
    pub fn replace_route(&self, ns: &str, route: KernelRoute) -> Result<(), DataplaneError> {
        self.lock().route_replace(ns, route)
    }

    /// Like `ip route del <dst>`, whoever installed it (for drift tests). False when absent.
    pub fn delete_route(&self, ns: &str, dst: IpNet) -> bool {
        self.lock()
            .ns_mut(ns)
            .ok()
            .and_then(|s| s.routes.remove(&dst))
            .is_some()
    }

    /// Like BIRD writing `<dst> via <via> proto bird` into the host's table.
    ///
    /// # Errors
    /// Never in practice; kept fallible like the kernel call.
    pub fn add_bgp_route(&self, dst: IpNet, via: IpAddr) -> Result<(), DataplaneError> {
        let route = KernelRoute::via(dst, via, None, RouteProto::Bird);
        self.lock().route_replace(ROOT_NS, route)
    }

    /// Removes a BGP-learned route; a route to `dst` from anyone else stays. False when absent.
    pub fn remove_bgp_route(&self, dst: IpNet) -> bool {
        let mut k = self.lock();
        let Ok(space) = k.ns_mut(ROOT_NS) else {
            return false;
        };
        if space
            .routes
            .get(&dst)
            .is_some_and(|r| r.proto == RouteProto::Bird)
        {
            space.routes.remove(&dst);
            return true;
        }
        false
    }

    /// The BGP-learned routes: destination → next hop.
    pub fn bgp_routes(&self) -> BTreeMap<IpNet, IpAddr> {
        let k = self.lock();
        k.ns(ROOT_NS)
            .map(|s| {
                s.routes
                    .iter()
                    .filter(|r| r.proto == RouteProto::Bird)
                    .filter_map(|r| r.via.map(|via| (r.dst, via)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Brings the BGP-learned routes to exactly `want` (destination → next hop), like BIRD
    /// syncing its table into the kernel: routes BIRD wrote and no longer wants are deleted,
    /// missing or different ones replaced (`ip route replace ... proto bird`), equal ones left
    /// alone. One pass under one lock, without copying the table. Returns the number of routes
    /// installed, replaced or withdrawn. Same as [`SimDataplane::sync_bird_routes`] without
    /// static blackholes.
    ///
    /// # Errors
    /// Never in practice (the routes name no device); kept fallible like the kernel call.
    pub fn sync_bgp_routes(&self, want: &BTreeMap<IpNet, IpAddr>) -> Result<usize, DataplaneError> {
        self.sync_bird_routes(want, &BTreeSet::new())
    }

    /// Brings every route BIRD writes (`proto bird`) to exactly `learned` (destination → next
    /// hop, from peers) plus `blackholes` (its static `blackhole` routes: the IPAM blocks affine
    /// to this host), as [`SimDataplane::sync_bgp_routes`] does. A blackhole wins over a
    /// learned route to the same destination (BIRD prefers static routes to BGP ones).
    ///
    /// # Errors
    /// Never in practice (the routes name no device); kept fallible like the kernel call.
    pub fn sync_bird_routes(
        &self,
        learned: &BTreeMap<IpNet, IpAddr>,
        blackholes: &BTreeSet<IpNet>,
    ) -> Result<usize, DataplaneError> {
        let mut k = self.lock();
        let space = k.ns_mut(ROOT_NS)?;
        let wanted = |dst: &IpNet| blackholes.contains(dst) || learned.contains_key(dst);
        let stale: Vec<IpNet> = space
            .routes
            .iter()
            .filter(|r| r.proto == RouteProto::Bird && !wanted(&r.dst))
            .map(|r| r.dst)
            .collect();
        let mut changes = stale.len();
        for dst in stale {
            space.routes.remove(&dst);
        }
        let want = blackholes
            .iter()
            .map(|dst| KernelRoute::blackhole(*dst, RouteProto::Bird))
            .chain(
                learned
                    .iter()
                    .filter(|(dst, _)| !blackholes.contains(*dst))
                    .map(|(dst, via)| KernelRoute::via(*dst, *via, None, RouteProto::Bird)),
            );
        for route in want {
            if space.routes.get(&route.dst) != Some(&route) {
                // No device to check: `route_replace` would only insert it.
                space.routes.replace(route);
                changes += 1;
            }
        }
        Ok(changes)
    }

    /// The routes BIRD's kernel protocol would learn (`learn`): every host route not written
    /// by BIRD itself and not a connected route; the world filters them by the export pools.
    pub fn routes_for_export(&self) -> Vec<KernelRoute> {
        self.routes(ROOT_NS)
            .into_iter()
            .filter(|r| !matches!(r.proto, RouteProto::Bird | RouteProto::Kernel))
            .collect()
    }

    /// The BIRD configurations of the last apply (v4, v6).
    pub fn bird_configs(&self) -> (Option<BirdConfig>, Option<BirdConfig>) {
        let k = self.lock();
        (k.bird_v4.clone(), k.bird_v6.clone())
    }

    /// Sets a sysctl (like `sysctl -w`); per-interface keys need the host interface.
    ///
    /// # Errors
    /// [`DataplaneError::InterfaceNotFound`] for a per-interface key of a missing interface.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), DataplaneError> {
        self.lock().sysctl_set(key, value)
    }

    /// Reads a sysctl; `None` when absent.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.lock().sysctl_get(key)
    }

    /// Like `iptables-save -t <table>` (or `ip6tables-save`).
    pub fn iptables_save(&self, family: IpFamily, table: Table) -> String {
        self.lock().netfilter.save(TableId { family, table })
    }

    /// Restores text into the kernel the way `apply` does (our chains replaced whole, hooks at
    /// the top of built-in chains), with `owned` the chains owned before. For tests and tools.
    ///
    /// # Errors
    /// [`DataplaneError::Parse`] for bad text, nothing changed then.
    pub fn iptables_restore(
        &self,
        family: IpFamily,
        text: &str,
    ) -> Result<Vec<calico_core::plan::Change>, DataplaneError> {
        let blocks = calico_core::parse::iptables::parse_restore(text)?;
        let mut k = self.lock();
        let mut changes = Vec::new();
        for block in blocks {
            let id = TableId {
                family,
                table: block.table,
            };
            let owned = k.owned.tables.get(&id).cloned().unwrap_or_default();
            let (changed, now) = k.netfilter.install(id, &block, &owned);
            k.owned.tables.insert(id, now);
            changes.extend(changed);
        }
        Ok(changes)
    }

    /// Like `iptables -F <chain>` (drift tests). False when the chain does not exist.
    pub fn flush_chain(&self, family: IpFamily, table: Table, chain: &str) -> bool {
        self.lock()
            .netfilter
            .flush_chain(TableId { family, table }, chain)
    }

    /// Like `ipset restore` with the given text.
    ///
    /// # Errors
    /// Parse errors or refused commands; nothing changes then.
    pub fn ipset_restore(&self, text: &str) -> Result<(), DataplaneError> {
        let commands = ipset::parse_ipset_restore(text)?;
        ipset::restore(&mut self.lock().ipsets, &commands)
    }

    /// Members of an ipset, `None` when it does not exist.
    pub fn ipset_members(&self, name: &str) -> Option<Vec<IpNet>> {
        self.lock()
            .ipsets
            .get(name)
            .map(|s| s.members.iter().copied().collect())
    }

    /// Like `conntrack -F`.
    pub fn flush_conntrack(&self) {
        self.lock().conntrack.flush();
    }

    /// Number of tracked flows.
    pub fn conntrack_len(&self) -> usize {
        self.lock().conntrack.len()
    }

    /// A process in namespace `ns` (or [`ROOT_NS`] for the host) sends `packet`.
    pub fn send_from_namespace(&self, ns: &str, packet: Packet) -> HostOutcome {
        self.send_from_namespace_with(ns, packet, Detail::Full)
    }

    /// [`SimDataplane::send_from_namespace`], keeping `detail` of the walk.
    pub fn send_from_namespace_with(
        &self,
        ns: &str,
        packet: Packet,
        detail: Detail,
    ) -> HostOutcome {
        walk::send_from_namespace(&mut self.lock(), ns, packet, detail)
    }

    /// A frame from `src_mac` carrying `packet` arrives on the wire interface.
    pub fn receive_on_wire(&self, packet: Packet, src_mac: MacAddr) -> HostOutcome {
        self.receive_on_wire_with(packet, src_mac, Detail::Full)
    }

    /// [`SimDataplane::receive_on_wire`], keeping `detail` of the walk.
    pub fn receive_on_wire_with(
        &self,
        packet: Packet,
        src_mac: MacAddr,
        detail: Detail,
    ) -> HostOutcome {
        walk::receive_on_wire(&mut self.lock(), packet, src_mac, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bgp_sync_installs_replaces_and_withdraws_only_bird_routes() {
        let host = SimDataplane::new("h", WireConfig::eth0([net("10.0.0.1/24")]));
        let stat = KernelRoute::via(net("10.9.0.0/16"), ip("10.0.0.9"), None, RouteProto::Static);
        host.replace_route(ROOT_NS, stat.clone()).unwrap();
        let first = BTreeMap::from([
            (net("192.168.0.1/32"), ip("10.0.0.2")),
            (net("192.168.0.2/32"), ip("10.0.0.3")),
        ]);
        assert_eq!(host.sync_bgp_routes(&first).unwrap(), 2);
        assert_eq!(host.sync_bgp_routes(&first).unwrap(), 0);
        assert_eq!(host.bgp_routes(), first);

        let second = BTreeMap::from([
            (net("192.168.0.2/32"), ip("10.0.0.4")),
            (net("10.9.0.0/16"), ip("10.0.0.5")),
        ]);
        // One withdrawn, one next hop changed, the static route taken over (as BIRD would).
        assert_eq!(host.sync_bgp_routes(&second).unwrap(), 3);
        assert_eq!(host.bgp_routes(), second);
        assert_eq!(host.sync_bgp_routes(&BTreeMap::new()).unwrap(), 2);
        assert!(host.bgp_routes().is_empty());
        assert!(host
            .routes(ROOT_NS)
            .iter()
            .all(|r| r.proto == RouteProto::Kernel));
    }
}
