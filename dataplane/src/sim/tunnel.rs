//! Tunnel devices in the simulated kernel: applying and observing the overlay of the desired
//! state (devices, routes, ARP and FDB entries), and what the devices do to packets — VXLAN
//! and IPIP encapsulation on the way out (an outer host→host header around the inner packet)
//! and decapsulation on the way in, as Linux's `vxlan` and `ipip` drivers do.

use std::collections::BTreeSet;
use std::net::IpAddr;

use calico_core::desired::Neighbour;
use calico_core::model::{MacAddr, Protocol};
use calico_core::plan::Change;
use calico_core::tunnel::{FdbEntry, Overlay, TunnelDevice, TunnelKind, TunnelRoute};
use ipnet::IpNet;

use super::kernel::{Kernel, LinkKind, NeighEntry, ROOT_NS};
use super::packet::{Inner, Packet, L4};
use super::route::{KernelRoute, RouteProto};
use super::walk::resolve_route;
use crate::DataplaneError;

/// IP protocol number of IP-in-IP (`ipencap`).
pub const IPIP_PROTOCOL: u8 = 4;

/// Makes the root namespace hold exactly `want`'s overlay: devices first, then FDB and ARP
/// entries, then routes; what is no longer wanted goes in the reverse order.
pub(crate) fn apply_overlay(
    k: &mut Kernel,
    want: &Overlay,
    changes: &mut Vec<Change>,
) -> Result<(), DataplaneError> {
    for dev in want.devices.values() {
        if k.tunnels.get(&dev.name) != Some(dev) {
            set_device(k, dev)?;
            changes.push(Change::SetTunnel(dev.clone()));
        }
    }
    let have = observe_overlay(k);
    for route in have.routes.difference(&want.routes) {
        k.ns_mut(ROOT_NS)?.routes.remove(&route.dst);
        changes.push(Change::DelTunnelRoute(route.clone()));
    }
    for n in have.neighbours.difference(&want.neighbours) {
        k.ns_mut(ROOT_NS)?.neighbours.remove(&(n.ip, n.dev.clone()));
        changes.push(Change::DelTunnelNeighbour(n.clone()));
    }
    for e in have.fdb.difference(&want.fdb) {
        k.fdb.remove(&(e.dev.clone(), e.mac));
        changes.push(Change::DelFdb(e.clone()));
    }
    for e in want.fdb.difference(&have.fdb) {
        k.fdb.insert((e.dev.clone(), e.mac), e.dst);
        changes.push(Change::AddFdb(e.clone()));
    }
    for n in want.neighbours.difference(&have.neighbours) {
        let entry = NeighEntry {
            mac: n.mac,
            permanent: true,
        };
        k.ns_mut(ROOT_NS)?
            .neighbours
            .insert((n.ip, n.dev.clone()), entry);
        changes.push(Change::AddTunnelNeighbour(n.clone()));
    }
    for r in want.routes.difference(&have.routes) {
        let route = KernelRoute {
            onlink: true,
            ..KernelRoute::via(r.dst.trunc(), r.via, Some(&r.dev), RouteProto::Overlay)
        };
        k.route_replace(ROOT_NS, route)
            .map_err(|e| DataplaneError::Kernel {
                operation: format!("adding route {r}"),
                reason: e.to_string(),
            })?;
        changes.push(Change::AddTunnelRoute(r.clone()));
    }
    let stale: Vec<String> = k
        .tunnels
        .keys()
        .filter(|name| !want.devices.contains_key(*name))
        .cloned()
        .collect();
    for name in stale {
        k.link_del(ROOT_NS, &name);
        k.tunnels.remove(&name);
        k.fdb.retain(|(dev, _), _| *dev != name);
        changes.push(Change::DeleteTunnel { name });
    }
    Ok(())
}

/// Like `ip link add` (or `ip tunnel add`) if missing, `ip link set mtu … up`, and the
/// device's address as its only IPv4 address.
fn set_device(k: &mut Kernel, dev: &TunnelDevice) -> Result<(), DataplaneError> {
    let mac = match dev.kind {
        TunnelKind::Vxlan { mac, .. } => mac,
        TunnelKind::Ipip => MacAddr([0; 6]),
    };
    let id = match k.link(ROOT_NS, &dev.name) {
        Some(link) if link.kind == LinkKind::Tunnel => link.id,
        Some(_) => {
            return Err(DataplaneError::Kernel {
                operation: format!("creating tunnel {}", dev.name),
                reason: "a device of another kind has the name".to_string(),
            })
        }
        None => k.new_link(ROOT_NS, &dev.name, LinkKind::Tunnel, Some(mac)),
    };
    let old: Vec<IpNet> = match k.links.get_mut(&id) {
        Some(link) => {
            link.mac = mac;
            link.up = true;
            link.addrs
                .iter()
                .filter(|a| a.addr().is_ipv4())
                .copied()
                .collect()
        }
        None => Vec::new(),
    };
    let want = dev.addr.map(|a| IpNet::from(IpAddr::V4(a)));
    for addr in old.into_iter().filter(|a| Some(*a) != want) {
        k.addr_del(ROOT_NS, &dev.name, addr)?;
    }
    if let Some(addr) = want {
        if !k.links.get(&id).is_some_and(|l| l.addrs.contains(&addr)) {
            k.addr_add(ROOT_NS, &dev.name, addr)?;
        }
    }
    k.tunnels.insert(dev.name.clone(), dev.clone());
    Ok(())
}

