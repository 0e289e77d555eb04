//! `impl Dataplane for SimDataplane`: desired state is rendered with the core renderers and the
//! text parsed back into the kernel, so a rendering bug shows up here as it would on Linux.
//!
//! Order as on a real host: ipsets first (rules may reference them), then the tables, then
//! stale ipsets (only once no rule references them), routes, neighbours, sysctls, BIRD.
//! A failing step (a route to a missing device) does not stop the others; the first error
//! is returned after the rest was applied, and the next apply retries.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use calico_core::desired::{DesiredState, Neighbour, Route, TableId, TableState};
use calico_core::iptables::{Match, Rule};
use calico_core::render::ipset::render_ipsets;
use calico_core::render::iptables::render_table;

use super::ipset::{parse_ipset_restore, restore, IpSetCommand};
use super::kernel::{Kernel, NeighEntry, ROOT_NS};
use super::netfilter::parse::parse_restore;
use super::netfilter::table_label;
use super::route::{KernelRoute, RouteProto};
use super::SimDataplane;
use crate::{ApplyReport, Dataplane, DataplaneError};

#[async_trait]
impl Dataplane for SimDataplane {
    async fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        self.apply_now(desired)
    }

    async fn observe(&mut self) -> Result<DesiredState, DataplaneError> {
        Ok(self.observe_now())
    }
}

impl SimDataplane {
    /// [`Dataplane::apply`] without the async wrapper.
    ///
    /// # Errors
    /// See the module doc.
    pub fn apply_now(&self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        apply_state(&mut self.lock(), desired)
    }

    /// [`Dataplane::observe`] without the async wrapper.
    pub fn observe_now(&self) -> DesiredState {
        observe_state(&self.lock())
    }
}

fn set_references(rule: &Rule) -> impl Iterator<Item = &str> {
    rule.matches.iter().filter_map(|m| match m {
        Match::Set { name, .. } => Some(name.as_str()),
        _ => None,
    })
}

