//! What a settled cluster holds, predicted from the datastore with the simulator's BGP model,
//! and how a real host's kernel and BIRD differ from it.
//!
//! The runner reads the datastore ([`dump`], run by `calico-sim store-dump` inside the wire
//! namespace, where etcd is reachable) into a [`ClusterState`]; each host's BIRD configs are
//! what its agent renders from that state ([`bird_configs`]); each host's exportable routes are
//! those its kernel holds that BIRD did not learn. [`BgpFabric::learned`], the same model the
//! simulator settles with, then says which `proto bird` routes every host must hold. Each
//! running host's agent must also hold the chains its calculator computes from that state
//! ([`compute`]), read back from `iptables-save` with the dataplane's own reader. A host whose
//! chains, BIRD config files or BGP routes differ from this is not settled.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_backends::Store;
use calico_core::cluster::ClusterState;
use calico_core::compute::bird::bird_configs;
use calico_core::compute::compute;
use calico_core::desired::{BirdConfig, TableId, TableState};
use calico_core::iptables::IpFamily;
use calico_core::render::bird::render_bird;
use ipnet::IpNet;

use crate::bgp::{BgpFabric, LearnedRoutes, SessionState, Speaker};

/// The datastore prefix the prediction reads.
pub const PREFIX: &str = "/calico/";

/// Every key under [`PREFIX`] as JSON `[[key, value], ...]` (values are UTF-8 text in the
/// Calico v1 model), for the runner to read across namespaces.
///
/// # Errors
/// The store's listing error.
pub async fn dump(store: &dyn Store) -> Result<String, calico_backends::StoreError> {
    let (kvs, _) = store.list(PREFIX).await?;
    let pairs: Vec<(String, String)> = kvs
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
        .collect();
    Ok(serde_json::to_string(&pairs).unwrap_or_default())
}

/// The cluster state a [`dump`] describes.
///
/// # Errors
/// Text that is not a dump.
pub fn load(text: &str) -> Result<ClusterState, serde_json::Error> {
    let pairs: Vec<(String, String)> = serde_json::from_str(text)?;
    let mut state = ClusterState::default();
    for (key, value) in pairs {
        state.apply(&key, Some(value.as_bytes()));
    }
    Ok(state)
}

/// One route of `ip -o route show` (main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    /// The `proto` word (`bird`, `kernel`, `80`, ...); `boot` when ip prints none.
    pub proto: String,
}

/// Parses `ip -o route show` / `ip -o -6 route show` lines; lines it cannot read are skipped.
pub fn parse_routes(text: &str) -> Vec<KernelRoute> {
    const TYPES: [&str; 7] = [
        "unicast",
        "blackhole",
        "unreachable",
        "prohibit",
        "local",
        "broadcast",
        "multicast",
    ];
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().peekable();
            if words.peek().is_some_and(|w| TYPES.contains(w)) {
                words.next();
            }
            let dst_word = words.next()?;
            let rest: Vec<&str> = words.collect();
            let after = |key: &str| {
                rest.iter()
                    .position(|w| *w == key)
                    .and_then(|i| rest.get(i + 1))
            };
            let via: Option<IpAddr> = after("via").and_then(|v| v.parse().ok());
            let dst = if dst_word == "default" {
                let v6 = via.is_some_and(|v| v.is_ipv6()) || line.contains("::");
                if v6 {
                    "::/0".parse().ok()?
                } else {
                    "0.0.0.0/0".parse().ok()?
                }
            } else if dst_word.contains('/') {
                dst_word.parse().ok()?
            } else {
                IpNet::from(dst_word.parse::<IpAddr>().ok()?)
            };
            Some(KernelRoute {
                dst,
                via,
                proto: after("proto").map_or("boot", |p| p).to_string(),
            })
        })
        .collect()
}

/// What one real host shows: whether its agent runs, its routes and its BIRD config files.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub running: bool,
    pub routes: Vec<KernelRoute>,
    /// The text of `bird.cfg` and `bird6.cfg` in its BIRD run dir, when present.
    pub bird_files: [Option<String>; 2],
    /// Our chains and hooks per table as the kernel holds them (a table we own nothing in
    /// is absent).
    pub tables: BTreeMap<TableId, TableState>,
    /// BIRD's BGP protocols (`birdc show protocols` of both daemons): name → Established.
    pub sessions: BTreeMap<String, bool>,
}

impl HostView {
    /// Routes BIRD may originate: what the kernel holds that neither BIRD learnt nor the
    /// kernel made for an address (as the simulator's `routes_for_export`).
    fn exports(&self) -> Vec<IpNet> {
        self.routes
            .iter()
            .filter(|r| r.proto != "bird" && r.proto != "kernel")
            .map(|r| r.dst)
            .collect()
    }

    /// The routes BIRD wrote: destination → next hop.
    fn bgp_routes(&self) -> LearnedRoutes {
        self.routes
            .iter()
            .filter(|r| r.proto == "bird")
            .filter_map(|r| Some((r.dst, r.via?)))
            .collect()
    }
}

