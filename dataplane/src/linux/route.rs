//! Routes and static neighbours through iproute2: read with `ip -j` (JSON), written with one
//! `ip -force -batch -` process per apply holding every `route`/`neigh` command.
//!
//! (The design names rtnetlink; `ip -batch` keeps to one process per apply, which is what the
//! batching principle asks for, without an async netlink stack. Reads are four `ip -j` calls.)
//!
//! Our routes are those with protocol [`RTPROT_CALICO`]; we never touch any other. Our
//! neighbours are the permanent entries on an interface that carries one of our routes, plus
//! those this process installed (so a stale entry is found even after its route went).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::desired::{Neighbour, Route};
use calico_core::model::MacAddr;
use ipnet::IpNet;
use serde::Deserialize;

use super::cmd::Runner;
use crate::DataplaneError;

/// The route protocol number our routes carry (`ip route ... proto 80`), so we only ever
/// touch our own.
pub const RTPROT_CALICO: u8 = 80;

#[derive(Debug, Deserialize)]
struct RouteJson {
    dst: String,
    dev: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NeighJson {
    dst: String,
    dev: Option<String>,
    lladdr: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LinkJson {
    ifname: String,
    address: Option<String>,
}

fn json<'a, T: Deserialize<'a>>(
    what: &'static str,
    text: &'a str,
) -> Result<Vec<T>, DataplaneError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|e| DataplaneError::Parse {
        what,
        line: e.line(),
        reason: e.to_string(),
    })
}

fn parse_dst(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Interface name → MAC of every link, like `ip link show`.
///
/// # Errors
/// When `ip` fails or prints something that is not its JSON.
pub fn read_links(
    runner: &Runner,
    netns: Option<&str>,
) -> Result<BTreeMap<String, Option<MacAddr>>, DataplaneError> {
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "link", "show"]);
    let text = runner.run("listing links", "ip", &args, None)?;
    let links: Vec<LinkJson> = json("ip -j link show output", &text)?;
    Ok(links
        .into_iter()
        .map(|l| {
            let mac = l.address.and_then(|a| a.parse().ok());
            (l.ifname, mac)
        })
        .collect())
}

/// Our routes (protocol 80) of both families, like `ip route show proto 80`.
///
/// # Errors
/// When `ip` fails or its output is not JSON.
pub fn read_routes(runner: &Runner) -> Result<BTreeSet<Route>, DataplaneError> {
    let proto = RTPROT_CALICO.to_string();
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let text = runner.run(
            "listing routes",
            "ip",
            &["-j", family, "route", "show", "proto", &proto],
            None,
        )?;
        for r in json::<RouteJson>("ip -j route show output", &text)? {
            if let (Some(dst), Some(dev)) = (parse_dst(&r.dst), r.dev) {
                out.insert(Route { dst, dev });
            }
        }
    }
    Ok(out)
}

/// Every permanent neighbour entry, like `ip neigh show nud permanent`.
///
/// # Errors
/// When `ip` fails or its output is not JSON.
pub fn read_permanent_neighbours(runner: &Runner) -> Result<BTreeSet<Neighbour>, DataplaneError> {
    let text = runner.run(
        "listing neighbours",
        "ip",
        &["-j", "neigh", "show", "nud", "permanent"],
        None,
    )?;
    let mut out = BTreeSet::new();
    for n in json::<NeighJson>("ip -j neigh show output", &text)? {
        let ip = n.dst.parse::<IpAddr>().ok();
        let mac = n.lladdr.and_then(|m| m.parse::<MacAddr>().ok());
        if let (Some(ip), Some(mac), Some(dev)) = (ip, mac, n.dev) {
            out.insert(Neighbour { ip, mac, dev });
        }
    }
    Ok(out)
}

/// The neighbours of `all` we own: on an interface of one of `routes`, or in `owned`.
pub fn our_neighbours(
    all: &BTreeSet<Neighbour>,
    routes: &BTreeSet<Route>,
    owned: &BTreeSet<Neighbour>,
) -> BTreeSet<Neighbour> {
    let devs: BTreeSet<&str> = routes.iter().map(|r| r.dev.as_str()).collect();
    all.iter()
        .filter(|n| devs.contains(n.dev.as_str()) || owned.contains(n))
        .cloned()
        .collect()
}

/// The `ip -batch` input of one apply and what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub input: String,
    pub changes: Vec<String>,
    /// Routes and neighbours left for the next apply because their interface is missing.
    pub skipped: Vec<String>,
}