fn apply_state(k: &mut Kernel, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
    let mut changes = Vec::new();
    let mut first_error: Option<DataplaneError> = None;

    // 1. ipsets we want.
    let commands = parse_ipset_restore(&render_ipsets(&desired.ipsets))?;
    let before = k.ipsets.clone();
    restore(&mut k.ipsets, &commands)?;
    for (name, set) in &desired.ipsets {
        match before.get(name) {
            None => changes.push(format!("create ipset {name}")),
            Some(old) if old != set => changes.push(format!("update ipset {name}")),
            Some(_) => {}
        }
    }
    k.owned.ipsets.extend(desired.ipsets.keys().cloned());

    // 2. tables: every table we want or owned before (an unwanted one is emptied).
    let ids: BTreeSet<TableId> = desired
        .tables
        .keys()
        .chain(k.owned.tables.keys())
        .copied()
        .collect();
    let empty = TableState::default();
    for id in ids {
        let state = desired.tables.get(&id).unwrap_or(&empty);
        let text = render_table(id, state);
        let blocks = parse_restore(&text)?;
        for block in &blocks {
            for chain in &block.chains {
                for name in chain.chain.rules.iter().flat_map(set_references) {
                    if !k.ipsets.contains_key(name) {
                        return Err(DataplaneError::Kernel {
                            operation: format!("restoring {}", table_label(id)),
                            reason: format!(
                                "chain {} references missing ipset {name}",
                                chain.chain.name
                            ),
                        });
                    }
                }
            }
        }
        let owned = k.owned.tables.get(&id).cloned().unwrap_or_default();
        for block in &blocks {
            let (changed, now) = k.netfilter.install(id, block, &owned);
            changes.extend(changed);
            if desired.tables.contains_key(&id) {
                k.owned.tables.insert(id, now);
            } else {
                k.owned.tables.remove(&id);
            }
        }
    }

    // 3. ipsets we no longer want, unless a rule still uses them.
    let referenced: BTreeSet<String> = k
        .netfilter
        .tables
        .values()
        .flat_map(|t| t.chains.values())
        .flat_map(|c| c.rules.iter())
        .flat_map(|r| set_references(r).map(str::to_string).collect::<Vec<_>>())
        .collect();
    let stale: Vec<String> = k
        .owned
        .ipsets
        .iter()
        .filter(|n| !desired.ipsets.contains_key(*n))
        .cloned()
        .collect();
    for name in stale {
        if referenced.contains(&name) {
            first_error.get_or_insert(DataplaneError::Kernel {
                operation: format!("destroying ipset {name}"),
                reason: "set is in use by a rule".to_string(),
            });
            continue;
        }
        if k.ipsets.contains_key(&name) {
            let destroy = [(0, IpSetCommand::Destroy { name: name.clone() })];
            restore(&mut k.ipsets, &destroy)?;
            changes.push(format!("destroy ipset {name}"));
        }
        k.owned.ipsets.remove(&name);
    }

    // 4. our routes.
    let current: BTreeMap<_, _> = k
        .ns(ROOT_NS)?
        .routes
        .iter()
        .filter(|r| r.proto == RouteProto::Calico)
        .map(|r| (r.dst, r.clone()))
        .collect();
    let wanted: BTreeSet<_> = desired.routes.iter().map(|r| r.dst.trunc()).collect();
    for dst in current.keys().filter(|d| !wanted.contains(*d)) {
        k.ns_mut(ROOT_NS)?.routes.remove(dst);
        changes.push(format!("delete route {dst}"));
    }
    for Route { dst, dev } in &desired.routes {
        let route = KernelRoute::dev(dst.trunc(), dev, RouteProto::Calico);
        if current.get(&dst.trunc()) == Some(&route) {
            continue;
        }
        match k.route_replace(ROOT_NS, route) {
            Ok(()) => changes.push(format!("replace route {dst} dev {dev}")),
            Err(e) => {
                first_error.get_or_insert(DataplaneError::Kernel {
                    operation: format!("adding route {dst} dev {dev}"),
                    reason: e.to_string(),
                });
            }
        }
    }

    // 5. our static neighbours.
    let stale: Vec<Neighbour> = k
        .owned
        .neighbours
        .difference(&desired.neighbours)
        .cloned()
        .collect();
    for n in stale {
        let space = k.ns_mut(ROOT_NS)?;
        let key = (n.ip, n.dev.clone());
        if space.neighbours.get(&key).is_some_and(|e| e.permanent) {
            space.neighbours.remove(&key);
            changes.push(format!("delete neighbour {} dev {}", n.ip, n.dev));
        }
        k.owned.neighbours.remove(&n);
    }
    for n in &desired.neighbours {
        let entry = NeighEntry {
            mac: n.mac,
            permanent: true,
        };
        if k.link(ROOT_NS, &n.dev).is_none() {
            first_error.get_or_insert(DataplaneError::InterfaceNotFound {
                iface: n.dev.clone(),
            });
            continue;
        }
        let space = k.ns_mut(ROOT_NS)?;
        let key = (n.ip, n.dev.clone());
        if space.neighbours.get(&key) != Some(&entry) {
            space.neighbours.insert(key, entry);
            changes.push(format!(
                "replace neighbour {} lladdr {} dev {}",
                n.ip, n.mac, n.dev
            ));
        }
        k.owned.neighbours.insert(n.clone());
    }

    // 6. sysctls.
    for (key, value) in &desired.sysctls {
        if k.sysctl_get(key).as_deref() == Some(value.as_str()) {
            k.owned.sysctls.insert(key.clone());
            continue;
        }
        match k.sysctl_set(key, value) {
            Ok(()) => {
                changes.push(format!("sysctl {key}={value}"));
                k.owned.sysctls.insert(key.clone());
            }
            Err(e) => {
                first_error.get_or_insert(DataplaneError::Kernel {
                    operation: format!("setting sysctl {key}"),
                    reason: e.to_string(),
                });
            }
        }
    }
    k.owned
        .sysctls
        .retain(|key| desired.sysctls.contains_key(key));

    // 7. BIRD.
    if k.bird_v4 != desired.bird_v4 {
        k.bird_v4 = desired.bird_v4.clone();
        changes.push("write BIRD config (v4)".to_string());
    }
    if k.bird_v6 != desired.bird_v6 {
        k.bird_v6 = desired.bird_v6.clone();
        changes.push("write BIRD config (v6)".to_string());
    }

    match first_error {
        Some(e) => Err(e),
        None => Ok(ApplyReport { changes }),
    }
}

fn observe_state(k: &Kernel) -> DesiredState {
    let tables = k
        .owned
        .tables
        .iter()
        .map(|(id, names)| {
            let state = TableState {
                chains: k.netfilter.chains_named(*id, names),
                hooks: k.netfilter.hooks(*id, names),
            };
            (*id, state)
        })
        .collect();
    let ipsets = k
        .owned
        .ipsets
        .iter()
        .filter_map(|n| k.ipsets.get(n).map(|s| (n.clone(), s.clone())))
        .collect();
    let (routes, neighbours) = match k.ns(ROOT_NS) {
        Ok(space) => (
            space
                .routes
                .iter()
                .filter(|r| r.proto == RouteProto::Calico)
                .filter_map(|r| {
                    r.dev.as_ref().map(|dev| Route {
                        dst: r.dst,
                        dev: dev.clone(),
                    })
                })
                .collect(),
            space
                .neighbours
                .iter()
                .filter(|(_, e)| e.permanent)
                .map(|((ip, dev), e)| Neighbour {
                    ip: *ip,
                    mac: e.mac,
                    dev: dev.clone(),
                })
                .collect(),
        ),
        Err(_) => Default::default(),
    };
    let sysctls = k
        .owned
        .sysctls
        .iter()
        .filter_map(|key| k.sysctl_get(key).map(|v| (key.clone(), v)))
        .collect();
    DesiredState {
        tables,
        ipsets,
        routes,
        neighbours,
        sysctls,
        bird_v4: k.bird_v4.clone(),
        bird_v6: k.bird_v6.clone(),
    }
}
