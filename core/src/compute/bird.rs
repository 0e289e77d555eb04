//! BIRD's BGP configuration for this host (reference 4.2, 4.3): router id, local AS, the peers
//! (node-to-node mesh, global peers, this host's peers), the pools to export and the IPAM
//! blocks affine to the host (announced as one aggregate route each, reference 4.4).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::cluster::ClusterState;
use crate::desired::{BirdConfig, BirdPeer, PeerKind};
use crate::keys::IpVersion;

/// The v4 and v6 BIRD configs of `host`: v4 when the host has a BGP IPv4, v6 when it has both
/// an IPv6 and an IPv4 (router ids are 32-bit, so BIRD6 needs the IPv4 as well).
pub fn bird_configs(state: &ClusterState, host: &str) -> (Option<BirdConfig>, Option<BirdConfig>) {
    let Some(me) = state.hosts.get(host) else {
        return (None, None);
    };
    let Some(router_id) = me.ip_v4 else {
        return (None, None);
    };
    let v4 = config(state, host, router_id, IpAddr::V4(router_id), IpVersion::V4);
    let v6 = me
        .ip_v6
        .map(|ip| config(state, host, router_id, IpAddr::V6(ip), IpVersion::V6));
    (Some(v4), v6)
}

fn config(
    state: &ClusterState,
    host: &str,
    router_id: std::net::Ipv4Addr,
    source: IpAddr,
    version: IpVersion,
) -> BirdConfig {
    let me = state.host(host);
    // Every host builds the whole mesh: gathered, then the set built from one sorted run
    // (hosts come in name order, not address order).
    let mut peers: BTreeSet<BirdPeer> = if state.bgp.node_mesh {
        state
            .hosts
            .iter()
            .filter_map(|(name, other)| {
                let ip = match version {
                    IpVersion::V4 => other.ip_v4.map(IpAddr::V4),
                    IpVersion::V6 => other.ip_v6.map(IpAddr::V6),
                };
                ip.filter(|ip| name != host && *ip != source)
                    .map(|ip| BirdPeer {
                        kind: PeerKind::Mesh,
                        ip,
                        // `state.host_as(name)`, without looking the host up again.
                        as_num: other.as_num.unwrap_or(state.bgp.as_num),
                    })
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    let explicit = state
        .bgp
        .peers
        .iter()
        .map(|(ip, p)| (PeerKind::Global, ip, p))
        .chain(me.peers.iter().map(|(ip, p)| (PeerKind::Node, ip, p)));
    for (kind, ip, peer) in explicit {
        if IpVersion::of_addr(ip) == version && *ip != source {
            peers.insert(BirdPeer {
                kind,
                ip: *ip,
                as_num: peer.as_num,
            });
        }
    }
    let pools = state
        .pools
        .values()
        .filter(|p| IpVersion::of(&p.cidr) == version && !p.disabled);
    let export_pools: BTreeSet<IpNet> = pools.clone().map(|p| p.cidr).collect();
    let overlay_pools = pools.filter(|p| p.is_overlay()).map(|p| p.cidr).collect();
    BirdConfig {
        router_id,
        source_address: source,
        local_as: state.host_as(host),
        peers,
        export_pools,
        overlay_pools,
        blocks: me
            .blocks
            .iter()
            .filter(|b| IpVersion::of(b) == version)
            .copied()
            .collect(),
        loglevel: me.bgp_loglevel.or(state.bgp.loglevel),
    }
}
