//! The policy compiler: `compute(&ClusterState, host) -> DesiredState`, Felix 1.2's dataplane
//! with the `cali-` names of Calico v2.
//!
//! - [`config`]: the per-host Felix settings compute depends on (`InterfacePrefix`, ...).
//! - [`names`]: chain and ipset names, shortened to the kernel's limits.
//! - [`filter`]: the global `cali-FORWARD` / `cali-INPUT` / `cali-OUTPUT` chains and the
//!   failsafe chains.
//! - [`dispatch`]: `cali-from-wl-dispatch` / `cali-to-wl-dispatch`.
//! - [`endpoint`]: per-endpoint `cali-fw-` / `cali-tw-` chains and their routes and sysctls.
//! - [`profile`]: profile rules translated to `cali-pri-` / `cali-pro-` chains.
//! - [`policy`]: selector policies: which apply to an endpoint, their `cali-pi-` / `cali-po-`
//!   chains, and the members of rule selectors' sets.
//! - [`host_endpoint`]: host endpoints' `cali-fh-` / `cali-th-` chains and their dispatch.
//! - [`ipsets`]: tag sets and their members.
//! - [`nat`]: NAT-outgoing (`cali-POSTROUTING`) and the IPIP host set.
//! - [`bird`]: the BGP configuration of BIRD and BIRD6.
//! - [`overlay`]: VXLAN and IPIP tunnel devices and the routes through them.
//!
//! Every piece is a function of a small part of the state, so the incremental
//! [`crate::calc::Calculator`] can rebuild exactly the pieces an update touches and must agree
//! with [`compute`] (the property tests check that it does).

pub mod bird;
pub mod config;
pub mod dispatch;
pub mod endpoint;
pub mod filter;
pub mod host_endpoint;
pub mod ipsets;
pub mod names;
pub mod nat;
pub mod overlay;
pub mod policy;
pub mod profile;

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::ClusterState;
use crate::desired::{DesiredState, TableId, TableState};
use crate::iptables::{Chain, IpFamily, Table};
use crate::model::{EndpointId, EndpointState, PolicyType, WorkloadEndpoint};

pub use config::{EndpointToHostAction, HostConfig};

/// The one mark bit of the profile protocol: a profile chain sets it when it accepts a packet.
pub const MARK_ACCEPT: u32 = 0x100_0000;

/// Both families, in table order.
pub const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

/// The filter table of a family.
pub fn filter_table(family: IpFamily) -> TableId {
    TableId {
        family,
        table: Table::Filter,
    }
}

/// The v4 nat table (there is no IPv6 NAT-outgoing, as in the original).
pub const NAT_V4: TableId = TableId {
    family: IpFamily::V4,
    table: Table::Nat,
};

/// The local endpoint owning each interface: the smallest id when (wrongly) several endpoints
/// of this host name the same interface, so the choice is deterministic.
pub fn local_interfaces<'a>(
    state: &'a ClusterState,
    host: &'a str,
) -> BTreeMap<&'a str, (&'a EndpointId, &'a WorkloadEndpoint)> {
    let mut out = BTreeMap::new();
    for (id, ep) in local_endpoints(state, host) {
        out.entry(ep.name.as_str()).or_insert((id, ep));
    }
    out
}

/// The endpoints of `host`, in id order.
pub fn local_endpoints<'a>(
    state: &'a ClusterState,
    host: &'a str,
) -> impl Iterator<Item = (&'a EndpointId, &'a WorkloadEndpoint)> + 'a {
    state
        .endpoints
        .iter()
        .filter(move |(id, _)| id.host == host)
        .map(|(id, ep)| (&**id, &**ep))
}

/// Adds chains to a table, keyed by name.
fn insert_chains(table: &mut TableState, chains: impl IntoIterator<Item = Chain>) {
    for chain in chains {
        table.chains.insert(chain.name.clone(), chain);
    }
}