/// How the cluster differs from what `state` implies, one line per difference (empty: none).
/// `views` is every host of the cluster by name.
pub fn differences(state: &ClusterState, views: &BTreeMap<String, HostView>) -> Vec<String> {
    let configs: BTreeMap<&str, [Option<BirdConfig>; 2]> = views
        .keys()
        .map(|host| {
            let (v4, v6) = bird_configs(state, host);
            (host.as_str(), [v4, v6])
        })
        .collect();
    let exports: BTreeMap<&str, Vec<IpNet>> = views
        .iter()
        .map(|(host, view)| (host.as_str(), view.exports()))
        .collect();
    let speakers: Vec<Speaker<'_>> = views
        .iter()
        .map(|(host, view)| Speaker {
            host,
            running: view.running,
            bird: [
                configs[host.as_str()][0].as_ref(),
                configs[host.as_str()][1].as_ref(),
            ],
            exports: &exports[host.as_str()],
        })
        .collect();
    let learned = BgpFabric::default().learned(&speakers);
    let mut out = Vec::new();
    for (host, view) in views.iter().filter(|(_, v)| v.running) {
        out.extend(table_differences(
            host,
            &compute(state, host).tables,
            &view.tables,
        ));
        for (family, config) in configs[host.as_str()].iter().enumerate() {
            let file = ["bird.cfg", "bird6.cfg"][family];
            let want = config.as_ref().map(|c| render_bird(c, family == 1));
            if want != view.bird_files[family] {
                let what = match (&want, &view.bird_files[family]) {
                    (Some(_), None) => "is missing",
                    (None, Some(_)) => "exists though the datastore implies none",
                    _ => "is not the configuration the datastore implies",
                };
                out.push(format!("{host}: {file} {what}"));
            }
        }
        for row in BgpFabric::default().peer_table(&speakers, host) {
            let want = row.state == SessionState::Established;
            let state = |up: bool| if up { "established" } else { "down" };
            match view.sessions.get(&row.protocol) {
                None => out.push(format!("{host}: BIRD has no BGP session {}", row.protocol)),
                Some(up) if *up != want => out.push(format!(
                    "{host}: BGP session {} is {}; the configuration implies {}",
                    row.protocol,
                    state(*up),
                    state(want)
                )),
                Some(_) => {}
            }
        }
        let want = learned.get(host.as_str()).cloned().unwrap_or_default();
        let have = view.bgp_routes();
        for (dst, via) in &want {
            match have.get(dst) {
                None => out.push(format!("{host} lacks BGP route {dst} via {via}")),
                Some(got) if got != via => out.push(format!(
                    "{host} has BGP route {dst} via {got}, not via {via}"
                )),
                Some(_) => {}
            }
        }
        for (dst, via) in have.iter().filter(|(dst, _)| !want.contains_key(*dst)) {
            out.push(format!(
                "{host} has BGP route {dst} via {via} the datastore does not imply"
            ));
        }
    }
    out
}

/// `filter/v4`, as `Change` names tables.
fn table_label(id: TableId) -> String {
    let family = match id.family {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    };
    format!("{}/{family}", id.table.name())
}

