//! The overlay of one host: `vxlan.calico` for VXLAN pools and `tunl0` for IPIP pools, with
//! a route through the tunnel for every remote host's blocks and addresses in those pools.
//!
//! The routes come from the datastore, not BGP (stock BIRD 2 cannot write
//! `via <peer> dev tunl0 onlink`; VXLAN never used BGP in Calico): for each other host, its
//! IPAM blocks inside an overlay pool, and its active endpoints' addresses in such a pool that
//! lie outside its blocks (borrowed addresses), as BIRD would have announced them
//! (reference 4.4).
//!
//! - VXLAN: the device exists once this host has a VTEP record (its MAC and address); a remote
//!   host with a VTEP and an underlay address (`bird_ip`, else its BGP `ip_addr_v4`) gets
//!   `<dest> via <its VTEP address> dev vxlan.calico onlink`, a permanent ARP entry for that
//!   address with its VTEP MAC, and an FDB entry sending that MAC to its underlay address.
//! - IPIP (Felix's behaviour, reference 3.9): `tunl0` exists while `IpInIpEnabled` is true,
//!   with `IpInIpTunnelAddr` as its address when that lies in an IPIP pool; a remote host
//!   with an underlay address gets `<dest> via <its underlay address> dev tunl0 onlink`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::HostConfig;
use crate::cluster::{ClusterState, HostState};
use crate::desired::Neighbour;
use crate::model::{EndpointState, IpPool, VXLAN_DEVICE, VXLAN_MTU, VXLAN_PORT, VXLAN_VNI};
use crate::tunnel::{FdbEntry, Overlay, TunnelDevice, TunnelKind, TunnelRoute};

/// The IPIP device (the kernel's fallback device, as in the original).
pub const IPIP_DEVICE: &str = "tunl0";
/// `IpInIpMtu`'s default (reference 3.9).
pub const IPIP_MTU: u32 = 1440;
/// The per-host config key of the IPIP tunnel address (reference, IPIP in Calico 2.x).
pub const IPIP_TUNNEL_ADDR: &str = "IpInIpTunnelAddr";

/// Whether any enabled pool is an overlay pool: without one the overlay is empty, whatever
/// else changes (the calculator's cheap test before recomputing).
pub fn any_overlay_pool(state: &ClusterState) -> bool {
    state.pools.values().any(|p| !p.disabled && p.is_overlay())
}

/// The overlay `host` should hold.
pub fn overlay(state: &ClusterState, host: &str, cfg: &HostConfig) -> Overlay {
    let mut out = Overlay::default();
    let pools: Vec<&IpPool> = state.pools.values().filter(|p| !p.disabled).collect();
    let vxlan: Vec<Ipv4Net> = v4_cidrs(&pools, |p| p.vxlan);
    let ipip: Vec<Ipv4Net> = v4_cidrs(&pools, |p| p.ipip.is_some());
    let me = state.hosts.get(host);
    if let Some(vtep) = me.and_then(|h| h.vtep).filter(|_| !vxlan.is_empty()) {
        out.devices.insert(
            VXLAN_DEVICE.to_string(),
            TunnelDevice {
                name: VXLAN_DEVICE.to_string(),
                kind: TunnelKind::Vxlan {
                    vni: VXLAN_VNI,
                    port: VXLAN_PORT,
                    mac: vtep.mac,
                },
                mtu: VXLAN_MTU,
                addr: Some(vtep.ip).filter(|ip| vxlan.iter().any(|p| p.contains(ip))),
            },
        );
        for (name, remote) in remote_hosts(state, host) {
            let (Some(peer), Some(underlay)) = (remote.vtep, underlay(remote)) else {
                continue;
            };
            let dev = VXLAN_DEVICE.to_string();
            out.neighbours.insert(Neighbour {
                ip: IpAddr::V4(peer.ip),
                mac: peer.mac,
                dev: dev.clone(),
            });
            out.fdb.insert(FdbEntry {
                mac: peer.mac,
                dst: IpAddr::V4(underlay),
                dev: dev.clone(),
            });
            for dst in destinations(state, name, remote, &vxlan) {
                out.routes.insert(TunnelRoute {
                    dst,
                    via: IpAddr::V4(peer.ip),
                    dev: dev.clone(),
                });
            }
        }
    }
    if cfg.ipip_enabled {
        let addr = me
            .and_then(|h| h.config.get(IPIP_TUNNEL_ADDR))
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| ipip.iter().any(|p| p.contains(ip)));
        out.devices.insert(
            IPIP_DEVICE.to_string(),
            TunnelDevice {
                name: IPIP_DEVICE.to_string(),
                kind: TunnelKind::Ipip,
                mtu: IPIP_MTU,
                addr,
            },
        );
        for (name, remote) in remote_hosts(state, host) {
            let Some(underlay) = underlay(remote) else {
                continue;
            };
            for dst in destinations(state, name, remote, &ipip) {
                out.routes.insert(TunnelRoute {
                    dst,
                    via: IpAddr::V4(underlay),
                    dev: IPIP_DEVICE.to_string(),
                });
            }
        }
    }
    out
}