/// The overlay the root namespace holds: its tunnel devices, our routes through them, the
/// permanent ARP entries on them and their FDB.
pub(crate) fn observe_overlay(k: &Kernel) -> Overlay {
    let mut out = Overlay {
        devices: k.tunnels.clone(),
        ..Overlay::default()
    };
    let Ok(space) = k.ns(ROOT_NS) else {
        return out;
    };
    out.routes = space
        .routes
        .iter()
        .filter(|r| r.proto == RouteProto::Overlay)
        .filter_map(|r| {
            Some(TunnelRoute {
                dst: r.dst,
                via: r.via?,
                dev: r.dev.clone()?,
            })
        })
        .collect();
    out.neighbours = space
        .neighbours
        .iter()
        .filter(|((_, dev), e)| e.permanent && k.tunnels.contains_key(dev))
        .map(|((ip, dev), e)| Neighbour {
            ip: *ip,
            mac: e.mac,
            dev: dev.clone(),
        })
        .collect();
    out.fdb = k
        .fdb
        .iter()
        .map(|((dev, mac), dst)| FdbEntry {
            mac: *mac,
            dst: *dst,
            dev: dev.clone(),
        })
        .collect();
    out
}

/// The names of the tunnel devices, whose permanent neighbours belong to the overlay.
pub(crate) fn tunnel_devices(k: &Kernel) -> BTreeSet<&str> {
    k.tunnels.keys().map(String::as_str).collect()
}

/// What leaving through tunnel `dev` towards `next_hop` makes of `packet`: the outer packet
/// (host → remote host) carrying it, and a sentence for the trace. `Err` is why it cannot
/// be sent (no ARP or FDB entry for a VXLAN next hop, no route to the remote host).
pub(crate) fn encapsulate(
    k: &Kernel,
    dev: &str,
    next_hop: IpAddr,
    packet: &Packet,
) -> Result<(Packet, String), String> {
    let tunnel = k
        .tunnels
        .get(dev)
        .ok_or_else(|| format!("{dev} is no tunnel device"))?;
    let (remote, how) = match tunnel.kind {
        TunnelKind::Vxlan { vni, .. } => {
            let entry = k
                .ns(ROOT_NS)
                .ok()
                .and_then(|s| s.neighbours.get(&(next_hop, dev.to_string())).copied())
                .ok_or_else(|| format!("no ARP entry for {next_hop} on {dev}"))?;
            let remote = *k
                .fdb
                .get(&(dev.to_string(), entry.mac))
                .ok_or_else(|| format!("no FDB entry for {} on {dev}", entry.mac))?;
            (
                remote,
                format!(
                    "VXLAN vni {vni} (next hop {next_hop} is {}, FDB dst {remote})",
                    entry.mac
                ),
            )
        }
        TunnelKind::Ipip => (next_hop, "IPIP".to_string()),
    };
    let (_, out_dev, _) = resolve_route(k, ROOT_NS, remote)
        .map_err(|why| format!("tunnel {dev} cannot reach {remote}: {why}"))?;
    let src = k
        .link(ROOT_NS, &out_dev)
        .and_then(|l| l.addrs.iter().map(IpNet::addr).find(IpAddr::is_ipv4))
        .ok_or_else(|| format!("{out_dev} has no IPv4 address to send tunnel packets from"))?;
    let inner = Some(Inner::of(packet));
    let outer = match tunnel.kind {
        TunnelKind::Vxlan { port, .. } => Packet {
            inner,
            ..Packet::udp(src, remote, source_port(packet), port)
        },
        TunnelKind::Ipip => Packet {
            src,
            dst: remote,
            protocol: Protocol::Number(IPIP_PROTOCOL),
            l4: L4::Opaque,
            inner,
        },
    };
    Ok((outer, format!("encapsulated in {how} on {dev}: {outer}")))
}

/// The tunnel device that takes `packet` (delivered to this host) apart, and what comes out,
/// or `Err` when it carries something no device here accepts (Linux would answer port or
/// protocol unreachable).
pub(crate) fn decapsulate(k: &Kernel, packet: &Packet) -> Result<(String, Packet), String> {
    let inner = packet
        .inner
        .ok_or_else(|| "nothing to decapsulate".to_string())?;
    let device = k.tunnels.values().find(|d| match (d.kind, packet.l4) {
        (TunnelKind::Vxlan { port, .. }, L4::Ports { dst, .. }) => {
            packet.protocol == Protocol::Udp && dst == port
        }
        (TunnelKind::Ipip, _) => packet.protocol.number() == IPIP_PROTOCOL,
        _ => false,
    });
    let device = device.ok_or_else(|| format!("no tunnel device here accepts {packet}"))?;
    let up = k.link(ROOT_NS, &device.name).is_some_and(|l| l.up);
    if !up {
        return Err(format!("{} is down", device.name));
    }
    Ok((device.name.clone(), inner.packet()))
}

/// The UDP source port of a VXLAN packet: a hash of the inner flow, in Linux's default range,
/// so one flow keeps one outer port.
fn source_port(packet: &Packet) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    let text = format!(
        "{}{}{:?}{:?}",
        packet.src, packet.dst, packet.protocol, packet.l4
    );
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    32768 + (h % 28232) as u16
}
