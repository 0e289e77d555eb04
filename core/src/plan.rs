//! `plan(desired, observed)`: the steps that turn what a host holds into what it should hold,
//! in an order that is safe to apply one by one: sets before the chains that match on them,
//! new chains before the rules that jump to them, removals of chains before the sets they used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::{
    BirdConfig, DesiredState, IpSet, Neighbour, ProxyNeighbour, Route, TableId, TableState,
};
use crate::iptables::{Chain, IpFamily};

/// One change to a host's dataplane: a step of a [`Plan`], and what a dataplane reports it
/// did (`ApplyReport::changes` of both the simulated and the Linux dataplane), printed by the
/// one `Display` below, so a dry run, the simulator and the kernel describe the same step in
/// the same words and their reports compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateIpSet(IpSet),
    UpdateIpSet(IpSet),
    CreateChain {
        table: TableId,
        chain: Chain,
    },
    RewriteChain {
        table: TableId,
        chain: Chain,
    },
    /// Put the jump from a kernel chain (`FORWARD`) to ours first in it.
    InsertHook {
        table: TableId,
        builtin: String,
        target: String,
    },
    /// Remove the jump from a kernel chain to ours.
    RemoveHook {
        table: TableId,
        builtin: String,
        target: String,
    },
    DeleteChain {
        table: TableId,
        name: String,
    },
    DeleteIpSet {
        name: String,
    },
    SetSysctl {
        key: String,
        value: String,
    },
    DelNeighbour(Neighbour),
    DelRoute(Route),
    AddNeighbour(Neighbour),
    AddRoute(Route),
    /// Like `ip -6 neigh del proxy <ip> dev <dev>`.
    DelProxyNeighbour(ProxyNeighbour),
    /// Like `ip -6 neigh add proxy <ip> dev <dev>`.
    AddProxyNeighbour(ProxyNeighbour),
    /// Write (`Some`) or remove (`None`) the BIRD config of a family and reload BIRD.
    WriteBirdConfig {
        v6: bool,
        config: Option<BirdConfig>,
    },
    /// Create or update a tunnel device (its kind, MTU and only IPv4 address), and set it up.
    SetTunnel(crate::tunnel::TunnelDevice),
    /// Delete a tunnel device (and so everything through it).
    DeleteTunnel {
        name: String,
    },
    AddTunnelRoute(crate::tunnel::TunnelRoute),
    DelTunnelRoute(crate::tunnel::TunnelRoute),
    /// A permanent ARP entry for a remote VTEP on a tunnel device.
    AddTunnelNeighbour(Neighbour),
    DelTunnelNeighbour(Neighbour),
    AddFdb(crate::tunnel::FdbEntry),
    DelFdb(crate::tunnel::FdbEntry),
    /// Start the BIRD of a family that should run with the config it has but does not run
    /// (a repair: [`plan`] never emits it; a written config implies the start).
    StartBird {
        v6: bool,
    },
}

/// The ordered steps from observed to desired.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