/// Everything `host`'s kernel and BIRD should hold for the given cluster state.
///
/// Only endpoints of `host` get chains, routes and sysctls; endpoints of every host feed the
/// tag ipsets. Profiles get chains only when an active local endpoint uses them.
pub fn compute(state: &ClusterState, host: &str) -> DesiredState {
    let cfg = HostConfig::resolve(state, host);
    let mut desired = DesiredState::default();
    let ifaces = local_interfaces(state, host);

    let used_profiles: BTreeSet<&str> = local_endpoints(state, host)
        .filter(|(_, ep)| ep.state == EndpointState::Active)
        .flat_map(|(_, ep)| ep.profile_ids.iter().map(String::as_str))
        .collect();

    let ordered = policy::ordered_policies(state);
    let iface_policies: BTreeMap<&str, policy::EndpointPolicies> = ifaces
        .iter()
        .map(|(iface, (_, ep))| (*iface, policy::endpoint_policies(state, &ordered, ep)))
        .collect();
    let mut used_policies: BTreeSet<&str> = iface_policies
        .values()
        .flat_map(policy::EndpointPolicies::names)
        .collect();
    let mut used_profiles = used_profiles;
    for (_, hep) in host_endpoint::local_host_endpoints(state, host) {
        used_profiles.extend(hep.profile_ids.iter().map(String::as_str));
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            for name in host_endpoint::host_endpoint_policies(state, &ordered, hep, direction) {
                if let Some((name, _)) = state.policies.get_key_value(&name) {
                    used_policies.insert(name);
                }
            }
        }
    }

    let global = GlobalParts::compute(state, host, &cfg);
    let mut referenced_tags: BTreeMap<IpFamily, BTreeSet<String>> = BTreeMap::new();
    let mut referenced_selectors: BTreeMap<IpFamily, profile::SelectorRefs> = BTreeMap::new();
    for family in FAMILIES {
        let mut table = TableState {
            hooks: filter::hooks(),
            ..TableState::default()
        };
        insert_chains(&mut table, global.filter_chains(family));
        insert_chains(
            &mut table,
            dispatch::dispatch_chains(ifaces.keys().copied()),
        );
        for (iface, (id, ep)) in &ifaces {
            let policies = &iface_policies[iface];
            insert_chains(
                &mut table,
                endpoint::endpoint_chains(iface, id, ep, policies),
            );
        }
        insert_chains(
            &mut table,
            host_endpoint::host_endpoint_chains(state, host, &ordered, family).chains,
        );
        let tags = referenced_tags.entry(family).or_default();
        let selectors = referenced_selectors.entry(family).or_default();
        let compiled = used_profiles
            .iter()
            .map(|p| profile::profile_chains(p, state.profiles.get(*p).map(|p| &**p), family))
            .chain(
                used_policies
                    .iter()
                    .map(|p| policy::policy_chains(p, &state.policies[*p], family)),
            );
        for compiled in compiled {
            insert_chains(&mut table, compiled.chains);
            tags.extend(compiled.tags);
            selectors.extend(compiled.selectors);
        }
        desired.tables.insert(filter_table(family), table);
    }
    let mut nat_table = TableState {
        hooks: nat::hooks(),
        ..TableState::default()
    };
    insert_chains(&mut nat_table, global.nat_chains.iter().cloned());
    desired.tables.insert(NAT_V4, nat_table);

    let members = ipsets::tag_members(state, referenced_tags.values().flatten());
    for (family, tags) in &referenced_tags {
        for tag in tags {
            let set = ipsets::tag_set(
                tag,
                *family,
                members.get(tag.as_str()).into_iter().flatten(),
            );
            desired.ipsets.insert(set.name.clone(), set);
        }
    }
    let mut selector_members = BTreeMap::new();
    for (family, selectors) in &referenced_selectors {
        for (id, sel) in selectors {
            let members = selector_members
                .entry(id.as_str())
                .or_insert_with(|| policy::selector_members(state, sel));
            let set = ipsets::selector_set(id, *family, members.iter());
            desired.ipsets.insert(set.name.clone(), set);
        }
    }
    for set in &global.ipsets {
        desired.ipsets.insert(set.name.clone(), set.clone());
    }

    for (iface, (_, ep)) in &ifaces {
        let plumbing = endpoint::EndpointPlumbing::of(iface, ep);
        desired.routes.extend(plumbing.routes);
        desired.neighbours.extend(plumbing.neighbours);
        desired.proxy_neighbours.extend(plumbing.proxy_neighbours);
        desired.sysctls.extend(plumbing.sysctls);
    }
    desired.sysctls.extend(global.sysctls.clone());
    desired.bird_v4 = global.bird_v4;
    desired.bird_v6 = global.bird_v6;
    desired.overlay = overlay::overlay(state, host, &cfg);
    desired
}

/// The parts of the desired state that depend only on global data (config, pools, hosts, BGP),
/// never on endpoints or profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalParts {
    /// `cali-FORWARD`, `cali-INPUT`, `cali-OUTPUT` (and the failsafe chains) per family.
    pub filter: BTreeMap<IpFamily, Vec<Chain>>,
    /// `cali-POSTROUTING`.
    pub nat_chains: Vec<Chain>,
    /// NAT pool sets and the IPIP host set.
    pub ipsets: Vec<crate::desired::IpSet>,
    /// Host-wide sysctls.
    pub sysctls: BTreeMap<String, String>,
    pub bird_v4: Option<crate::desired::BirdConfig>,
    pub bird_v6: Option<crate::desired::BirdConfig>,
}

impl GlobalParts {
    /// Computes the global parts for `host`.
    pub fn compute(state: &ClusterState, host: &str, cfg: &HostConfig) -> Self {
        let filter = FAMILIES
            .iter()
            .map(|f| (*f, filter::global_chains(cfg, *f)))
            .collect();
        let (nat_chains, mut ipsets) = nat::nat_outgoing(state);
        ipsets.extend(nat::ipip_host_set(state, cfg));
        let (bird_v4, bird_v6) = bird::bird_configs(state, host);
        GlobalParts {
            filter,
            nat_chains,
            ipsets,
            sysctls: endpoint::host_sysctls(),
            bird_v4,
            bird_v6,
        }
    }

    /// The global filter chains of one family.
    pub fn filter_chains(&self, family: IpFamily) -> Vec<Chain> {
        self.filter.get(&family).cloned().unwrap_or_default()
    }
}
