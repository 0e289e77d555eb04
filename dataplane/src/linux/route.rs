//! Routes and static neighbours through rtnetlink: one netlink connection per apply (or
//! observe) dumps links, our routes of both families and the permanent neighbours, and sends
//! one request per difference (like `ip route replace` / `ip neigh replace`).
//!
//! Our routes are those with protocol [`RTPROT_CALICO`] in the main table; we never touch any
//! other. Our neighbours are the permanent entries on an interface that carries one of our
//! routes, plus those this process installed (so a stale entry is found even after its route
//! went).
//!
//! [`read_links`] stays on `ip -j link show`: workload plumbing reads links of other
//! namespaces by name (`ip -n`), which a netlink socket of this namespace cannot.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_core::desired::{Neighbour, ProxyNeighbour, Route};
use calico_core::model::MacAddr;
use calico_core::plan::Change;
use futures::stream::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::Deserialize;

use super::cmd::Runner;
use crate::DataplaneError;

/// The route protocol number our routes carry (`ip route ... proto 80`), so we only ever
/// touch our own.
pub const RTPROT_CALICO: u8 = 80;

#[derive(Debug, Deserialize)]
struct LinkJson {
    ifname: String,
    address: Option<String>,
}

/// `ip -json` output as a list (`ip` prints nothing at all for an empty one).
pub(super) fn json<'a, T: Deserialize<'a>>(
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

/// Interface name → MAC of every link in `netns` (or ours), like `ip -n <netns> link show`.
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

/// The links of this namespace by name and by index, from one dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    by_name: BTreeMap<String, u32>,
    by_index: BTreeMap<u32, String>,
}

impl Links {
    /// Links from `(name, index)` pairs.
    pub fn new(links: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut out = Links::default();
        for (name, index) in links {
            out.by_index.insert(index, name.clone());
            out.by_name.insert(name, index);
        }
        out
    }

    /// The interface index of `name`, if the link exists.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of interface `index`.
    pub fn name(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(String::as_str)
    }

    /// Whether a link called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// One change to our routes or neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Like `ip route del <dst> dev <dev> proto 80`.
    DeleteRoute(Route),
    /// Like `ip neigh del <ip> dev <dev>`.
    DeleteNeighbour(Neighbour),
    /// Like `ip route replace <dst> dev <dev> proto 80 scope link`.
    ReplaceRoute(Route),
    /// Like `ip neigh replace <ip> lladdr <mac> dev <dev> nud permanent`.
    ReplaceNeighbour(Neighbour),
    /// Like `ip -6 neigh del proxy <ip> dev <dev>`.
    DeleteProxy(ProxyNeighbour),
    /// Like `ip -6 neigh replace proxy <ip> dev <dev>`.
    ReplaceProxy(ProxyNeighbour),
}

impl RouteOp {
    /// What this operation changed, once made.
    pub fn change(&self) -> Change {
        match self {
            RouteOp::DeleteRoute(r) => Change::DelRoute(r.clone()),
            RouteOp::DeleteNeighbour(n) => Change::DelNeighbour(n.clone()),
            RouteOp::ReplaceRoute(r) => Change::AddRoute(r.clone()),
            RouteOp::ReplaceNeighbour(n) => Change::AddNeighbour(n.clone()),
            RouteOp::DeleteProxy(p) => Change::DelProxyNeighbour(p.clone()),
            RouteOp::ReplaceProxy(p) => Change::AddProxyNeighbour(p.clone()),
        }
    }

    /// What was being done, for an error message.
    fn operation(&self) -> String {
        match self {
            RouteOp::DeleteRoute(r) => format!("deleting route {} dev {}", r.dst, r.dev),
            RouteOp::DeleteNeighbour(n) => format!("deleting neighbour {} dev {}", n.ip, n.dev),
            RouteOp::ReplaceRoute(r) => format!("replacing route {} dev {}", r.dst, r.dev),
            RouteOp::ReplaceNeighbour(n) => format!(
                "replacing neighbour {} lladdr {} dev {}",
                n.ip, n.mac, n.dev
            ),
            RouteOp::DeleteProxy(p) => format!("deleting proxy neighbour {} dev {}", p.ip, p.dev),
            RouteOp::ReplaceProxy(p) => {
                format!("replacing proxy neighbour {} dev {}", p.ip, p.dev)
            }
        }
    }