/// Commands that make our routes and neighbours equal the desired ones. Entries whose
/// interface is not in `links` are skipped (reported in `skipped`).
pub fn plan_routes(
    want_routes: &BTreeSet<Route>,
    want_neigh: &BTreeSet<Neighbour>,
    have_routes: &BTreeSet<Route>,
    have_neigh: &BTreeSet<Neighbour>,
    links: &BTreeSet<String>,
) -> RoutePlan {
    let mut plan = RoutePlan::default();
    let line = |plan: &mut RoutePlan, cmd: String, change: String| {
        plan.input.push_str(&cmd);
        plan.input.push('\n');
        plan.changes.push(change);
    };
    let want_dst: BTreeMap<IpNet, &str> = want_routes
        .iter()
        .map(|r| (r.dst.trunc(), r.dev.as_str()))
        .collect();
    for r in have_routes {
        if !want_dst.contains_key(&r.dst) {
            line(
                &mut plan,
                format!("route del {} dev {} proto {RTPROT_CALICO}", r.dst, r.dev),
                format!("delete route {} dev {}", r.dst, r.dev),
            );
        }
    }
    let want_ips: BTreeSet<(IpAddr, &str)> =
        want_neigh.iter().map(|n| (n.ip, n.dev.as_str())).collect();
    for n in have_neigh {
        if !want_ips.contains(&(n.ip, n.dev.as_str())) {
            line(
                &mut plan,
                format!("neigh del {} dev {}", n.ip, n.dev),
                format!("delete neighbour {} dev {}", n.ip, n.dev),
            );
        }
    }
    for (dst, dev) in &want_dst {
        let route = Route {
            dst: *dst,
            dev: dev.to_string(),
        };
        if have_routes.contains(&route) {
            continue;
        }
        if !links.contains(*dev) {
            plan.skipped
                .push(format!("route {dst} dev {dev}: interface {dev} not found"));
            continue;
        }
        line(
            &mut plan,
            format!("route replace {dst} dev {dev} proto {RTPROT_CALICO} scope link"),
            format!("replace route {dst} dev {dev}"),
        );
    }
    for n in want_neigh {
        if have_neigh.contains(n) {
            continue;
        }
        if !links.contains(&n.dev) {
            plan.skipped.push(format!(
                "neighbour {} dev {}: interface {} not found",
                n.ip, n.dev, n.dev
            ));
            continue;
        }
        line(
            &mut plan,
            format!(
                "neigh replace {} lladdr {} dev {} nud permanent",
                n.ip, n.mac, n.dev
            ),
            format!("replace neighbour {} lladdr {} dev {}", n.ip, n.mac, n.dev),
        );
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, dev: &str) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            dev: dev.to_string(),
        }
    }

    fn neigh(ip: &str, dev: &str) -> Neighbour {
        Neighbour {
            ip: ip.parse().unwrap(),
            mac: "ee:ee:ee:ee:ee:01".parse().unwrap(),
            dev: dev.to_string(),
        }
    }

    #[test]
    fn plan_deletes_stale_adds_missing_and_skips_absent_interfaces() {
        let want_r = BTreeSet::from([
            route("192.168.1.1/32", "caliA"),
            route("192.168.1.2/32", "caliB"),
        ]);
        let want_n = BTreeSet::from([neigh("192.168.1.1", "caliA"), neigh("192.168.1.2", "caliB")]);
        let have_r = BTreeSet::from([
            route("192.168.1.1/32", "caliA"),
            route("192.168.1.9/32", "caliA"),
        ]);
        let have_n = BTreeSet::from([neigh("192.168.1.9", "caliA")]);
        let links = BTreeSet::from(["caliA".to_string()]);
        let plan = plan_routes(&want_r, &want_n, &have_r, &have_n, &links);
        assert_eq!(
            plan.input,
            "route del 192.168.1.9/32 dev caliA proto 80\n\
             neigh del 192.168.1.9 dev caliA\n\
             neigh replace 192.168.1.1 lladdr ee:ee:ee:ee:ee:01 dev caliA nud permanent\n"
        );
        assert_eq!(plan.skipped.len(), 2, "{:?}", plan.skipped);
        assert!(plan.skipped[0].contains("interface caliB not found"));
    }

    #[test]
    fn json_of_ip_reads_host_routes_and_permanent_neighbours() {
        let routes: Vec<RouteJson> = json(
            "t",
            r#"[{"dst":"192.168.1.1","dev":"caliA","scope":"link","flags":[]}]"#,
        )
        .unwrap();
        assert_eq!(
            parse_dst(&routes[0].dst),
            Some("192.168.1.1/32".parse().unwrap())
        );
        assert_eq!(parse_dst("fd80::/64"), Some("fd80::/64".parse().unwrap()));
        let none: Vec<RouteJson> = json("t", "").unwrap();
        assert!(none.is_empty());
        let bad = json::<RouteJson>("t", "{").unwrap_err();
        assert!(
            matches!(bad, DataplaneError::Parse { what: "t", .. }),
            "{bad}"
        );
    }

    #[test]
    fn neighbours_are_ours_by_route_interface_or_memory() {
        let all = BTreeSet::from([
            neigh("10.0.0.1", "eth0"),
            neigh("192.168.1.1", "caliA"),
            neigh("192.168.1.5", "caliX"),
        ]);
        let routes = BTreeSet::from([route("192.168.1.1/32", "caliA")]);
        let owned = BTreeSet::from([neigh("192.168.1.5", "caliX")]);
        let ours = our_neighbours(&all, &routes, &owned);
        assert_eq!(
            ours,
            BTreeSet::from([neigh("192.168.1.1", "caliA"), neigh("192.168.1.5", "caliX")])
        );
    }
}