fn v4_cidrs(pools: &[&IpPool], pick: impl Fn(&IpPool) -> bool) -> Vec<Ipv4Net> {
    pools
        .iter()
        .filter(|p| pick(p))
        .filter_map(|p| match p.cidr {
            IpNet::V4(v4) => Some(v4),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn remote_hosts<'a>(
    state: &'a ClusterState,
    host: &'a str,
) -> impl Iterator<Item = (&'a str, &'a HostState)> + 'a {
    state
        .hosts
        .iter()
        .filter(move |(name, _)| name.as_str() != host)
        .map(|(name, h)| (name.as_str(), &**h))
}

/// Where a remote host's tunnelled traffic goes on the underlay.
fn underlay(h: &HostState) -> Option<Ipv4Addr> {
    h.bird_ip.or(h.ip_v4)
}

/// A remote host's blocks inside `pools`, and its active endpoints' IPv4 addresses inside
/// `pools` but outside its blocks.
fn destinations(
    state: &ClusterState,
    name: &str,
    remote: &HostState,
    pools: &[Ipv4Net],
) -> BTreeSet<IpNet> {
    let in_pool = |net: &IpNet| match net {
        IpNet::V4(v4) => pools.iter().any(|p| p.contains(v4)),
        IpNet::V6(_) => false,
    };
    let mut out: BTreeSet<IpNet> = remote.blocks.iter().copied().filter(in_pool).collect();
    let endpoints = state
        .endpoints
        .iter()
        .filter(|(id, ep)| id.host == name && ep.state == EndpointState::Active);
    for (_, ep) in endpoints {
        for net in &ep.ipv4_nets {
            let net = IpNet::V4(*net);
            if in_pool(&net) && !remote.blocks.iter().any(|b| b.contains(&net)) {
                out.insert(net);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc::Calculator;
    use crate::compute::compute;

    const SETUP: [(&str, &str); 6] = [
        (
            "/calico/v1/ipam/v4/pool/10.77.0.0-16",
            r#"{"cidr": "10.77.0.0/16", "vxlan": true}"#,
        ),
        ("/calico/v1/host/h1/bird_ip", "172.31.250.1"),
        ("/calico/v1/host/h2/bird_ip", "172.31.250.2"),
        (
            "/calico/v1/host/h1/vtep",
            r#"{"ip": "10.77.0.0", "mac": "66:00:00:00:00:01"}"#,
        ),
        (
            "/calico/v1/host/h2/vtep",
            r#"{"ip": "10.77.0.64", "mac": "66:00:00:00:00:02"}"#,
        ),
        ("/calico/ipam/v2/host/h2/ipv4/block/10.77.0.64-26", ""),
    ];
    const REMOTE_EP: &str = "/calico/v1/host/h2/workload/docker/w/endpoint/e";

    fn endpoint(ip: &str) -> String {
        format!(
            r#"{{"state":"active","name":"cali1","mac":"ee:ee:ee:ee:ee:01","profile_ids":[],"ipv4_nets":["{ip}/32"]}}"#
        )
    }

    fn routes(calc: &Calculator) -> Vec<String> {
        calc.desired()
            .overlay
            .routes
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_remote_endpoint_outside_its_hosts_blocks_gets_its_own_tunnel_route() {
        let mut calc = Calculator::new("h1");
        for (k, v) in SETUP {
            calc.apply(k, Some(v.as_bytes()));
        }
        assert_eq!(
            routes(&calc),
            ["10.77.0.64/26 via 10.77.0.64 dev vxlan.calico onlink"]
        );
        // Borrowed (outside h2's block): a /32 of its own, added and removed incrementally.
        let delta = calc.apply(REMOTE_EP, Some(endpoint("10.77.5.5").as_bytes()));
        assert!(delta.overlay);
        assert_eq!(
            routes(&calc),
            [
                "10.77.0.64/26 via 10.77.0.64 dev vxlan.calico onlink",
                "10.77.5.5/32 via 10.77.0.64 dev vxlan.calico onlink"
            ]
        );
        assert_eq!(calc.desired(), &compute(calc.state(), "h1"));
        // Inside its block: the block route covers it.
        calc.apply(REMOTE_EP, Some(endpoint("10.77.0.65").as_bytes()));
        assert_eq!(routes(&calc).len(), 1);
        assert_eq!(calc.desired(), &compute(calc.state(), "h1"));
        let d = &calc.desired().overlay;
        assert_eq!(d.fdb.len(), 1);
        assert_eq!(d.neighbours.len(), 1);
        assert_eq!(
            d.devices["vxlan.calico"].addr,
            Some(Ipv4Addr::new(10, 77, 0, 0))
        );
    }
}
