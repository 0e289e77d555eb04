//! The packet walk inside one host, following Linux: route lookup in the sending namespace,
//! neighbour resolution (static, cached, ARP or proxy ARP), the veth crossing, and in the host
//! namespace conntrack, nat PREROUTING, the routing decision, rp_filter, filter INPUT/FORWARD,
//! nat POSTROUTING (MASQUERADE) and the way out: a local veth or the wire.
//!
//! Conntrack and netfilter run only in the host namespace; workload namespaces have no rules
//! and do not forward. IPv6 neighbour discovery uses the same hops, with Linux's rules: an
//! address answers only on its own interface, and the host proxies only addresses in its
//! proxy-NDP table (see `proxy_ndp`), with no route lookup as proxy ARP does.

use std::net::IpAddr;

use calico_core::desired::TableId;
use calico_core::iptables::{CtState, IpFamily, Table};
use calico_core::model::MacAddr;

use super::conntrack::{Classified, Direction, FlowKey};
use super::kernel::{Kernel, Link, LinkKind, NeighEntry, ROOT_NS};
use super::netfilter::eval::{self, PacketView, Verdict};
use super::packet::Packet;
use super::route::KernelRoute;
use super::trace::{Hop, HostOutcome, NeighSource};

/// Veth crossings one walk may make (a workload namespace never forwards, so 2 suffice).
const MAX_CROSSINGS: usize = 4;

/// How much of a walk to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every hop, and each netfilter decision with its rules rendered as `iptables-save`
    /// shows them: what explain, trace and scenario output print.
    Full,
    /// Only where the packet went: the outcome's trace is empty and a drop by a rule has an
    /// empty reason. For bulk walks that count verdicts (what-if walks 10^5 flows and reads
    /// the reason of the few whose verdict changed), where rendering the deciding rules cost
    /// more than the walk itself.
    Verdict,
}

/// Like a process in namespace `ns` sending `packet`.
pub fn send_from_namespace(
    kernel: &mut Kernel,
    ns: &str,
    packet: Packet,
    detail: Detail,
) -> HostOutcome {
    let mut walk = Walk {
        k: kernel,
        trace: Vec::new(),
        detail,
    };
    walk.note(|| Hop::Enter {
        ns: ns.to_string(),
        iface: None,
        packet,
    });
    if !walk.k.namespaces.contains_key(ns) {
        return walk.drop(format!("namespace {ns} not found"));
    }
    if ns == ROOT_NS {
        return walk.host_output(packet);
    }
    if let Some(link) = walk.k.local_link(ns, packet.dst) {
        let iface = link.name.clone();
        return walk.deliver(ns, &iface, packet);
    }
    match walk.route(ns, packet.dst) {
        Ok((dev, next_hop)) => walk.egress(ns, &dev, next_hop, packet, 0),
        Err(reason) => walk.drop(reason),
    }
}

/// Like a frame from `src_mac` arriving on the host's wire interface.
pub fn receive_on_wire(
    kernel: &mut Kernel,
    packet: Packet,
    src_mac: MacAddr,
    detail: Detail,
) -> HostOutcome {
    let wire = kernel.wire.clone();
    let mut walk = Walk {
        k: kernel,
        trace: Vec::new(),
        detail,
    };
    if !walk.k.link(ROOT_NS, &wire).is_some_and(|l| l.up) {
        walk.note(|| Hop::Enter {
            ns: ROOT_NS.to_string(),
            iface: Some(wire.clone()),
            packet,
        });
        return walk.drop(format!("{wire} is down"));
    }
    walk.ingress(ROOT_NS, &wire, src_mac, packet, 0)
}

struct Walk<'k> {
    k: &'k mut Kernel,
    trace: Vec<Hop>,
    detail: Detail,
}

fn tid(family: IpFamily, table: Table) -> TableId {
    TableId { family, table }
}