    fn dev(&self) -> &str {
        match self {
            RouteOp::DeleteRoute(r) | RouteOp::ReplaceRoute(r) => &r.dev,
            RouteOp::DeleteNeighbour(n) | RouteOp::ReplaceNeighbour(n) => &n.dev,
            RouteOp::DeleteProxy(p) | RouteOp::ReplaceProxy(p) => &p.dev,
        }
    }
}

/// The changes of one apply: deletions first, then replacements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub ops: Vec<RouteOp>,
    /// Routes and neighbours left for the next apply because their interface is missing.
    pub skipped: Vec<String>,
    /// Those missing interfaces.
    pub waiting: BTreeSet<String>,
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

/// The changes that make our routes and neighbours equal the desired ones. Entries whose
/// interface is not in `links` are skipped (reported in `skipped`).
pub fn plan_routes(
    want_routes: &BTreeSet<Route>,
    want_neigh: &BTreeSet<Neighbour>,
    have_routes: &BTreeSet<Route>,
    have_neigh: &BTreeSet<Neighbour>,
    links: &Links,
) -> RoutePlan {
    let mut plan = RoutePlan::default();
    let want_dst: BTreeMap<IpNet, &str> = want_routes
        .iter()
        .map(|r| (r.dst.trunc(), r.dev.as_str()))
        .collect();
    for r in have_routes {
        if !want_dst.contains_key(&r.dst) {
            plan.ops.push(RouteOp::DeleteRoute(r.clone()));
        }
    }
    let want_ips: BTreeSet<(IpAddr, &str)> =
        want_neigh.iter().map(|n| (n.ip, n.dev.as_str())).collect();
    for n in have_neigh {
        if !want_ips.contains(&(n.ip, n.dev.as_str())) {
            plan.ops.push(RouteOp::DeleteNeighbour(n.clone()));
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
        if !links.contains(dev) {
            plan.skipped
                .push(format!("route {dst} dev {dev}: interface {dev} not found"));
            plan.waiting.insert(dev.to_string());
            continue;
        }
        plan.ops.push(RouteOp::ReplaceRoute(route));
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
            plan.waiting.insert(n.dev.clone());
            continue;
        }
        plan.ops.push(RouteOp::ReplaceNeighbour(n.clone()));
    }
    plan
}

/// What [`Netlink::execute`] did: the changes made, and every error.
#[derive(Debug, Default)]
pub struct Executed {
    pub changes: Vec<Change>,
    pub errors: Vec<DataplaneError>,
}

fn kernel(operation: impl Into<String>, reason: impl ToString) -> DataplaneError {
    DataplaneError::Kernel {
        operation: operation.into(),
        reason: reason.to_string(),
    }
}

/// One rtnetlink connection of this process's namespace, for one apply or observe.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    writes: u64,
}

impl Netlink {
    /// Opens a netlink socket and runs its connection on the current tokio runtime.
    ///
    /// # Errors
    /// [`DataplaneError::Kernel`] when called outside a tokio runtime;
    /// [`DataplaneError::Io`] when the socket cannot be opened.
    pub fn open() -> Result<Self, DataplaneError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| kernel("opening a netlink connection", e))?;
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| DataplaneError::Io {
                operation: "opening a netlink connection".to_string(),
                source,
            })?;
        Ok(Netlink {
            handle,
            connection: runtime.spawn(connection),
            writes: 0,
        })
    }

    /// Write requests (add, replace, delete) sent on this connection.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Closes the connection and waits for its task to end.
    pub async fn close(self) {
        let Netlink {
            handle, connection, ..
        } = self;
        drop(handle);
        // The task ends once its handle is gone; a panic in it has nothing left to report.
        let _ = connection.await;
    }

    /// Every link of the namespace, like `ip link show`.
    ///
    /// # Errors
    /// [`DataplaneError::Kernel`] when the dump fails.
    pub async fn links(&self) -> Result<Links, DataplaneError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel("listing links", e))?;
        Ok(Links::new(messages.into_iter().filter_map(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some((name, m.header.index)),
                _ => None,
            })
        })))
    }

    /// Our routes (protocol 80, main table) of both families, like `ip route show proto 80`.
    ///
    /// # Errors
    /// [`DataplaneError::Kernel`] when a dump fails.
    pub async fn routes(&self, links: &Links) -> Result<BTreeSet<Route>, DataplaneError> {
        let mut out = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let messages: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| kernel("listing routes", e))?;
            out.extend(messages.iter().filter_map(|m| our_route(m, links)));
        }
        Ok(out)
    }

    /// Every permanent neighbour entry, like `ip neigh show nud permanent`.
    ///
    /// # Errors
    /// [`DataplaneError::Kernel`] when the dump fails.
    pub async fn permanent_neighbours(
        &self,
        links: &Links,
    ) -> Result<BTreeSet<Neighbour>, DataplaneError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel("listing neighbours", e))?;
        Ok(messages
            .iter()
            .filter_map(|m| permanent_neighbour(m, links))
            .collect())
    }

    /// Every proxy-NDP entry, like `ip -6 neigh show proxy`.
    ///
    /// # Errors
    /// [`DataplaneError::Kernel`] when the dump fails.
    pub async fn proxy_neighbours(
        &self,
        links: &Links,
    ) -> Result<BTreeSet<ProxyNeighbour>, DataplaneError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .proxies()
            .set_address_family(AddressFamily::Inet6)
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel("listing proxy neighbours", e))?;
        Ok(messages
            .iter()
            .filter_map(|m| super::proxy_ndp::from_message(m, links))
            .collect())
    }

    /// Sends the requests of `plan` one at a time, in plan order (deletions first). Every
    /// request is tried; a failure does not stop the others.
    ///
    /// (Pipelining them, 64 in flight, measured no faster: the kernel's work dominates.)
    pub async fn execute(&mut self, plan: &RoutePlan, links: &Links) -> Executed {
        let mut done = Executed::default();
        for op in &plan.ops {
            self.writes += 1;
            match send(&self.handle, op, links).await {
                Ok(()) => done.changes.push(op.change()),
                Err(reason) => done.errors.push(kernel(op.operation(), reason)),
            }
        }
        done
    }
}

