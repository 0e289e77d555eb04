//! Proxy-NDP entries (`ip -6 neigh add proxy <ip> dev <dev>`) through rtnetlink: the dump
//! (`ip -6 neigh show proxy`, a neighbour dump with `NTF_PROXY`), which of them are ours, the
//! plan that makes ours equal the desired ones, and the request messages. Ours are, as for
//! static neighbours, the entries on an interface of one of our routes plus those this process
//! installed.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use calico_core::desired::{ProxyNeighbour, Route};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;

use super::route::{Links, RouteOp, RoutePlan};

/// The proxy entry a dumped message describes, when it is an IPv6 one on a known link.
pub fn from_message(m: &NeighbourMessage, links: &Links) -> Option<ProxyNeighbour> {
    let ip = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(*v6),
        _ => None,
    })?;
    Some(ProxyNeighbour {
        ip,
        dev: links.name(m.header.ifindex)?.to_string(),
    })
}

/// The request message for `ip` on interface `index` (add with `NLM_F_REPLACE`, or delete).
pub fn message(ip: Ipv6Addr, index: u32) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Inet6;
    message.header.ifindex = index;
    message.header.flags = NeighbourFlags::Proxy;
    message.header.state = NeighbourState::Permanent;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)));
    message
}

/// The entries of `all` we own: on an interface of one of `routes`, or in `owned`.
pub fn ours(
    all: &BTreeSet<ProxyNeighbour>,
    routes: &BTreeSet<Route>,
    owned: &BTreeSet<ProxyNeighbour>,
) -> BTreeSet<ProxyNeighbour> {
    let devs: BTreeSet<&str> = routes.iter().map(|r| r.dev.as_str()).collect();
    all.iter()
        .filter(|p| devs.contains(p.dev.as_str()) || owned.contains(p))
        .cloned()
        .collect()
}

/// Appends to `plan` the deletions of ours not wanted and the additions of wanted ones
/// missing; an entry whose interface is not in `links` waits for the next apply.
pub fn plan(
    want: &BTreeSet<ProxyNeighbour>,
    have: &BTreeSet<ProxyNeighbour>,
    links: &Links,
    plan: &mut RoutePlan,
) {
    for p in have.difference(want) {
        plan.ops.push(RouteOp::DeleteProxy(p.clone()));
    }
    for p in want.difference(have) {
        if links.contains(&p.dev) {
            plan.ops.push(RouteOp::ReplaceProxy(p.clone()));
        } else {
            plan.skipped.push(format!(
                "proxy neighbour {} dev {}: interface {} not found",
                p.ip, p.dev, p.dev
            ));
            plan.waiting.insert(p.dev.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(ip: &str, dev: &str) -> ProxyNeighbour {
        ProxyNeighbour {
            ip: ip.parse().unwrap(),
            dev: dev.to_string(),
        }
    }

    #[test]
    fn ours_are_on_our_route_interfaces_or_remembered() {
        let all = BTreeSet::from([
            proxy("fd00::1", "caliA"),
            proxy("fd00::1", "caliB"),
            proxy("fd00::9", "eth0"),
        ]);
        let routes = BTreeSet::from([Route {
            dst: "fd80::1/128".parse().unwrap(),
            dev: "caliA".to_string(),
        }]);
        let owned = BTreeSet::from([proxy("fd00::1", "caliB")]);
        let got = ours(&all, &routes, &owned);
        assert_eq!(
            got,
            BTreeSet::from([proxy("fd00::1", "caliA"), proxy("fd00::1", "caliB")])
        );
    }

    #[test]
    fn the_plan_deletes_stale_adds_missing_and_waits_for_absent_links() {
        let links = Links::new([("caliA".to_string(), 5)]);
        let want = BTreeSet::from([proxy("fd00::1", "caliA"), proxy("fd00::1", "caliZ")]);
        let have = BTreeSet::from([proxy("fd00::2", "caliA")]);
        let mut out = RoutePlan::default();
        plan(&want, &have, &links, &mut out);
        assert_eq!(
            out.ops,
            vec![
                RouteOp::DeleteProxy(proxy("fd00::2", "caliA")),
                RouteOp::ReplaceProxy(proxy("fd00::1", "caliA")),
            ]
        );
        assert_eq!(out.waiting, BTreeSet::from(["caliZ".to_string()]));
    }

    #[test]
    fn a_dumped_proxy_entry_is_read_back() {
        let links = Links::new([("caliA".to_string(), 5)]);
        let m = message("fd00::1".parse().unwrap(), 5);
        assert_eq!(from_message(&m, &links), Some(proxy("fd00::1", "caliA")));
        assert_eq!(from_message(&m, &Links::default()), None);
    }
}