impl Walk<'_> {
    /// Records a hop, built only when the walk keeps its trace.
    fn note(&mut self, hop: impl FnOnce() -> Hop) {
        if self.detail == Detail::Full {
            self.trace.push(hop());
        }
    }

    fn drop(mut self, reason: String) -> HostOutcome {
        self.note(|| Hop::End {
            detail: format!("dropped: {reason}"),
        });
        HostOutcome::Dropped {
            reason,
            trace: self.trace,
        }
    }

    fn deliver(mut self, ns: &str, iface: &str, packet: Packet) -> HostOutcome {
        if ns == ROOT_NS && packet.inner.is_some() {
            return self.tunnel_in(packet);
        }
        self.note(|| Hop::Local {
            ns: ns.to_string(),
            dst: packet.dst,
            iface: iface.to_string(),
        });
        self.note(|| Hop::End {
            detail: format!("delivered to {} in namespace {ns} on {iface}", packet.dst),
        });
        HostOutcome::Delivered {
            ns: ns.to_string(),
            iface: iface.to_string(),
            packet,
            trace: self.trace,
        }
    }

    /// Out of a tunnel device: the packet, wrapped in an outer host→host packet, leaves the
    /// host like one the host sends (OUTPUT, POSTROUTING, the wire).
    fn tunnel_out(mut self, dev: &str, next_hop: IpAddr, packet: Packet) -> HostOutcome {
        match super::tunnel::encapsulate(self.k, dev, next_hop, &packet) {
            Ok((outer, detail)) => {
                self.note(|| Hop::Tunnel { detail });
                self.host_output(outer)
            }
            Err(reason) => self.drop(reason),
        }
    }

    /// A tunnel packet for this host (past INPUT): the tunnel device takes the inner packet
    /// out, and it arrives on that device like any other.
    fn tunnel_in(mut self, outer: Packet) -> HostOutcome {
        match super::tunnel::decapsulate(self.k, &outer) {
            Ok((dev, inner)) => {
                self.note(|| Hop::Tunnel {
                    detail: format!("decapsulated by {dev}"),
                });
                self.ingress(ROOT_NS, &dev, MacAddr([0; 6]), inner, 0)
            }
            Err(reason) => self.drop(reason),
        }
    }

    /// Route lookup in `ns`: (egress device, next hop), recorded in the trace.
    fn route(&mut self, ns: &str, dst: IpAddr) -> Result<(String, IpAddr), String> {
        let (route, dev, next_hop) = resolve_route(self.k, ns, dst)?;
        self.note(|| Hop::Route {
            ns: ns.to_string(),
            dst,
            route,
            dev: dev.clone(),
            next_hop,
        });
        match self.k.link(ns, &dev) {
            Some(link) if link.up => Ok((dev, next_hop)),
            Some(_) => Err(format!("{dev} in namespace {ns} is down")),
            None => Err(format!("route to {dst} names missing device {dev}")),
        }
    }

    /// Sends out of `dev` in `ns` towards `next_hop`.
    fn egress(
        mut self,
        ns: &str,
        dev: &str,
        next_hop: IpAddr,
        packet: Packet,
        crossings: usize,
    ) -> HostOutcome {
        let Some(link) = self.k.link(ns, dev).map(bare) else {
            return self.drop(format!("device {dev} not found in namespace {ns}"));
        };
        match link.kind {
            LinkKind::Wire => {
                self.note(|| Hop::End {
                    detail: format!("transmitted on {dev} towards {next_hop}"),
                });
                HostOutcome::Transmitted {
                    iface: dev.to_string(),
                    next_hop,
                    src_mac: link.mac,
                    packet,
                    trace: self.trace,
                }
            }
            LinkKind::Loopback => self.drop(format!("{} routed to lo but not local", packet.dst)),
            LinkKind::Tunnel => self.tunnel_out(dev, next_hop, packet),
            LinkKind::Veth { .. } => {
                let Some(peer) = self.k.peer(&link).map(bare) else {
                    return self.drop(format!("veth {dev} has no peer"));
                };
                if let Err(reason) = self.neighbour(ns, &link.name, &peer, next_hop) {
                    return self.drop(reason);
                }
                if !peer.up {
                    return self.drop(format!("{} in namespace {} is down", peer.name, peer.ns));
                }
                if crossings >= MAX_CROSSINGS {
                    return self.drop("too many veth crossings (a routing loop)".to_string());
                }
                self.note(|| Hop::Veth {
                    from_ns: ns.to_string(),
                    from_iface: dev.to_string(),
                    to_ns: peer.ns.clone(),
                    to_iface: peer.name.clone(),
                    src_mac: link.mac,
                });
                self.ingress(&peer.ns, &peer.name, link.mac, packet, crossings + 1)
            }
        }
    }

    /// Resolves `ip` on `dev` (whose other end is `peer`), learning the answer.
    fn neighbour(
        &mut self,
        ns: &str,
        dev: &str,
        peer: &super::kernel::Link,
        ip: IpAddr,
    ) -> Result<(), String> {
        let key = (ip, dev.to_string());
        let cached = self
            .k
            .ns(ns)
            .ok()
            .and_then(|s| s.neighbours.get(&key).copied());
        let (mac, source) = match cached {
            Some(entry) if entry.permanent => (entry.mac, NeighSource::Static),
            Some(entry) => (entry.mac, NeighSource::Cached),
            None => {
                let source = self.arp(peer, ip).map_err(|why| {
                    let answer = if ip.is_ipv6() {
                        "neighbour advertisement"
                    } else {
                        "ARP reply"
                    };
                    format!("no {answer} for {ip} on {dev} in namespace {ns}: {why}")
                })?;
                if let Ok(space) = self.k.ns_mut(ns) {
                    let entry = NeighEntry {
                        mac: peer.mac,
                        permanent: false,
                    };
                    space.neighbours.insert(key, entry);
                }
                (peer.mac, source)
            }
        };
        self.note(|| Hop::Neighbour {
            ns: ns.to_string(),
            dev: dev.to_string(),
            ip,
            mac,
            source,
        });
        Ok(())
    }

    /// Who answers an ARP (or NDP) request for `ip` arriving on `peer`.
    fn arp(&self, peer: &super::kernel::Link, ip: IpAddr) -> Result<NeighSource, String> {
        if !peer.up {
            return Err(format!("{} is down", peer.name));
        }
        // arp_ignore=0: a namespace answers ARP for any of its addresses on any interface;
        // NDP only for an address of the interface asked (`ndisc_recv_ns`).
        let owner = self.k.local_link(&peer.ns, ip);
        if owner.is_some_and(|l| ip.is_ipv4() || l.name == peer.name) {
            return Ok(NeighSource::Arp {
                answered_by: peer.name.clone(),
            });
        }
        if peer.ns != ROOT_NS {
            return Err(format!("nobody in namespace {} owns it", peer.ns));
        }
        if let IpAddr::V6(v6) = ip {
            return match super::proxy_ndp::refusal(self.k, &peer.name, v6) {
                None => Ok(NeighSource::ProxyArp {
                    iface: peer.name.clone(),
                }),
                Some(why) => Err(why),
            };
        }
        let (proxy_key, forward_key) = if ip.is_ipv4() {
            (
                format!("net.ipv4.conf.{}.proxy_arp", peer.name),
                "net.ipv4.ip_forward",
            )
        } else {
            (
                format!("net.ipv6.conf.{}.proxy_ndp", peer.name),
                "net.ipv6.conf.all.forwarding",
            )
        };
        if !self.k.sysctl_on(&proxy_key) {
            return Err(format!("{} is off", proxy_key));
        }
        if !self.k.sysctl_on(forward_key) {
            return Err(format!("{forward_key} is off"));
        }
        match resolve_route(self.k, ROOT_NS, ip) {
            Ok((_, dev, _)) if dev != peer.name => Ok(NeighSource::ProxyArp {
                iface: peer.name.clone(),
            }),
            Ok(_) => Err(format!("the host routes {ip} back out {}", peer.name)),
            Err(_) => Err(format!("the host has no route to {ip}")),
        }
    }

    fn ingress(
        mut self,
        ns: &str,
        iface: &str,
        src_mac: MacAddr,
        packet: Packet,
        crossings: usize,
    ) -> HostOutcome {
        self.note(|| Hop::Enter {
            ns: ns.to_string(),
            iface: Some(iface.to_string()),
            packet,
        });
        if ns != ROOT_NS {
            return match self.k.local_link(ns, packet.dst) {
                Some(link) => {
                    let local = link.name.clone();
                    self.deliver(ns, &local, packet)
                }
                None => self.drop(format!(
                    "{} is not local in namespace {ns}, which does not forward",
                    packet.dst
                )),
            };
        }
        self.host_ingress(iface, src_mac, packet, crossings)
    }

    /// Conntrack's verdict, with the reverse of masquerade applied to replies.
    fn track(&mut self, packet: &mut Packet) -> Classified {
        let ct = self.k.conntrack.classify(packet);
        let mut note = String::new();
        if let Some((id, dir)) = ct.flow {
            note = match dir {
                Direction::Original => "original direction".to_string(),
                Direction::Reply => "reply direction".to_string(),
            };
            if let (Direction::Reply, Some(flow)) = (dir, self.k.conntrack.flow(id)) {
                let (src, dst) = (flow.original.dst, flow.original.src);
                if packet.dst != dst {
                    self.note(|| Hop::Nat {
                        detail: format!("reply: destination {} back to {dst}", packet.dst),
                    });
                    packet.dst = dst;
                    packet.src = src;
                }
            }
        }
        self.note(|| Hop::Conntrack {
            state: ct.state,
            note,
        });
        ct
    }

    /// Runs one built-in chain; `Err` is the drop reason.
    fn hook(
        &mut self,
        table: Table,
        chain: &str,
        view: &PacketView<'_>,
        mark: &mut u32,
    ) -> Result<Verdict, String> {
        let id = tid(view.packet.family(), table);
        let Some(nf) = self.k.netfilter.tables.get(&id) else {
            return Ok(Verdict::Accept);
        };
        if self.detail == Detail::Verdict {
            let (verdict, after) = eval::verdict(nf, chain, view, &self.k.ipsets, *mark);
            *mark = after;
            return match verdict {
                Verdict::Drop => Err(String::new()),
                other => Ok(other),
            };
        }
        let decision = eval::evaluate(id, nf, chain, view, &self.k.ipsets, *mark);
        *mark = decision.mark;
        let verdict = decision.verdict;
        // The summary is the drop reason; an accept's decision is in the trace already.
        let summary = (verdict == Verdict::Drop).then(|| decision.to_string());
        self.trace.push(Hop::Netfilter(decision));
        match summary {
            Some(summary) => Err(summary),
            None => Ok(verdict),
        }
    }

    /// rp_filter on the ingress interface (IPv4 only, like the kernel's sysctl).
    fn rp_filter(&mut self, iface: &str, src: IpAddr) -> Result<(), String> {
        if !src.is_ipv4() {
            return Ok(());
        }
        let mode = self.k.rp_filter(iface);
        if mode == 0 {
            return Ok(());
        }
        let reverse = resolve_route(self.k, ROOT_NS, src);
        let passes = match (&reverse, mode) {
            (Ok((_, dev, _)), 1) => dev == iface,
            (Ok(_), _) => true,
            (Err(_), _) => false,
        };
        if passes && self.detail == Detail::Verdict {
            return Ok(());
        }
        let (ok, detail) = match (&reverse, mode) {
            (Ok((_, dev, _)), 1) if dev == iface => {
                (true, format!("strict: reverse route goes out {dev}, ok"))
            }
            (Ok((_, dev, _)), 1) => (
                false,
                format!("strict: reverse route to {src} goes out {dev}, not {iface}"),
            ),
            (Ok((_, dev, _)), _) => (true, format!("loose: reverse route out {dev}, ok")),
            (Err(_), _) => (false, format!("no reverse route to {src}")),
        };
        self.note(|| Hop::RpFilter {
            iface: iface.to_string(),
            src,
            detail: detail.clone(),
        });
        if ok {
            Ok(())
        } else {
            Err(format!("rp_filter: {detail}"))
        }
    }

    fn host_ingress(
        mut self,
        iface: &str,
        src_mac: MacAddr,
        arrived: Packet,
        crossings: usize,
    ) -> HostOutcome {
        let mut packet = arrived;
        let ct = self.track(&mut packet);
        let mut mark = 0;
        let view = |packet, out_iface| PacketView {
            packet,
            in_iface: Some(iface),
            out_iface,
            src_mac: Some(src_mac),
            ctstate: ct.state,
        };
        if ct.state == CtState::New {
            if let Err(reason) =
                self.hook(Table::Nat, "PREROUTING", &view(&packet, None), &mut mark)
            {
                return self.drop(reason);
            }
        }
        if let Some(link) = self.k.local_link(ROOT_NS, packet.dst) {
            let local = link.name.clone();
            if let Err(reason) = self.rp_filter(iface, packet.src) {
                return self.drop(reason);
            }
            for (table, run) in [
                (Table::Filter, true),
                (Table::Nat, ct.state == CtState::New),
            ] {
                if !run {
                    continue;
                }
                if let Err(reason) = self.hook(table, "INPUT", &view(&packet, None), &mut mark) {
                    return self.drop(reason);
                }
            }
            self.k
                .conntrack
                .confirm(ct, FlowKey::of(&arrived), FlowKey::of(&packet).reversed());
            return self.deliver(ROOT_NS, &local, packet);
        }
        let (dev, next_hop) = match self.route(ROOT_NS, packet.dst) {
            Ok(found) => found,
            Err(reason) => return self.drop(reason),
        };
        if let Err(reason) = self.rp_filter(iface, packet.src) {
            return self.drop(reason);
        }
        let forward_key = match packet.family() {
            IpFamily::V4 => "net.ipv4.ip_forward",
            IpFamily::V6 => "net.ipv6.conf.all.forwarding",
        };
        if !self.k.sysctl_on(forward_key) {
            return self.drop(format!("{forward_key} is off"));
        }
        let forward = view(&packet, Some(dev.as_str()));
        if let Err(reason) = self.hook(Table::Filter, "FORWARD", &forward, &mut mark) {
            return self.drop(reason);
        }
        let io = (Some(iface), Some(dev.as_str()));
        if let Err(reason) = self.postrouting(&mut packet, io, ct.state, &mut mark) {
            return self.drop(reason);
        }
        self.k
            .conntrack
            .confirm(ct, FlowKey::of(&arrived), FlowKey::of(&packet).reversed());
        self.egress(ROOT_NS, &dev, next_hop, packet, crossings)
    }

    /// nat POSTROUTING for a new flow; MASQUERADE rewrites the source to the egress address.
    fn postrouting(
        &mut self,
        packet: &mut Packet,
        io: (Option<&str>, Option<&str>),
        ctstate: CtState,
        mark: &mut u32,
    ) -> Result<(), String> {
        if ctstate != CtState::New {
            return Ok(());
        }
        let view = PacketView {
            packet,
            in_iface: io.0,
            out_iface: io.1,
            src_mac: None,
            ctstate,
        };
        let verdict = self.hook(Table::Nat, "POSTROUTING", &view, mark)?;
        if verdict == Verdict::Masquerade {
            let dev = io.1.unwrap_or_default();
            let want_v4 = packet.src.is_ipv4();
            let addr = self
                .k
                .link(ROOT_NS, dev)
                .and_then(|l| l.addrs.iter().find(|a| a.addr().is_ipv4() == want_v4))
                .map(|a| a.addr())
                .ok_or_else(|| format!("MASQUERADE: {dev} has no address of the family"))?;
            self.note(|| Hop::Nat {
                detail: format!("MASQUERADE source {} to {addr} ({dev})", packet.src),
            });
            packet.src = addr;
        }
        Ok(())
    }

    /// A packet the host itself sends: OUTPUT then POSTROUTING.
    fn host_output(mut self, arrived: Packet) -> HostOutcome {
        let mut packet = arrived;
        if let Some(link) = self.k.local_link(ROOT_NS, packet.dst) {
            let local = link.name.clone();
            return self.deliver(ROOT_NS, &local, packet);
        }
        let ct = self.track(&mut packet);
        let (dev, next_hop) = match self.route(ROOT_NS, packet.dst) {
            Ok(found) => found,
            Err(reason) => return self.drop(reason),
        };
        let mut mark = 0;
        let io = (None, Some(dev.as_str()));
        let tables: &[Table] = if ct.state == CtState::New {
            &[Table::Nat, Table::Filter]
        } else {
            &[Table::Filter]
        };
        for table in tables {
            let view = PacketView {
                packet: &packet,
                in_iface: None,
                out_iface: io.1,
                src_mac: None,
                ctstate: ct.state,
            };
            if let Err(reason) = self.hook(*table, "OUTPUT", &view, &mut mark) {
                return self.drop(reason);
            }
        }
        if let Err(reason) = self.postrouting(&mut packet, io, ct.state, &mut mark) {
            return self.drop(reason);
        }
        self.k
            .conntrack
            .confirm(ct, FlowKey::of(&arrived), FlowKey::of(&packet).reversed());
        self.egress(ROOT_NS, &dev, next_hop, packet, 0)
    }
}