/// The typed route of `m` when it is one of ours with a single output interface.
fn our_route(m: &RouteMessage, links: &Links) -> Option<Route> {
    let h = &m.header;
    if u8::from(h.protocol) != RTPROT_CALICO || h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst = match (dst, h.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) => IpAddr::from([0u8; 16]),
        (None, _) => return None,
    };
    let dst = IpNet::new(dst, h.destination_prefix_length).ok()?;
    let dev = links.name(oif?)?.to_string();
    Some(Route { dst, dev })
}

/// The typed neighbour of `m` when it is a permanent entry with an IP and a MAC.
fn permanent_neighbour(m: &NeighbourMessage, links: &Links) -> Option<Neighbour> {
    if m.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
            }
            _ => {}
        }
    }
    Some(Neighbour {
        ip: ip?,
        mac: mac?,
        dev: links.name(m.header.ifindex)?.to_string(),
    })
}

/// The route message for `route` on interface `index`: link scope and our protocol.
pub fn route_message(route: &Route, index: u32) -> RouteMessage {
    let dst = route.dst.trunc();
    let mut message = RouteMessageBuilder::<IpAddr>::new()
        .output_interface(index)
        .protocol(RouteProtocol::from(RTPROT_CALICO))
        .scope(RouteScope::Link)
        .kind(RouteType::Unicast)
        .build();
    message.header.address_family = match dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    message.header.destination_prefix_length = dst.prefix_len();
    if dst.prefix_len() > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
    }
    message
}