/// The chains and hooks `host` holds other than `want`, e.g. `host1: chain filter/v4
/// cali-tw-cali1234 is not what the datastore implies`.
fn table_differences(
    host: &str,
    want: &BTreeMap<TableId, TableState>,
    have: &BTreeMap<TableId, TableState>,
) -> Vec<String> {
    let empty = TableState::default();
    let ids: std::collections::BTreeSet<&TableId> = want.keys().chain(have.keys()).collect();
    let mut out = Vec::new();
    for id in ids {
        let (w, h) = (
            want.get(id).unwrap_or(&empty),
            have.get(id).unwrap_or(&empty),
        );
        let label = table_label(*id);
        let names: std::collections::BTreeSet<&String> =
            w.chains.keys().chain(h.chains.keys()).collect();
        for name in names {
            let what = match (w.chains.get(name), h.chains.get(name)) {
                (Some(_), None) => "is missing",
                (None, Some(_)) => "is not implied by the datastore",
                (Some(a), Some(b)) if a != b => "is not what the datastore implies",
                _ => continue,
            };
            out.push(format!("{host}: chain {label} {name} {what}"));
        }
        if w.hooks != h.hooks {
            out.push(format!(
                "{host}: hooks of {label} are {:?}, not {:?}",
                h.hooks, w.hooks
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, via: Option<&str>, proto: &str) -> KernelRoute {
        KernelRoute {
            dst: dst.parse().unwrap(),
            via: via.map(|v| v.parse().unwrap()),
            proto: proto.into(),
        }
    }

    #[test]
    fn ip_route_lines_parse() {
        let text = "default via 172.31.250.254 dev eth0\n\
                    172.31.250.0/24 dev eth0 proto kernel scope link src 172.31.250.1\n\
                    192.168.1.1 dev cali0123 proto 80 scope link\n\
                    192.168.1.2 via 172.31.250.2 dev eth0 proto bird metric 32\n\
                    blackhole 192.168.1.0/26 proto 80\n\
                    fd5e::/64 dev eth0 proto kernel metric 256 pref medium\n\
                    garbage\n";
        assert_eq!(
            parse_routes(text),
            vec![
                route("0.0.0.0/0", Some("172.31.250.254"), "boot"),
                route("172.31.250.0/24", None, "kernel"),
                route("192.168.1.1/32", None, "80"),
                route("192.168.1.2/32", Some("172.31.250.2"), "bird"),
                route("192.168.1.0/26", None, "80"),
                route("fd5e::/64", None, "kernel"),
            ]
        );
    }

    /// Two registered hosts with the mesh on (the datastore's defaults) and one workload each.
    fn two_hosts(mesh: bool) -> (ClusterState, BTreeMap<String, HostView>) {
        let mut state = ClusterState::default();
        for (host, ip) in [("h1", "172.31.250.1"), ("h2", "172.31.250.2")] {
            state.apply(
                &format!("/calico/bgp/v1/host/{host}/ip_addr_v4"),
                Some(ip.as_bytes()),
            );
        }
        state.apply(
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            Some(br#"{"cidr": "192.168.0.0/16"}"#),
        );
        state.apply(
            "/calico/bgp/v1/global/node_mesh",
            Some(if mesh {
                br#"{"enabled": true}"#
            } else {
                br#"{"enabled": false}"#
            }),
        );
        let mut views = BTreeMap::new();
        for (host, local) in [("h1", "192.168.1.1/32"), ("h2", "192.168.1.2/32")] {
            let (v4, _) = bird_configs(&state, host);
            views.insert(
                host.to_string(),
                HostView {
                    running: true,
                    routes: vec![
                        route("172.31.250.0/24", None, "kernel"),
                        route(local, None, "80"),
                    ],
                    bird_files: [v4.map(|c| render_bird(&c, false)), None],
                    tables: compute(&state, host).tables,
                    sessions: BTreeMap::new(),
                },
            );
        }
        (state, views)
    }

    #[test]
    fn a_mesh_implies_each_others_routes_and_a_missing_one_is_named() {
        let (state, mut views) = two_hosts(true);
        let diff = differences(&state, &views);
        assert!(
            diff.contains(&"h1 lacks BGP route 192.168.1.2/32 via 172.31.250.2".to_string()),
            "{diff:?}"
        );
        assert!(
            diff.contains(&"h1: BIRD has no BGP session Mesh_172_31_250_2".to_string()),
            "{diff:?}"
        );
        views
            .get_mut("h1")
            .unwrap()
            .sessions
            .insert("Mesh_172_31_250_2".into(), false);
        assert!(
            differences(&state, &views).contains(
                &"h1: BGP session Mesh_172_31_250_2 is down; the configuration implies established"
                    .to_string()
            ),
            "{diff:?}"
        );
        for (host, peer) in [("h1", "Mesh_172_31_250_2"), ("h2", "Mesh_172_31_250_1")] {
            let view = views.get_mut(host).unwrap();
            view.sessions.insert(peer.into(), true);
        }
        for (host, dst, via) in [
            ("h1", "192.168.1.2/32", "172.31.250.2"),
            ("h2", "192.168.1.1/32", "172.31.250.1"),
        ] {
            let view = views.get_mut(host).unwrap();
            view.routes.push(route(dst, Some(via), "bird"));
        }
        assert_eq!(differences(&state, &views), Vec::<String>::new());
    }

    #[test]
    fn without_the_mesh_no_route_is_implied_and_a_stale_one_is_named() {
        let (state, mut views) = two_hosts(false);
        assert_eq!(differences(&state, &views), Vec::<String>::new());
        views.get_mut("h2").unwrap().routes.push(route(
            "192.168.1.1/32",
            Some("172.31.250.1"),
            "bird",
        ));
        assert_eq!(
            differences(&state, &views),
            vec!["h2 has BGP route 192.168.1.1/32 via 172.31.250.1 the datastore does not imply"]
        );
        views.get_mut("h1").unwrap().bird_files[0] = Some("stale".into());
        let diff = differences(&state, &views);
        assert!(
            diff.contains(&"h1: bird.cfg is not the configuration the datastore implies".into()),
            "{diff:?}"
        );
    }

    #[test]
    fn chains_other_than_the_computed_ones_are_named() {
        let (state, mut views) = two_hosts(true);
        let h1 = views.get_mut("h1").unwrap();
        let (id, table) = h1
            .tables
            .iter_mut()
            .find(|(_, t)| !t.chains.is_empty())
            .unwrap();
        let (id, name) = (*id, table.chains.keys().next().unwrap().clone());
        table.chains.get_mut(&name).unwrap().rules.clear();
        let diff = differences(&state, &views);
        let want = format!(
            "h1: chain {} {name} is not what the datastore implies",
            table_label(id)
        );
        assert!(diff.contains(&want), "{diff:?}");
    }
}
