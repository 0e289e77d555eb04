//! Proxy NDP on the simulated host: the proxy table (`ip -6 neigh add proxy <ip> dev <dev>`)
//! that `apply` keeps equal to the desired one, and the rule Linux's `ndisc_recv_ns` follows
//! to answer a neighbour solicitation for an address the host does not hold on that
//! interface: `forwarding` and `proxy_ndp` on, and an entry for the target on the interface.
//! Unlike proxy ARP there is no route lookup, and no entry means no answer.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use calico_core::desired::{DesiredState, ProxyNeighbour};
use calico_core::plan::Change;

use super::kernel::{Kernel, ROOT_NS};

/// Makes the host namespace's proxy table equal `desired` (every entry there is ours: nothing
/// else on a simulated host adds one). Entries whose interface is missing wait in `waiting`.
pub(super) fn apply(
    k: &mut Kernel,
    desired: &DesiredState,
    changes: &mut Vec<Change>,
    waiting: &mut BTreeSet<String>,
) {
    let present: BTreeSet<String> = desired
        .proxy_neighbours
        .iter()
        .filter(|p| k.link(ROOT_NS, &p.dev).is_some())
        .map(|p| p.dev.clone())
        .collect();
    let Ok(space) = k.ns_mut(ROOT_NS) else {
        return;
    };
    let stale: Vec<(Ipv6Addr, String)> = space
        .proxies
        .iter()
        .filter(|(ip, dev)| {
            !desired.proxy_neighbours.contains(&ProxyNeighbour {
                ip: *ip,
                dev: dev.clone(),
            })
        })
        .cloned()
        .collect();
    for (ip, dev) in stale {
        space.proxies.remove(&(ip, dev.clone()));
        changes.push(Change::DelProxyNeighbour(ProxyNeighbour { ip, dev }));
    }
    for p in &desired.proxy_neighbours {
        if !present.contains(&p.dev) {
            waiting.insert(p.dev.clone());
        } else if space.proxies.insert((p.ip, p.dev.clone())) {
            changes.push(Change::AddProxyNeighbour(p.clone()));
        }
    }
}

/// The host namespace's proxy table, as `ip -6 neigh show proxy` lists it.
pub(super) fn observe(k: &Kernel) -> BTreeSet<ProxyNeighbour> {
    k.ns(ROOT_NS)
        .map(|space| {
            space
                .proxies
                .iter()
                .map(|(ip, dev)| ProxyNeighbour {
                    ip: *ip,
                    dev: dev.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Why the host does not answer a solicitation for `ip` arriving on `dev`, or `None` when it
/// does (proxy NDP).
pub(super) fn refusal(k: &Kernel, dev: &str, ip: Ipv6Addr) -> Option<String> {
    let proxy_key = format!("net.ipv6.conf.{dev}.proxy_ndp");
    if !k.sysctl_on(&proxy_key) {
        return Some(format!("{proxy_key} is off"));
    }
    if !k.sysctl_on("net.ipv6.conf.all.forwarding") {
        return Some("net.ipv6.conf.all.forwarding is off".to_string());
    }
    let listed = k
        .ns(ROOT_NS)
        .is_ok_and(|space| space.proxies.contains(&(ip, dev.to_string())));
    (!listed).then(|| format!("no proxy entry for {ip} on {dev}"))
}