/// A copy of `link` without its addresses and sysctls, which leaving by it does not read
/// (the kernel is asked for those): a walk copies two links per veth crossing.
fn bare(link: &Link) -> Link {
    Link {
        id: link.id,
        ns: link.ns.clone(),
        name: link.name.clone(),
        mac: link.mac,
        up: link.up,
        kind: link.kind,
        addrs: Default::default(),
        conf: Default::default(),
    }
}

/// Longest-prefix match in `ns`, resolving a gateway without a device through the table.
pub fn resolve_route(
    k: &Kernel,
    ns: &str,
    dst: IpAddr,
) -> Result<(KernelRoute, String, IpAddr), String> {
    let table = &k.ns(ns).map_err(|e| e.to_string())?.routes;
    let route = table
        .lookup(dst)
        .ok_or_else(|| format!("no route to {dst} in namespace {ns}"))?;
    let (dev, next_hop) = match (&route.dev, route.via) {
        (Some(dev), None) => (dev.clone(), dst),
        (Some(dev), Some(gw)) => (dev.clone(), gw),
        (None, Some(gw)) => match table.lookup(gw) {
            Some(KernelRoute {
                dev: Some(dev),
                via: None,
                ..
            }) => (dev.clone(), gw),
            _ => {
                return Err(format!(
                    "gateway {gw} of route {route} is not on-link in namespace {ns}"
                ))
            }
        },
        (None, None) => return Err(format!("no route to {dst}: {route} discards it")),
    };
    Ok((route.clone(), dev, next_hop))
}