/// Sends `op` and waits for the kernel's answer.
async fn send(handle: &Handle, op: &RouteOp, links: &Links) -> Result<(), String> {
    let dev = op.dev();
    let index = links
        .index(dev)
        .ok_or_else(|| format!("interface {dev} not found"))?;
    let result = match op {
        RouteOp::ReplaceRoute(r) => {
            handle
                .route()
                .add(route_message(r, index))
                .replace()
                .execute()
                .await
        }
        RouteOp::DeleteRoute(r) => {
            let mut message = route_message(r, index);
            // As `ip route del`: match any scope and type, but only our protocol.
            message.header.scope = RouteScope::NoWhere;
            message.header.kind = RouteType::Unspec;
            handle.route().del(message).execute().await
        }
        RouteOp::ReplaceNeighbour(n) => {
            handle
                .neighbours()
                .add(index, n.ip)
                .link_layer_address(&n.mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
        }
        RouteOp::DeleteNeighbour(n) => {
            let mut message = NeighbourMessage::default();
            message.header.family = match n.ip {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            };
            message.header.ifindex = index;
            message
                .attributes
                .push(NeighbourAttribute::Destination(match n.ip {
                    IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                    IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
                }));
            handle.neighbours().del(message).execute().await
        }
        RouteOp::ReplaceProxy(p) => {
            let mut request = handle.neighbours().add(index, p.ip.into()).replace();
            *request.message_mut() = super::proxy_ndp::message(p.ip, index);
            request.execute().await
        }
        RouteOp::DeleteProxy(p) => {
            handle
                .neighbours()
                .del(super::proxy_ndp::message(p.ip, index))
                .execute()
                .await
        }
    };
    result.map_err(|e| match e {
        rtnetlink::Error::NetlinkError(m) => m.to_string(),
        other => other.to_string(),
    })
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
        let links = Links::new([("caliA".to_string(), 7)]);
        let plan = plan_routes(&want_r, &want_n, &have_r, &have_n, &links);
        assert_eq!(
            plan.ops,
            vec![
                RouteOp::DeleteRoute(route("192.168.1.9/32", "caliA")),
                RouteOp::DeleteNeighbour(neigh("192.168.1.9", "caliA")),
                RouteOp::ReplaceNeighbour(neigh("192.168.1.1", "caliA")),
            ]
        );
        assert_eq!(
            plan.ops.iter().map(RouteOp::change).collect::<Vec<_>>(),
            vec![
                Change::DelRoute(route("192.168.1.9/32", "caliA")),
                Change::DelNeighbour(neigh("192.168.1.9", "caliA")),
                Change::AddNeighbour(neigh("192.168.1.1", "caliA")),
            ]
        );
        assert_eq!(plan.skipped.len(), 2, "{:?}", plan.skipped);
        assert_eq!(plan.waiting, BTreeSet::from(["caliB".to_string()]));
        assert!(plan.skipped[0].contains("interface caliB not found"));
    }

    #[test]
    fn route_messages_carry_our_protocol_link_scope_and_the_interface() {
        let m = route_message(&route("192.168.1.7/32", "caliA"), 7);
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(u8::from(m.header.protocol), RTPROT_CALICO);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));

        // A message built for sending reads back as the same route (what a dump returns).
        let links = Links::new([("caliA".to_string(), 7)]);
        let v6 = route("fd80::/64", "caliA");
        assert_eq!(our_route(&route_message(&v6, 7), &links), Some(v6));

        // Other protocols, other tables and unknown interfaces are not ours.
        let mut boot = route_message(&route("192.168.1.7/32", "caliA"), 7);
        boot.header.protocol = RouteProtocol::Boot;
        assert_eq!(our_route(&boot, &links), None);
        let mut local = route_message(&route("192.168.1.7/32", "caliA"), 7);
        local.header.table = 255;
        assert_eq!(our_route(&local, &links), None);
        let other_link = route_message(&route("192.168.1.7/32", "caliA"), 8);
        assert_eq!(our_route(&other_link, &links), None);
    }

    #[test]
    fn only_permanent_neighbours_with_a_mac_are_read() {
        let links = Links::new([("caliA".to_string(), 3)]);
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = 3;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "192.168.1.1".parse().unwrap(),
            )));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![0xee; 5]));
        assert_eq!(permanent_neighbour(&m, &links), None, "a 5-byte MAC");
        m.attributes.pop();
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![
            0xee, 0xee, 0xee, 0xee, 0xee, 0x01,
        ]));
        assert_eq!(
            permanent_neighbour(&m, &links),
            Some(neigh("192.168.1.1", "caliA"))
        );
        m.header.state = NeighbourState::Reachable;
        assert_eq!(permanent_neighbour(&m, &links), None);
    }

    #[test]
    fn ip_link_json_is_read_and_bad_json_named() {
        let links: Vec<LinkJson> = json(
            "t",
            r#"[{"ifindex":1,"ifname":"lo","address":"00:00:00:00:00:00"}]"#,
        )
        .unwrap();
        assert_eq!(links[0].ifname, "lo");
        let none: Vec<LinkJson> = json("t", "").unwrap();
        assert!(none.is_empty());
        let bad = json::<LinkJson>("t", "{").unwrap_err();
        assert!(
            matches!(bad, DataplaneError::Parse { what: "t", .. }),
            "{bad}"
        );
    }

    #[test]
    fn opening_outside_a_tokio_runtime_is_an_error_not_a_panic() {
        let err = Netlink::open().unwrap_err();
        assert!(
            matches!(&err, DataplaneError::Kernel { operation, .. }
                if operation == "opening a netlink connection"),
            "{err}"
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