fn table_name(t: &TableId) -> String {
    let family = match t.family {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    };
    format!("{}/{family}", t.table.name())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateIpSet(s) => {
                write!(f, "create ipset {} ({} members)", s.name, s.members.len())
            }
            Change::UpdateIpSet(s) => {
                write!(f, "update ipset {} ({} members)", s.name, s.members.len())
            }
            Change::CreateChain { table, chain } => {
                write!(f, "create chain {} {}", table_name(table), chain.name)
            }
            Change::RewriteChain { table, chain } => {
                write!(f, "rewrite chain {} {}", table_name(table), chain.name)
            }
            Change::InsertHook {
                table,
                builtin,
                target,
            } => {
                write!(f, "insert hook {} {builtin} -> {target}", table_name(table))
            }
            Change::RemoveHook {
                table,
                builtin,
                target,
            } => {
                write!(f, "remove hook {} {builtin} -> {target}", table_name(table))
            }
            Change::DeleteChain { table, name } => {
                write!(f, "delete chain {} {name}", table_name(table))
            }
            Change::DeleteIpSet { name } => write!(f, "delete ipset {name}"),
            Change::SetSysctl { key, value } => write!(f, "set sysctl {key}={value}"),
            Change::DelNeighbour(n) => write!(f, "del neighbour {} dev {}", n.ip, n.dev),
            Change::DelRoute(r) => write!(f, "del route {} dev {}", r.dst, r.dev),
            Change::AddNeighbour(n) => {
                write!(f, "add neighbour {} lladdr {} dev {}", n.ip, n.mac, n.dev)
            }
            Change::AddRoute(r) => write!(f, "add route {} dev {}", r.dst, r.dev),
            Change::DelProxyNeighbour(n) => {
                write!(f, "del proxy neighbour {} dev {}", n.ip, n.dev)
            }
            Change::AddProxyNeighbour(n) => {
                write!(f, "add proxy neighbour {} dev {}", n.ip, n.dev)
            }
            Change::WriteBirdConfig { v6, config } => {
                let which = if *v6 { "bird6" } else { "bird" };
                match config {
                    Some(_) => write!(f, "write {which} config"),
                    None => write!(f, "remove {which} config"),
                }
            }
            Change::StartBird { v6 } => f.write_str(if *v6 { "start bird6" } else { "start bird" }),
            Change::SetTunnel(d) => write!(f, "set tunnel {d}"),
            Change::DeleteTunnel { name } => write!(f, "delete tunnel {name}"),
            Change::AddTunnelRoute(r) => write!(f, "add route {r}"),
            Change::DelTunnelRoute(r) => write!(f, "del route {r}"),
            Change::AddTunnelNeighbour(n) => {
                write!(f, "add neighbour {} lladdr {} dev {}", n.ip, n.mac, n.dev)
            }
            Change::DelTunnelNeighbour(n) => write!(f, "del neighbour {} dev {}", n.ip, n.dev),
            Change::AddFdb(e) => write!(f, "add fdb {e}"),
            Change::DelFdb(e) => write!(f, "del fdb {e}"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The steps that make `observed` equal `desired`. Sysctls the desired state does not name are
/// left alone (there is no "unset" for a sysctl).
pub fn plan(desired: &DesiredState, observed: &DesiredState) -> Plan {
    let mut changes = Vec::new();
    for (name, set) in &desired.ipsets {
        match observed.ipsets.get(name) {
            None => changes.push(Change::CreateIpSet(set.clone())),
            Some(old) if old != set => changes.push(Change::UpdateIpSet(set.clone())),
            Some(_) => {}
        }
    }
    let empty = TableState::default();
    let tables: BTreeSet<TableId> = desired
        .tables
        .keys()
        .chain(observed.tables.keys())
        .copied()
        .collect();
    let pair = |t: &TableId| {
        (
            desired.tables.get(t).unwrap_or(&empty),
            observed.tables.get(t).unwrap_or(&empty),
        )
    };
    for table in &tables {
        let (want, have) = pair(table);
        for (name, chain) in &want.chains {
            if !have.chains.contains_key(name) {
                changes.push(Change::CreateChain {
                    table: *table,
                    chain: chain.clone(),
                });
            }
        }
    }
    for table in &tables {
        let (want, have) = pair(table);
        for (name, chain) in &want.chains {
            if have.chains.get(name).is_some_and(|old| old != chain) {
                changes.push(Change::RewriteChain {
                    table: *table,
                    chain: chain.clone(),
                });
            }
        }
        hook_changes(*table, &want.hooks, &have.hooks, &mut changes);
    }
    for table in &tables {
        let (want, have) = pair(table);
        for name in have.chains.keys() {
            if !want.chains.contains_key(name) {
                changes.push(Change::DeleteChain {
                    table: *table,
                    name: name.clone(),
                });
            }
        }
    }
    for name in observed.ipsets.keys() {
        if !desired.ipsets.contains_key(name) {
            changes.push(Change::DeleteIpSet { name: name.clone() });
        }
    }
    for (key, value) in &desired.sysctls {
        if observed.sysctls.get(key) != Some(value) {
            changes.push(Change::SetSysctl {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    changes.extend(
        observed
            .neighbours
            .difference(&desired.neighbours)
            .cloned()
            .map(Change::DelNeighbour),
    );
    changes.extend(
        observed
            .routes
            .difference(&desired.routes)
            .cloned()
            .map(Change::DelRoute),
    );
    changes.extend(
        desired
            .neighbours
            .difference(&observed.neighbours)
            .cloned()
            .map(Change::AddNeighbour),
    );
    changes.extend(
        desired
            .routes
            .difference(&observed.routes)
            .cloned()
            .map(Change::AddRoute),
    );
    changes.extend(
        observed
            .proxy_neighbours
            .difference(&desired.proxy_neighbours)
            .cloned()
            .map(Change::DelProxyNeighbour),
    );
    changes.extend(
        desired
            .proxy_neighbours
            .difference(&observed.proxy_neighbours)
            .cloned()
            .map(Change::AddProxyNeighbour),
    );
    changes.extend(crate::tunnel::changes(&desired.overlay, &observed.overlay));
    if desired.bird_v4 != observed.bird_v4 {
        changes.push(Change::WriteBirdConfig {
            v6: false,
            config: desired.bird_v4.clone(),
        });
    }
    if desired.bird_v6 != observed.bird_v6 {
        changes.push(Change::WriteBirdConfig {
            v6: true,
            config: desired.bird_v6.clone(),
        });
    }
    Plan { changes }
}

fn hook_changes(
    table: TableId,
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
    changes: &mut Vec<Change>,
) {
    for (builtin, target) in have {
        if want.get(builtin) != Some(target) {
            changes.push(Change::RemoveHook {
                table,
                builtin: builtin.clone(),
                target: target.clone(),
            });
        }
    }
    for (builtin, target) in want {
        if have.get(builtin) != Some(target) {
            changes.push(Change::InsertHook {
                table,
                builtin: builtin.clone(),
                target: target.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterState;
    use crate::compute::compute;

    #[test]
    fn plan_from_nothing_creates_everything_and_to_itself_is_empty() {
        let mut state = ClusterState::default();
        state.apply(
            "/calico/v1/host/h1/workload/docker/w/endpoint/e",
            Some(br#"{"state":"active","name":"cali1234","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["P"],"ipv4_nets":["192.168.1.1/32"]}"#),
        );
        let desired = compute(&state, "h1");
        assert!(plan(&desired, &desired).is_empty());
        let from_scratch = plan(&desired, &DesiredState::default());
        let text = from_scratch.to_string();
        assert!(
            text.contains("create chain filter/v4 cali-tw-cali1234\n"),
            "{text}"
        );
        assert!(
            text.contains("insert hook filter/v6 FORWARD -> cali-FORWARD\n"),
            "{text}"
        );
        assert!(
            text.contains("add route 192.168.1.1/32 dev cali1234\n"),
            "{text}"
        );

        let mut changed = state.clone();
        changed.apply(
            "/calico/v1/host/h1/workload/docker/w/endpoint/e",
            Some(br#"{"state":"active","name":"cali1234","mac":"ee:ee:ee:ee:ee:ee","profile_ids":[],"ipv4_nets":["192.168.1.1/32"]}"#),
        );
        let step = plan(&compute(&changed, "h1"), &desired).to_string();
        assert_eq!(
            step,
            "rewrite chain filter/v4 cali-fw-cali1234\nrewrite chain filter/v4 cali-tw-cali1234\n\
             rewrite chain filter/v6 cali-fw-cali1234\nrewrite chain filter/v6 cali-tw-cali1234\n\
             delete chain filter/v4 cali-pri-P\ndelete chain filter/v4 cali-pro-P\n\
             delete chain filter/v6 cali-pri-P\ndelete chain filter/v6 cali-pro-P\n"
        );
    }
}
