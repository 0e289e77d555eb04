//! The incremental calculator: keeps a [`ClusterState`], indexes over it and the current
//! [`DesiredState`], and turns each raw datastore update into a [`Delta`] by rebuilding only
//! the pieces the update touches:
//!
//! - an endpoint: its interface's two chains per family, routes, neighbours and sysctls; the
//!   dispatch chains only when the set of local interfaces changed; the ipsets of the tags it
//!   gains or loses; the chains of profiles that become used or unused;
//! - a profile's rules: its chains (if used) and the sets of tags it starts or stops referencing;
//! - a profile's tags: the membership of the tags gained or lost, for the endpoints using it;
//! - labels (an endpoint's, a profile's labels or tags): the members of the referenced rule
//!   selectors the endpoint enters or leaves, and the chains of the local endpoints whose
//!   applicable policies that may change;
//! - a policy: its chains (if a local endpoint uses it), the selector sets it starts or stops
//!   referencing, and, when its selector, order or types changed, the chains of the local
//!   endpoints it applied to or now matches;
//! - a host endpoint: the members of the referenced selectors it matches; on this host, its
//!   chains (all host endpoint chains are rebuilt: a host has few) and `cali-INPUT`;
//! - anything global (config, pools, hosts, BGP): the global chains, NAT, BIRD and host sysctls;
//! - the overlay (tunnel devices and routes) on anything global, and on any endpoint change
//!   while an overlay pool exists (remote endpoints' borrowed addresses are routed through it).
//!
//! Invariant (checked by the property tests): after any sequence of updates,
//! `desired() == compute(state(), host)`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ipnet::IpNet;

use crate::cluster::{Applied, ClusterState};
use crate::codec::{decode, Value};
use crate::compute::endpoint::{endpoint_chains, EndpointPlumbing};
use crate::compute::host_endpoint;
use crate::compute::names::{
    from_wl_chain, policy_inbound_chain, policy_outbound_chain, profile_inbound_chain,
    profile_outbound_chain, selector_set as selector_set_name, tag_set as tag_set_name,
    to_wl_chain,
};
use crate::compute::policy::{self, EndpointPolicies};
use crate::compute::profile::SelectorRefs;
use crate::compute::{
    compute, dispatch, filter_table, ipsets, overlay, profile, GlobalParts, HostConfig, FAMILIES,
    NAT_V4,
};
use crate::desired::{BirdConfig, DesiredState, IpSet, Neighbour, ProxyNeighbour, Route, TableId};
use crate::iptables::{Chain, IpFamily};
use crate::keys::Key;
use crate::model::{EndpointId, EndpointState, HostEndpoint, Policy, WorkloadEndpoint};
use crate::selector::Selector;
use crate::shared::{SharedDecodes, SharedListing};
use crate::ModelError;

/// Records nothing here depends on (`ClusterState::depends_on` says no to their keys):
/// IPAM blocks and handles, Felix status. A snapshot holds one handle per endpoint, so they
/// are skipped before parsing.
const IGNORED_PREFIXES: [&str; 3] = [
    "/calico/ipam/v2/assignment/",
    "/calico/ipam/v2/handle/",
    "/calico/felix/",
];

/// How many unreferenced selectors the calculator keeps members for (each costs one
/// evaluation per endpoint update).
const MAX_RETIRED_SELECTORS: usize = 256;

/// Where profile tags and rules live.
const PROFILE_PREFIX: &str = "/calico/v1/policy/profile/";

/// What one update (or batch) changed in the desired state. `Some` is the new value, `None` a
/// removal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    pub chains: BTreeMap<(TableId, String), Option<Chain>>,
    pub ipsets: BTreeMap<String, Option<IpSet>>,
    pub routes_added: BTreeSet<Route>,
    pub routes_removed: BTreeSet<Route>,
    pub neighbours_added: BTreeSet<Neighbour>,
    pub neighbours_removed: BTreeSet<Neighbour>,
    pub proxy_neighbours_added: BTreeSet<ProxyNeighbour>,
    pub proxy_neighbours_removed: BTreeSet<ProxyNeighbour>,
    pub sysctls: BTreeMap<String, Option<String>>,
    /// `Some(new)` when the v4 BIRD config changed.
    pub bird_v4: Option<Option<BirdConfig>>,
    /// `Some(new)` when the v6 BIRD config changed.
    pub bird_v6: Option<Option<BirdConfig>>,
    /// Whether the overlay (tunnel devices, routes, ARP and FDB entries) changed.
    pub overlay: bool,
    /// Records that failed to decode, by raw key: each now counts as absent (Felix's rule),
    /// which the caller should say out loud. Not a change of the desired state, so not
    /// counted by [`Delta::len`].
    pub invalid: BTreeMap<String, ModelError>,
}

impl Delta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of changed items (chains, sets, routes, neighbours, sysctls, BIRD configs).
    pub fn len(&self) -> usize {
        self.chains.len()
            + self.ipsets.len()
            + self.routes_added.len()
            + self.routes_removed.len()
            + self.neighbours_added.len()
            + self.neighbours_removed.len()
            + self.proxy_neighbours_added.len()
            + self.proxy_neighbours_removed.len()
            + self.sysctls.len()
            + usize::from(self.bird_v4.is_some())
            + usize::from(self.bird_v6.is_some())
            + usize::from(self.overlay)
    }
}

/// What the pending updates touched, rebuilt at the next flush.
#[derive(Debug, Default)]
struct Dirty {
    /// Hosts whose records changed (to share them, when decodes are shared).
    hosts: BTreeSet<String>,
    ifaces: BTreeSet<String>,
    dispatch: bool,
    profiles: BTreeSet<String>,
    tags: BTreeSet<String>,
    /// Policies whose chains may change.
    policies: BTreeSet<String>,
    /// Selector ids whose members changed.
    selectors: BTreeSet<String>,
    /// This host's host endpoint chains may change.
    host_endpoints: bool,
    global: bool,
    /// Some endpoint changed: the overlay's routes may change.
    endpoints: bool,
    invalid: BTreeMap<String, ModelError>,
}

/// An endpoint record as the state holds it.
type SharedEndpoint = (Arc<EndpointId>, Arc<WorkloadEndpoint>);

/// What loading a [`SharedListing`] into a pristine calculator builds alike on every host:
/// built once per listing (by a calculator for no host, to which every endpoint is remote)
/// and cloned by each loader, which then indexes only its own endpoints.
#[derive(Debug)]
pub(crate) struct ListingBase {
    state: ClusterState,
    profile_endpoints: SharedIndex<BTreeSet<Arc<EndpointId>>>,
    tag_members: SharedIndex<BTreeMap<IpNet, usize>>,
    /// The undecodable records, by raw key.
    invalid: BTreeMap<String, ModelError>,
    /// Hosts whose records a loader interns through its own [`SharedDecodes`].
    hosts: BTreeSet<String>,
    /// Whether the global parts (and the overlay) must be computed.
    global: bool,
    /// Whether the listing held endpoints (the overlay's routes may change).
    endpoints: bool,
    /// The endpoints of each host, in id order.
    by_host: HashMap<String, Vec<SharedEndpoint>>,
}

impl ListingBase {
    pub(crate) fn build(listing: &SharedListing) -> Self {
        // No endpoint id has an empty host. A table of its own makes the calculator note the
        // host records it changed, as a sharing loader would.
        let mut calc = Calculator::with_shared("", SharedDecodes::new());
        calc.ingest_listing(listing);
        let mut by_host: HashMap<String, Vec<_>> = HashMap::new();
        for (id, ep) in calc.state.endpoints.iter() {
            by_host
                .entry(id.host.clone())
                .or_default()
                .push((Arc::clone(id), Arc::clone(ep)));
        }
        ListingBase {
            state: calc.state,
            profile_endpoints: calc.profile_endpoints,
            tag_members: calc.tag_members,
            invalid: calc.dirty.invalid,
            hosts: calc.dirty.hosts,
            global: calc.dirty.global,
            endpoints: calc.dirty.endpoints,
            by_host,
        }
    }
}

/// Incremental `compute` for one host.
#[derive(Debug)]
pub struct Calculator {
    host: String,
    state: ClusterState,
    desired: DesiredState,
    global: GlobalParts,
    /// Local endpoints per interface; the smallest id owns the interface's chains.
    ifaces: BTreeMap<String, BTreeSet<Arc<EndpointId>>>,
    /// Active local endpoints per profile: the profile has chains iff this is non-empty.
    profile_users: BTreeMap<String, BTreeSet<Arc<EndpointId>>>,
    /// Endpoints of every host per profile, for tag membership (the ids are the state's own
    /// `Arc`s, so this index costs a pointer per endpoint).
    profile_endpoints: SharedIndex<BTreeSet<Arc<EndpointId>>>,
    /// Tags referenced by each compiled profile or policy, per family.
    profile_tags: BTreeMap<(IpFamily, Owner), BTreeSet<String>>,
    /// Compiled profiles and policies referencing each tag, per family: the set exists iff
    /// non-empty.
    tag_refs: BTreeMap<(IpFamily, String), BTreeSet<Owner>>,
    /// Selector ids referenced by each compiled profile or policy, per family.
    owner_selectors: BTreeMap<(IpFamily, Owner), BTreeSet<String>>,
    /// Compiled profiles and policies referencing each selector id, per family: the set
    /// exists iff non-empty.
    selector_refs: BTreeMap<(IpFamily, String), BTreeSet<Owner>>,
    /// Every referenced selector by id, with its members counted once per endpoint (or host
    /// endpoint) contributing them; also the retired ones below.
    selectors: BTreeMap<String, (Selector, BTreeMap<IpNet, usize>)>,
    /// Selectors no longer referenced whose members are still kept up to date, so a policy
    /// that comes back into use (an endpoint relabelled back and forth) needs no scan of the
    /// cluster. At most [`MAX_RETIRED_SELECTORS`]; beyond that they are all forgotten.
    retired: BTreeSet<String>,
    /// The policies each local interface's chains run, as last built.
    iface_policies: BTreeMap<String, EndpointPolicies>,
    /// Local interfaces per policy: the policy has chains iff this is non-empty (or a host
    /// endpoint uses it).
    policy_users: BTreeMap<String, BTreeSet<String>>,
    /// Policies and profiles this host's host endpoint chains jump to.
    hep_policies: BTreeSet<String>,
    hep_profiles: BTreeSet<String>,
    /// Host endpoint chains built, per family.
    hep_chains: BTreeMap<IpFamily, BTreeSet<String>>,
    /// Addresses per tag, counted once per endpoint contributing them.
    tag_members: SharedIndex<BTreeMap<IpNet, usize>>,
    /// Plumbing installed per local interface.
    plumbing: BTreeMap<String, EndpointPlumbing>,
    dirty: Dirty,
    /// Where endpoint records are decoded, shared with other calculators; `None` decodes
    /// privately.
    shared: Option<SharedDecodes>,
}

impl Calculator {
    /// A calculator for `host`, starting from the empty cluster.
    pub fn new(host: &str) -> Self {
        let state = ClusterState::default();
        let cfg = HostConfig::resolve(&state, host);
        Calculator {
            host: host.to_string(),
            desired: compute(&state, host),
            global: GlobalParts::compute(&state, host, &cfg),
            state,
            ifaces: BTreeMap::new(),
            profile_users: BTreeMap::new(),
            profile_endpoints: SharedIndex::default(),
            profile_tags: BTreeMap::new(),
            tag_refs: BTreeMap::new(),
            owner_selectors: BTreeMap::new(),
            selector_refs: BTreeMap::new(),
            selectors: BTreeMap::new(),
            retired: BTreeSet::new(),
            iface_policies: BTreeMap::new(),
            policy_users: BTreeMap::new(),
            hep_policies: BTreeSet::new(),
            hep_profiles: BTreeSet::new(),
            hep_chains: BTreeMap::new(),
            tag_members: SharedIndex::default(),
            plumbing: BTreeMap::new(),
            dirty: Dirty::default(),
            shared: None,
        }
    }

    /// A calculator for `host` that decodes endpoint records through `shared`, so that many
    /// calculators in one process (the simulator's hosts) hold one copy of each record.
    pub fn with_shared(host: &str, shared: SharedDecodes) -> Self {
        Calculator {
            shared: Some(shared),
            ..Calculator::new(host)
        }
    }

    /// How many endpoints this host has (from the interface index: no scan of the cluster).
    pub fn local_endpoints(&self) -> usize {
        self.ifaces.values().map(BTreeSet::len).sum()
    }

    /// The desired state after every update so far.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// The cluster state after every update so far.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Applies one raw update (`None` = deleted) and returns what changed.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> Delta {
        self.ingest(key, value);
        self.flush()
    }

    /// Applies a batch of raw updates and returns what changed over the whole batch.
    pub fn apply_batch(
        &mut self,
        updates: impl IntoIterator<Item = (String, Option<Vec<u8>>)>,
    ) -> Delta {
        // Profiles first: a profile's tags arriving after its endpoints (as in a snapshot,
        // listed in key order) would re-index every one of them. Each key keeps the order of
        // its own updates, and the outcome depends only on the last value of each key.
        let (profiles, rest): (Vec<_>, Vec<_>) = updates
            .into_iter()
            .partition(|(key, _)| key.starts_with(PROFILE_PREFIX));
        for (key, value) in profiles.into_iter().chain(rest) {
            self.ingest(&key, value.as_deref());
        }
        self.flush()
    }

    /// Loads a listing shared with other calculators (a snapshot; puts only) and returns
    /// what changed. The same as [`Calculator::apply_batch`] of its records, without decoding
    /// or looking up the endpoints it carries decoded.
    ///
    /// Into a calculator without endpoints (a fresh agent's), the endpoints are bulk-loaded:
    /// the state's map and the per-profile index are built from sorted runs instead of one
    /// tree insertion per endpoint, which dominates a simulated cluster's start.
    pub fn load_listing(&mut self, listing: &SharedListing) -> Delta {
        if self.is_pristine() {
            self.take_base(listing.base());
        } else {
            self.ingest_listing(listing);
        }
        self.flush()
    }

    /// Whether nothing was ever loaded into this calculator (or all of it was deleted again,
    /// with no retired selector left to keep up to date): its indexes are all empty.
    fn is_pristine(&self) -> bool {
        self.selectors.is_empty() && self.state == ClusterState::default()
    }

    /// Takes what loading the listing builds for every host alike (the state and the
    /// cluster-wide indexes, computed once per listing), then indexes this host's own
    /// endpoints and host endpoints: the same as [`Calculator::ingest_listing`] into a
    /// pristine calculator, at the cost of this host's share of the cluster.
    ///
    /// Only profiles used here are rebuilt, and no tag or selector is marked: in a pristine
    /// calculator, rebuilding anything unused removes chains and sets that do not exist, and
    /// the rebuilt profiles and policies mark the tags and selectors they reference.
    fn take_base(&mut self, base: &ListingBase) {
        self.state = base.state.clone();
        self.profile_endpoints = base.profile_endpoints.clone();
        self.tag_members = base.tag_members.clone();
        self.dirty.invalid = base.invalid.clone();
        self.dirty.hosts = base.hosts.clone();
        self.dirty.global = base.global;
        self.dirty.endpoints = base.endpoints;
        if self.has_local_host_endpoints() {
            // `cali-INPUT` hooks host endpoints only on a host that has some.
            self.dirty.host_endpoints = true;
            self.dirty.global = true;
        }
        if let Some(local) = base.by_host.get(&self.host) {
            for (id, ep) in local {
                self.local_endpoint_changed(id, None, Some(ep));
            }
        }
    }

    /// Ingests every record of `listing` (without flushing).
    fn ingest_listing(&mut self, listing: &SharedListing) {
        let bulk = self.state.endpoints.is_empty();
        // Into a state without hosts, the listing's host records land as the host table the
        // listing built from them once (the same `ClusterState` code over the same records),
        // instead of one copy-on-write per record and per loader.
        let shared_hosts = self.state.hosts.is_empty();
        if shared_hosts && !listing.hosts().is_empty() {
            self.state.hosts = listing.hosts().clone();
            self.dirty.global = true;
        }
        let mut decoded = Vec::new();
        for record in listing.records() {
            match &record.endpoint {
                Some((id, ep)) if bulk => decoded.push((Arc::clone(id), Arc::clone(ep))),
                Some((id, ep)) => self.set_endpoint(Arc::clone(id), Arc::clone(ep)),
                None => match &record.decoded {
                    Some((key, Ok(_))) if shared_hosts && host_record_of(key).is_some() => {}
                    Some((key, decoded)) => self.ingest_decoded(&record.key, key, decoded.clone()),
                    None => self.ingest(&record.key, Some(&record.value)),
                },
            }
        }
        if bulk {
            self.bulk_load_endpoints(decoded);
        }
    }

    /// Indexes `endpoints` (distinct ids) into a state holding none, as one `set_endpoint`
    /// each would. Endpoint tags depend only on profiles, so other records may come before or
    /// after.
    fn bulk_load_endpoints(&mut self, endpoints: Vec<(Arc<EndpointId>, Arc<WorkloadEndpoint>)>) {
        // `from_iter` sorts (one pass over the listing's nearly sorted order) and builds the
        // tree bottom-up.
        self.state.endpoints = Arc::new(endpoints.into_iter().collect());
        self.dirty.endpoints = true;
        // Hashed: a cluster of many profiles looks one up per endpoint, on every host.
        let mut remote_by_profile: HashMap<&str, Vec<Arc<EndpointId>>> = HashMap::new();
        let mut local = Vec::new();
        for (id, ep) in self.state.endpoints.iter() {
            if id.host == self.host {
                local.push((Arc::clone(id), Arc::clone(ep)));
                continue;
            }
            for p in &ep.profile_ids {
                remote_by_profile
                    .entry(p.as_str())
                    .or_default()
                    .push(Arc::clone(id));
            }
        }
        // Ids come in order, so each set is built from a sorted run. The index was empty:
        // it holds only endpoints of the state, which held none.
        for (profile, ids) in remote_by_profile {
            Arc::make_mut(&mut self.profile_endpoints)
                .insert(profile.to_string(), Arc::new(ids.into_iter().collect()));
        }
        let remote: Vec<Arc<WorkloadEndpoint>> = self
            .state
            .endpoints
            .iter()
            .filter(|(id, _)| id.host != self.host)
            .map(|(_, ep)| Arc::clone(ep))
            .collect();
        self.add_members_bulk(&remote);
        for (id, ep) in local {
            self.endpoint_changed(&id, None, Some(&ep));
        }
    }

    fn ingest(&mut self, raw_key: &str, value: Option<&[u8]>) {
        if let (Some(shared), Some(bytes)) = (&self.shared, value) {
            // Most updates a simulated host takes are endpoints another host already decoded.
            if let Some((id, ep)) = shared.cached_endpoint(raw_key, bytes) {
                self.dirty.invalid.remove(raw_key);
                self.set_endpoint(id, ep);
                return;
            }
        }
        if IGNORED_PREFIXES.iter().any(|p| raw_key.starts_with(p)) {
            return;
        }
        let Ok(key) = Key::parse(raw_key) else {
            return;
        };
        match &key {
            Key::Endpoint(id) => {
                // An invalid value counts as a deletion, as `ClusterState::apply` has it.
                let decoded = value.map(|bytes| match &self.shared {
                    Some(shared) => shared.endpoint(raw_key, &key, id, bytes),
                    None => match decode(&key, bytes)? {
                        Value::Endpoint(ep) => Ok((Arc::new(id.clone()), Arc::new(ep))),
                        _ => Err(ModelError::field("endpoint", raw_key, "not an endpoint")),
                    },
                });
                match decoded {
                    Some(Ok((id, ep))) => {
                        self.dirty.invalid.remove(raw_key);
                        self.set_endpoint(id, ep);
                    }
                    Some(Err(err)) => {
                        self.dirty.invalid.insert(raw_key.to_string(), err);
                        self.remove_endpoint(id);
                    }
                    None => {
                        self.dirty.invalid.remove(raw_key);
                        self.remove_endpoint(id);
                    }
                }
            }
            _ => {
                let decoded = if ClusterState::depends_on(&key) {
                    value.map(|bytes| decode(&key, bytes)).transpose()
                } else {
                    Ok(None)
                };
                self.ingest_decoded(raw_key, &key, decoded);
            }
        }
    }

    /// [`Calculator::ingest`] of a record other than an endpoint, its key parsed and its value
    /// decoded (`Ok(None)` = deleted).
    fn ingest_decoded(
        &mut self,
        raw_key: &str,
        key: &Key,
        decoded: Result<Option<Value>, ModelError>,
    ) {
        match key {
            // Endpoints take the shared-record path of `ingest` (a listing carries them
            // decoded), never this one.
            Key::Endpoint(_) => {}
            Key::ProfileTags { profile } | Key::ProfileLabels { profile } => {
                // Both feed the labels selectors see, and tags the tag sets.
                let users: Vec<Arc<EndpointId>> = self
                    .profile_endpoints
                    .get(profile)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                let heps = self.host_endpoints_with_profile(profile);
                self.adjust_members_of(&users, false);
                self.adjust_host_endpoints(&heps, false);
                let applied = self.state.apply_decoded(key.clone(), decoded);
                self.note_invalid(raw_key, applied);
                self.adjust_members_of(&users, true);
                self.adjust_host_endpoints(&heps, true);
                if !self.state.policies.is_empty() {
                    self.dirty_local_ifaces_of(&users);
                }
                self.dirty.host_endpoints |= self.has_local_host_endpoints();
            }
            Key::Policy { name } => {
                let old = self.state.policies.get(name).cloned();
                let applied = self.state.apply_decoded(key.clone(), decoded);
                self.note_invalid(raw_key, applied);
                let new = self.state.policies.get(name).cloned();
                self.dirty.policies.insert(name.clone());
                self.dirty.host_endpoints |= self.has_local_host_endpoints();
                let placement = |p: &Option<Arc<Policy>>| {
                    p.as_ref()
                        .map(|p| (p.selector.canonical(), p.order, p.types.clone()))
                };
                if placement(&old) != placement(&new) {
                    self.policy_moved(name, new.as_deref());
                }
            }
            Key::HostEndpoint(id) => {
                let old = self.state.host_endpoints.get(id).cloned();
                self.adjust_host_endpoint_members(old.as_ref(), false);
                let applied = self.state.apply_decoded(key.clone(), decoded);
                self.note_invalid(raw_key, applied);
                let new = self.state.host_endpoints.get(id).cloned();
                self.adjust_host_endpoint_members(new.as_ref(), true);
                if id.host == self.host {
                    // `cali-INPUT` hooks host endpoints only on a host that has some.
                    self.dirty.host_endpoints = true;
                    self.dirty.global = true;
                }
            }
            Key::ProfileRules { profile } => {
                let applied = self.state.apply_decoded(key.clone(), decoded);
                self.note_invalid(raw_key, applied);
                self.dirty.profiles.insert(profile.clone());
            }
            _ => {
                if ClusterState::depends_on(key) {
                    let applied = self.state.apply_decoded(key.clone(), decoded);
                    self.note_invalid(raw_key, applied);
                    self.dirty.global = true;
                    if self.shared.is_some() {
                        if let Some(host) = host_record_of(key) {
                            self.dirty.hosts.insert(host.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Remembers an undecodable record for the next [`Delta`]; a later update of the key
    /// (valid or not) supersedes it within the same batch.
    fn note_invalid(&mut self, raw_key: &str, applied: Applied) {
        match applied {
            Applied::Invalid(_, err) => {
                self.dirty.invalid.insert(raw_key.to_string(), err);
            }
            Applied::Changed(_) | Applied::Ignored => {
                self.dirty.invalid.remove(raw_key);
            }
        }
    }

    /// Stores an endpoint's (possibly shared) record and re-indexes it if it changed.
    fn set_endpoint(&mut self, id: Arc<EndpointId>, ep: Arc<WorkloadEndpoint>) {
        if self
            .state
            .endpoints
            .get(&*id)
            .is_some_and(|old| Arc::ptr_eq(old, &ep))
        {
            // Unchanged: the map stays shared.
            return;
        }
        let old = Arc::make_mut(&mut self.state.endpoints).insert(Arc::clone(&id), Arc::clone(&ep));
        let same = old
            .as_ref()
            .is_some_and(|old| Arc::ptr_eq(old, &ep) || **old == *ep);
        if !same {
            self.dirty.endpoints = true;
            self.endpoint_changed(&id, old.as_deref(), Some(&ep));
        }
    }

    /// Forgets an endpoint and un-indexes it.
    fn remove_endpoint(&mut self, id: &EndpointId) {
        if !self.state.endpoints.contains_key(id) {
            return;
        }
        if let Some((id, old)) = Arc::make_mut(&mut self.state.endpoints).remove_entry(id) {
            self.dirty.endpoints = true;
            self.endpoint_changed(&id, Some(&old), None);
        }
    }

    fn has_local_host_endpoints(&self) -> bool {
        self.state
            .host_endpoints
            .keys()
            .any(|id| id.host == self.host)
    }

    /// Rebuilds every host endpoint chain of this host, noting the policies and profiles
    /// whose use by host endpoints changed.
    fn rebuild_host_endpoints(
        &mut self,
        ordered: &[(&str, &Policy)],
        policies: &mut BTreeSet<String>,
        profiles: &mut BTreeSet<String>,
        delta: &mut Delta,
    ) {
        let mut used_policies = BTreeSet::new();
        let mut used_profiles = BTreeSet::new();
        for family in FAMILIES {
            let built =
                host_endpoint::host_endpoint_chains(&self.state, &self.host, ordered, family);
            let names: BTreeSet<String> = built.chains.iter().map(|c| c.name.clone()).collect();
            let old = self.hep_chains.remove(&family).unwrap_or_default();
            for gone in old.difference(&names) {
                self.set_chain(filter_table(family), gone, None, delta);
            }
            for chain in built.chains {
                let name = chain.name.clone();
                self.set_chain(filter_table(family), &name, Some(chain), delta);
            }
            if !names.is_empty() {
                self.hep_chains.insert(family, names);
            }
            used_policies = built.policies;
            used_profiles = built.profiles;
        }
        policies.extend(
            self.hep_policies
                .symmetric_difference(&used_policies)
                .cloned(),
        );
        profiles.extend(
            self.hep_profiles
                .symmetric_difference(&used_profiles)
                .cloned(),
        );
        self.hep_policies = used_policies;
        self.hep_profiles = used_profiles;
    }

    /// Marks dirty the interfaces of the local endpoints among `ids`.
    fn dirty_local_ifaces_of(&mut self, ids: &[Arc<EndpointId>]) {
        for id in ids.iter().filter(|id| id.host == self.host) {
            if let Some(ep) = self.state.endpoints.get(&**id) {
                self.dirty.ifaces.insert(ep.name.clone());
            }
        }
    }

    /// A policy's selector, order or types changed (or it came or went): the interfaces it
    /// applied to and those it now applies to rebuild their chains.
    fn policy_moved(&mut self, name: &str, new: Option<&Policy>) {
        if let Some(users) = self.policy_users.get(name) {
            self.dirty.ifaces.extend(users.iter().cloned());
        }
        let Some(new) = new else {
            return;
        };
        for (iface, ids) in &self.ifaces {
            let owner = ids
                .iter()
                .next()
                .and_then(|id| self.state.endpoints.get(&**id));
            if owner.is_some_and(|ep| policy::endpoint_matches(&self.state, &new.selector, ep)) {
                self.dirty.ifaces.insert(iface.clone());
            }
        }
    }

    fn host_endpoints_with_profile(&self, profile: &str) -> Vec<HostEndpoint> {
        self.state
            .host_endpoints
            .values()
            .filter(|h| h.profile_ids.iter().any(|p| p == profile))
            .cloned()
            .collect()
    }

    fn adjust_host_endpoints(&mut self, heps: &[HostEndpoint], add: bool) {
        for hep in heps {
            self.adjust_host_endpoint_members(Some(hep), add);
        }
    }

    /// Adds or removes a host endpoint's expected IPs to or from the referenced selectors it
    /// matches.
    fn adjust_host_endpoint_members(&mut self, hep: Option<&HostEndpoint>, add: bool) {
        let Some(hep) = hep else {
            return;
        };
        for (id, (sel, counts)) in &mut self.selectors {
            if policy::host_endpoint_matches(&self.state, sel, hep) {
                count_members(counts, policy::host_endpoint_nets(hep), add);
                self.dirty.selectors.insert(id.clone());
            }
        }
    }

    fn adjust_members_of(&mut self, ids: &[Arc<EndpointId>], add: bool) {
        for id in ids {
            if let Some(ep) = self.state.endpoints.get(&**id).cloned() {
                self.adjust_members(&ep, add);
            }
        }
    }

    /// Adds or removes `ep`'s addresses to or from the members of every tag it carries.
    /// Runs for every endpoint of the cluster on every host: it allocates only for a tag or
    /// address seen for the first time.
    fn adjust_members(&mut self, ep: &WorkloadEndpoint, add: bool) {
        for (id, (sel, counts)) in &mut self.selectors {
            if policy::endpoint_matches(&self.state, sel, ep) {
                count_members(counts, ep.nets(), add);
                if !self.dirty.selectors.contains(id) {
                    self.dirty.selectors.insert(id.clone());
                }
            }
        }
        for tag in ipsets::endpoint_tags(&self.state, ep) {
            let Some(counts) = shared_entry(&mut self.tag_members, tag) else {
                continue;
            };
            for net in ep.nets() {
                if add {
                    *counts.entry(net).or_default() += 1;
                } else if let Some(count) = counts.get_mut(&net) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        counts.remove(&net);
                    }
                }
            }
            if counts.is_empty() {
                Arc::make_mut(&mut self.tag_members).remove(tag);
            }
            if !self.dirty.tags.contains(tag) {
                self.dirty.tags.insert(tag.to_string());
            }
        }
    }

    /// [`Calculator::adjust_members`] adding many endpoints at once: each tag's addresses are
    /// gathered, sorted and counted, and the tag's map built from that sorted run (merged into
    /// the map it already has, if any) instead of one tree insertion per address.
    fn add_members_bulk(&mut self, endpoints: &[Arc<WorkloadEndpoint>]) {
        // Endpoints are grouped by profile list first (a cluster of many profiles has few
        // neighbours sharing one), so the tags of each list are looked up once.
        let mut by_profiles: HashMap<&[String], Vec<IpNet>> = HashMap::new();
        for ep in endpoints {
            // Inactive endpoints carry no tags.
            if ep.state == EndpointState::Active {
                by_profiles
                    .entry(ep.profile_ids.as_slice())
                    .or_default()
                    .extend(ep.nets());
            }
        }
        let mut by_tag: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for (profiles, nets) in by_profiles {
            for tag in ipsets::profiles_tags(&self.state, profiles) {
                match by_tag.get_mut(tag) {
                    Some(all) => all.extend_from_slice(&nets),
                    None => {
                        by_tag.insert(tag.to_string(), nets.clone());
                    }
                }
            }
        }
        for (tag, mut nets) in by_tag {
            nets.sort_unstable();
            let mut counted: Vec<(IpNet, usize)> = Vec::with_capacity(nets.len());
            for net in nets {
                match counted.last_mut() {
                    Some((last, count)) if *last == net => *count += 1,
                    _ => counted.push((net, 1)),
                }
            }
            let members = Arc::make_mut(&mut self.tag_members);
            match members.get_mut(&tag) {
                Some(counts) => {
                    let counts = Arc::make_mut(counts);
                    for (net, count) in counted {
                        *counts.entry(net).or_default() += count;
                    }
                }
                None if !counted.is_empty() => {
                    members.insert(tag.clone(), Arc::new(counted.into_iter().collect()));
                }
                None => {}
            }
            self.dirty.tags.insert(tag);
        }
    }

    fn endpoint_changed(
        &mut self,
        id: &Arc<EndpointId>,
        old: Option<&WorkloadEndpoint>,
        new: Option<&WorkloadEndpoint>,
    ) {
        if let Some(old) = old {
            self.adjust_members(old, false);
            for p in &old.profile_ids {
                remove_from_shared(&mut self.profile_endpoints, p, id);
            }
        }
        if let Some(new) = new {
            for p in &new.profile_ids {
                if let Some(set) = shared_entry(&mut self.profile_endpoints, p) {
                    set.insert(Arc::clone(id));
                }
            }
            self.adjust_members(new, true);
        }
        if id.host == self.host {
            self.local_endpoint_changed(id, old, new);
        }
    }

    /// The part of [`Calculator::endpoint_changed`] only this host's endpoints take: the
    /// interface and profile-user indexes, and what they make dirty.
    fn local_endpoint_changed(
        &mut self,
        id: &Arc<EndpointId>,
        old: Option<&WorkloadEndpoint>,
        new: Option<&WorkloadEndpoint>,
    ) {
        if let Some(old) = old {
            self.dirty.ifaces.insert(old.name.clone());
            if remove_from(&mut self.ifaces, &old.name, id) {
                self.dirty.dispatch = true;
            }
            if old.state == EndpointState::Active {
                for p in &old.profile_ids {
                    if remove_from(&mut self.profile_users, p, id) {
                        self.dirty.profiles.insert(p.clone());
                    }
                }
            }
        }
        if let Some(new) = new {
            self.dirty.ifaces.insert(new.name.clone());
            if add_to(&mut self.ifaces, &new.name, id) {
                self.dirty.dispatch = true;
            }
            if new.state == EndpointState::Active {
                for p in &new.profile_ids {
                    if add_to(&mut self.profile_users, p, id) {
                        self.dirty.profiles.insert(p.clone());
                    }
                }
            }
        }
    }

    /// Rebuilds everything dirty and returns the changes.
    fn flush(&mut self) -> Delta {
        let dirty = std::mem::take(&mut self.dirty);
        if let Some(shared) = &self.shared {
            for name in &dirty.hosts {
                if let Some(record) = self.state.hosts.get_mut(name) {
                    shared.intern_host(name, record);
                }
            }
        }
        let mut delta = Delta {
            invalid: dirty.invalid,
            ..Delta::default()
        };
        let mut refs = RefChanges {
            tags: dirty.tags,
            selectors: dirty.selectors,
            new_selectors: SelectorRefs::new(),
        };
        let mut policies = dirty.policies;
        let mut profiles = dirty.profiles;
        if !dirty.ifaces.is_empty() || dirty.host_endpoints {
            let owned: Vec<(String, Arc<Policy>)> = policy::ordered_policies(&self.state)
                .into_iter()
                .map(|(name, _)| (name.to_string(), Arc::clone(&self.state.policies[name])))
                .collect();
            let ordered: Vec<(&str, &Policy)> =
                owned.iter().map(|(n, p)| (n.as_str(), &**p)).collect();
            for iface in &dirty.ifaces {
                self.rebuild_iface(iface, &ordered, &mut policies, &mut delta);
            }
            if dirty.host_endpoints {
                self.rebuild_host_endpoints(&ordered, &mut policies, &mut profiles, &mut delta);
            }
        }
        for p in &profiles {
            self.rebuild_profile(p, &mut refs, &mut delta);
        }
        for p in &policies {
            self.rebuild_policy(p, &mut refs, &mut delta);
        }
        for tag in &refs.tags {
            self.rebuild_tag(tag, &mut delta);
        }
        for id in &refs.selectors {
            self.rebuild_selector(id, &refs.new_selectors, &mut delta);
        }
        if dirty.dispatch {
            let chains = dispatch::dispatch_chains(self.ifaces.keys().map(String::as_str));
            for family in FAMILIES {
                for chain in &chains {
                    self.set_chain(
                        filter_table(family),
                        &chain.name,
                        Some(chain.clone()),
                        &mut delta,
                    );
                }
            }
        }
        if dirty.global {
            self.rebuild_global(&mut delta);
        }
        if dirty.global || (dirty.endpoints && overlay::any_overlay_pool(&self.state)) {
            let cfg = HostConfig::resolve(&self.state, &self.host);
            let new = overlay::overlay(&self.state, &self.host, &cfg);
            if new != self.desired.overlay {
                self.desired.overlay = new;
                delta.overlay = true;
            }
        }
        delta
    }

    fn rebuild_profile(&mut self, name: &str, refs: &mut RefChanges, delta: &mut Delta) {
        let used = self.profile_users.get(name).is_some_and(|u| !u.is_empty())
            || self.hep_profiles.contains(name);
        let owner = Owner::Profile(name.to_string());
        for family in FAMILIES {
            let table = filter_table(family);
            let compiled = if used {
                let profile = self.state.profiles.get(name).map(|p| &**p);
                let compiled = profile::profile_chains(name, profile, family);
                for chain in compiled.chains.iter().cloned() {
                    let chain_name = chain.name.clone();
                    self.set_chain(table, &chain_name, Some(chain), delta);
                }
                compiled
            } else {
                self.set_chain(table, &profile_inbound_chain(name), None, delta);
                self.set_chain(table, &profile_outbound_chain(name), None, delta);
                profile::CompiledProfile::default()
            };
            self.update_refs(family, &owner, compiled, refs);
        }
    }

    /// Compiles a policy's chains when a local endpoint uses it, or removes them.
    fn rebuild_policy(&mut self, name: &str, refs: &mut RefChanges, delta: &mut Delta) {
        let used = self.policy_users.get(name).is_some_and(|u| !u.is_empty())
            || self.hep_policies.contains(name);
        let policy = self.state.policies.get(name).filter(|_| used).cloned();
        let owner = Owner::Policy(name.to_string());
        for family in FAMILIES {
            let table = filter_table(family);
            let compiled = match &policy {
                Some(p) => {
                    let compiled = policy::policy_chains(name, p, family);
                    for chain in compiled.chains.iter().cloned() {
                        let chain_name = chain.name.clone();
                        self.set_chain(table, &chain_name, Some(chain), delta);
                    }
                    compiled
                }
                None => {
                    self.set_chain(table, &policy_inbound_chain(name), None, delta);
                    self.set_chain(table, &policy_outbound_chain(name), None, delta);
                    profile::CompiledProfile::default()
                }
            };
            self.update_refs(family, &owner, compiled, refs);
        }
    }

    /// Records the tags and selectors `owner`'s chains now reference in `family`, noting
    /// every tag and selector that gained or lost a reference.
    fn update_refs(
        &mut self,
        family: IpFamily,
        owner: &Owner,
        compiled: profile::CompiledProfile,
        refs: &mut RefChanges,
    ) {
        let key = (family, owner.clone());
        let new_tags = compiled.tags;
        let old_tags = self.profile_tags.remove(&key).unwrap_or_default();
        for gone in old_tags.difference(&new_tags) {
            remove_from(&mut self.tag_refs, &(family, gone.clone()), owner);
            refs.tags.insert(gone.clone());
        }
        for added in new_tags.difference(&old_tags) {
            add_to(&mut self.tag_refs, &(family, added.clone()), owner);
            refs.tags.insert(added.clone());
        }
        if !new_tags.is_empty() {
            self.profile_tags.insert(key.clone(), new_tags);
        }
        let new_sels: BTreeSet<String> = compiled.selectors.keys().cloned().collect();
        let old_sels = self.owner_selectors.remove(&key).unwrap_or_default();
        for gone in old_sels.difference(&new_sels) {
            remove_from(&mut self.selector_refs, &(family, gone.clone()), owner);
            refs.selectors.insert(gone.clone());
        }
        for added in new_sels.difference(&old_sels) {
            add_to(&mut self.selector_refs, &(family, added.clone()), owner);
            refs.selectors.insert(added.clone());
        }
        if !new_sels.is_empty() {
            self.owner_selectors.insert(key, new_sels);
        }
        refs.new_selectors.extend(compiled.selectors);
    }

    /// Writes (or removes) a selector's sets; a selector referenced for the first time gets
    /// its members from one scan of the cluster, one no longer referenced is forgotten.
    fn rebuild_selector(&mut self, id: &str, new: &SelectorRefs, delta: &mut Delta) {
        let referenced = |family| {
            self.selector_refs
                .get(&(family, id.to_string()))
                .is_some_and(|r| !r.is_empty())
        };
        let families: Vec<IpFamily> = FAMILIES.into_iter().filter(|f| referenced(*f)).collect();
        if families.is_empty() {
            if self.selectors.contains_key(id) {
                self.retired.insert(id.to_string());
            }
            if self.retired.len() > MAX_RETIRED_SELECTORS {
                for gone in std::mem::take(&mut self.retired) {
                    self.selectors.remove(&gone);
                }
            }
        } else if self.retired.remove(id) {
            // Kept up to date while retired: in use again without a scan.
        } else if !self.selectors.contains_key(id) {
            if let Some(sel) = new.get(id) {
                let mut counts = BTreeMap::new();
                for ep in self.state.endpoints.values() {
                    if policy::endpoint_matches(&self.state, sel, ep) {
                        count_members(&mut counts, ep.nets(), true);
                    }
                }
                for hep in self.state.host_endpoints.values() {
                    if policy::host_endpoint_matches(&self.state, sel, hep) {
                        count_members(&mut counts, policy::host_endpoint_nets(hep), true);
                    }
                }
                self.selectors.insert(id.to_string(), (sel.clone(), counts));
            }
        }
        for family in FAMILIES {
            let set = families.contains(&family).then(|| {
                let members = self
                    .selectors
                    .get(id)
                    .into_iter()
                    .flat_map(|(_, m)| m.keys());
                ipsets::selector_set(id, family, members)
            });
            let name = selector_set_name(id, family);
            set_entry(&mut self.desired.ipsets, &mut delta.ipsets, &name, set);
        }
    }

    fn rebuild_tag(&mut self, tag: &str, delta: &mut Delta) {
        for family in FAMILIES {
            let name = tag_set_name(tag, family);
            let referenced = self
                .tag_refs
                .get(&(family, tag.to_string()))
                .is_some_and(|r| !r.is_empty());
            let set = referenced.then(|| {
                ipsets::tag_set(
                    tag,
                    family,
                    self.tag_members.get(tag).into_iter().flat_map(|m| m.keys()),
                )
            });
            set_entry(&mut self.desired.ipsets, &mut delta.ipsets, &name, set);
        }
    }

    fn rebuild_iface(
        &mut self,
        iface: &str,
        ordered: &[(&str, &Policy)],
        dirty_policies: &mut BTreeSet<String>,
        delta: &mut Delta,
    ) {
        let owner = self
            .ifaces
            .get(iface)
            .and_then(|ids| ids.iter().next())
            .and_then(|id| {
                self.state
                    .endpoints
                    .get(&**id)
                    .map(|ep| (Arc::clone(id), Arc::clone(ep)))
            });
        let policies = owner
            .as_ref()
            .map(|(_, ep)| policy::endpoint_policies(&self.state, ordered, ep))
            .unwrap_or_default();
        let old = self.iface_policies.remove(iface).unwrap_or_default();
        let old_names: BTreeSet<&str> = old.names().collect();
        let new_names: BTreeSet<&str> = policies.names().collect();
        for gone in old_names.difference(&new_names) {
            if remove_from(
                &mut self.policy_users,
                &gone.to_string(),
                &iface.to_string(),
            ) {
                dirty_policies.insert(gone.to_string());
            }
        }
        for added in new_names.difference(&old_names) {
            if add_to(
                &mut self.policy_users,
                &added.to_string(),
                &iface.to_string(),
            ) {
                dirty_policies.insert(added.to_string());
            }
        }
        let plumbing = match &owner {
            Some((id, ep)) => {
                for family in FAMILIES {
                    for chain in endpoint_chains(iface, id, ep, &policies) {
                        let name = chain.name.clone();
                        self.set_chain(filter_table(family), &name, Some(chain), delta);
                    }
                }
                EndpointPlumbing::of(iface, ep)
            }
            None => {
                for family in FAMILIES {
                    self.set_chain(filter_table(family), &from_wl_chain(iface), None, delta);
                    self.set_chain(filter_table(family), &to_wl_chain(iface), None, delta);
                }
                EndpointPlumbing::default()
            }
        };
        let old = self.plumbing.remove(iface).unwrap_or_default();
        let d = &mut self.desired;
        for r in old.routes.difference(&plumbing.routes) {
            d.routes.remove(r);
            delta.routes_added.remove(r);
            delta.routes_removed.insert(r.clone());
        }
        for r in plumbing.routes.difference(&old.routes) {
            d.routes.insert(r.clone());
            delta.routes_removed.remove(r);
            delta.routes_added.insert(r.clone());
        }
        for n in old.neighbours.difference(&plumbing.neighbours) {
            d.neighbours.remove(n);
            delta.neighbours_added.remove(n);
            delta.neighbours_removed.insert(n.clone());
        }
        for n in plumbing.neighbours.difference(&old.neighbours) {
            d.neighbours.insert(n.clone());
            delta.neighbours_removed.remove(n);
            delta.neighbours_added.insert(n.clone());
        }
        for n in old.proxy_neighbours.difference(&plumbing.proxy_neighbours) {
            d.proxy_neighbours.remove(n);
            delta.proxy_neighbours_added.remove(n);
            delta.proxy_neighbours_removed.insert(n.clone());
        }
        for n in plumbing.proxy_neighbours.difference(&old.proxy_neighbours) {
            d.proxy_neighbours.insert(n.clone());
            delta.proxy_neighbours_removed.remove(n);
            delta.proxy_neighbours_added.insert(n.clone());
        }
        for k in old.sysctls.keys() {
            if !plumbing.sysctls.contains_key(k) {
                set_entry(&mut d.sysctls, &mut delta.sysctls, k, None);
            }
        }
        for (k, v) in &plumbing.sysctls {
            set_entry(&mut d.sysctls, &mut delta.sysctls, k, Some(v.clone()));
        }
        if owner.is_some() {
            self.plumbing.insert(iface.to_string(), plumbing);
        }
        if !policies.is_empty() {
            self.iface_policies.insert(iface.to_string(), policies);
        }
    }

    fn rebuild_global(&mut self, delta: &mut Delta) {
        let cfg = HostConfig::resolve(&self.state, &self.host);
        let new = GlobalParts::compute(&self.state, &self.host, &cfg);
        if new == self.global {
            return;
        }
        for family in FAMILIES {
            // The failsafe chains exist only while the host has host endpoints.
            let kept: BTreeSet<String> = new
                .filter_chains(family)
                .into_iter()
                .map(|c| c.name)
                .collect();
            for old in self.global.filter_chains(family) {
                if !kept.contains(&old.name) {
                    self.set_chain(filter_table(family), &old.name, None, delta);
                }
            }
            for chain in new.filter_chains(family) {
                let name = chain.name.clone();
                self.set_chain(filter_table(family), &name, Some(chain), delta);
            }
        }
        for chain in new.nat_chains.clone() {
            let name = chain.name.clone();
            self.set_chain(NAT_V4, &name, Some(chain), delta);
        }
        let d = &mut self.desired;
        for old in &self.global.ipsets {
            if !new.ipsets.iter().any(|s| s.name == old.name) {
                set_entry(&mut d.ipsets, &mut delta.ipsets, &old.name, None);
            }
        }
        for set in &new.ipsets {
            set_entry(
                &mut d.ipsets,
                &mut delta.ipsets,
                &set.name,
                Some(set.clone()),
            );
        }
        for k in self.global.sysctls.keys() {
            if !new.sysctls.contains_key(k) {
                set_entry(&mut d.sysctls, &mut delta.sysctls, k, None);
            }
        }
        for (k, v) in &new.sysctls {
            set_entry(&mut d.sysctls, &mut delta.sysctls, k, Some(v.clone()));
        }
        if d.bird_v4 != new.bird_v4 {
            d.bird_v4 = new.bird_v4.clone();
            delta.bird_v4 = Some(new.bird_v4.clone());
        }
        if d.bird_v6 != new.bird_v6 {
            d.bird_v6 = new.bird_v6.clone();
            delta.bird_v6 = Some(new.bird_v6.clone());
        }
        self.global = new;
    }

    fn set_chain(&mut self, table: TableId, name: &str, chain: Option<Chain>, delta: &mut Delta) {
        let chains = &mut self.desired.tables.entry(table).or_default().chains;
        if chains.get(name) == chain.as_ref() {
            return;
        }
        match &chain {
            Some(c) => chains.insert(name.to_string(), c.clone()),
            None => chains.remove(name),
        };
        delta.chains.insert((table, name.to_string()), chain);
    }
}

/// The host whose [`crate::cluster::HostState`] a key is part of.
pub(crate) fn host_record_of(key: &Key) -> Option<&str> {
    match key {
        Key::HostConfig { host, .. }
        | Key::BirdIp { host }
        | Key::HostVtep { host }
        | Key::HostIp { host, .. }
        | Key::HostAsNum { host }
        | Key::HostBgpLogLevel { host }
        | Key::HostPeer { host, .. }
        | Key::IpamAffinity { host, .. } => Some(host),
        _ => None,
    }
}

/// Counts `nets` in (`add`) or out of a member count map, dropping members that reach zero.
fn count_members(
    counts: &mut BTreeMap<IpNet, usize>,
    nets: impl Iterator<Item = IpNet>,
    add: bool,
) {
    for net in nets {
        if add {
            *counts.entry(net).or_default() += 1;
        } else if let Some(count) = counts.get_mut(&net) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&net);
            }
        }
    }
}

/// Tags and selectors whose sets a flush must rewrite, and the selectors newly referenced
/// (by id) so a first reference can compute members.
#[derive(Debug, Default)]
struct RefChanges {
    tags: BTreeSet<String>,
    selectors: BTreeSet<String>,
    new_selectors: SelectorRefs,
}

/// What compiled a set of chains referencing tags and selectors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Profile(String),
    Policy(String),
}

/// Sets or removes `map[key]`, recording a real change in `changes`.
fn set_entry<V: Clone + PartialEq>(
    map: &mut BTreeMap<String, V>,
    changes: &mut BTreeMap<String, Option<V>>,
    key: &str,
    value: Option<V>,
) {
    if map.get(key) == value.as_ref() {
        return;
    }
    match &value {
        Some(v) => map.insert(key.to_string(), v.clone()),
        None => map.remove(key),
    };
    changes.insert(key.to_string(), value);
}

/// A cluster-wide index by name, the same on every host: calculators that loaded one listing
/// share it (and each entry) until one of them changes it (copy-on-write, one entry at a
/// time), so a fresh agent's load copies a pointer, not the cluster.
type SharedIndex<V> = Arc<BTreeMap<String, Arc<V>>>;

/// `index[key]` for writing, created empty if missing (always `Some`); the map and the entry
/// are copied first when other calculators share them.
fn shared_entry<'a, V: Clone + Default>(
    index: &'a mut SharedIndex<V>,
    key: &str,
) -> Option<&'a mut V> {
    let map = Arc::make_mut(index);
    if !map.contains_key(key) {
        map.insert(key.to_string(), Arc::default());
    }
    map.get_mut(key).map(Arc::make_mut)
}

/// Removes `item` from `index[key]`, dropping the entry when it becomes empty.
fn remove_from_shared<T: Ord + Clone>(index: &mut SharedIndex<BTreeSet<T>>, key: &str, item: &T) {
    if !index.get(key).is_some_and(|set| set.contains(item)) {
        return;
    }
    let Some(set) = shared_entry(index, key) else {
        return;
    };
    set.remove(item);
    if set.is_empty() {
        Arc::make_mut(index).remove(key);
    }
}

/// Adds `item` to `index[key]`; true when the entry was created (it was empty before).
fn add_to<K: Ord + Clone, T: Ord + Clone>(
    index: &mut BTreeMap<K, BTreeSet<T>>,
    key: &K,
    item: &T,
) -> bool {
    let set = index.entry(key.clone()).or_default();
    let was_empty = set.is_empty();
    set.insert(item.clone());
    was_empty
}

/// Removes `item` from `index[key]`; true when the entry became empty (and was dropped).
fn remove_from<K: Ord + Clone, T: Ord>(
    index: &mut BTreeMap<K, BTreeSet<T>>,
    key: &K,
    item: &T,
) -> bool {
    let Some(set) = index.get_mut(key) else {
        return false;
    };
    if !set.remove(item) {
        return false;
    }
    if set.is_empty() {
        index.remove(key);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_prefixes_hold_only_keys_the_state_ignores() {
        for key in [
            "/calico/ipam/v2/assignment/ipv4/block/192.168.1.0-26",
            "/calico/ipam/v2/handle/abc",
            "/calico/felix/v1/host/h1/status",
            "/calico/felix/v1/host/h1/last_reported_status",
        ] {
            assert!(IGNORED_PREFIXES.iter().any(|p| key.starts_with(p)), "{key}");
            let parsed = Key::parse(key).unwrap();
            assert!(!ClusterState::depends_on(&parsed), "{key}");
        }
        let affinity = Key::parse("/calico/ipam/v2/host/h1/ipv4/block/192.168.1.0-26").unwrap();
        assert!(ClusterState::depends_on(&affinity));
    }

    #[test]
    fn calculators_sharing_decodes_share_records_and_agree_with_compute() {
        let shared = SharedDecodes::new();
        let key = "/calico/v1/host/h2/workload/docker/w/endpoint/e";
        let ep = br#"{"state":"active","name":"calie","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["A"],"ipv4_nets":["192.168.1.1/32"]}"#;
        let tags = ("/calico/v1/policy/profile/A/tags", &br#"["A"]"#[..]);
        let rules = (
            "/calico/v1/policy/profile/A/rules",
            &br#"{"inbound_rules":[{"action":"allow","src_tag":"A"}],"outbound_rules":[]}"#[..],
        );
        let mut calcs: Vec<Calculator> = ["h1", "h2"]
            .into_iter()
            .map(|h| Calculator::with_shared(h, shared.clone()))
            .collect();
        for calc in &mut calcs {
            // The endpoint before its profile: the batch takes the profile first.
            calc.apply_batch([
                (key.to_string(), Some(ep.to_vec())),
                (tags.0.to_string(), Some(tags.1.to_vec())),
                (rules.0.to_string(), Some(rules.1.to_vec())),
            ]);
            assert_eq!(calc.desired(), &compute(calc.state(), &calc.host));
        }
        let record = |c: &Calculator| c.state().endpoints.values().next().cloned().unwrap();
        assert!(Arc::ptr_eq(&record(&calcs[0]), &record(&calcs[1])));
        // An invalid value deletes the endpoint on every calculator, and says why.
        for calc in &mut calcs {
            let delta = calc.apply(key, Some(b"{not json"));
            assert_eq!(delta.invalid.keys().collect::<Vec<_>>(), [key]);
            assert!(calc.state().endpoints.is_empty());
            assert_eq!(calc.desired(), &compute(calc.state(), &calc.host));
        }
    }

    #[test]
    fn undecodable_records_of_every_kind_are_reported_once_per_batch() {
        let mut calc = Calculator::new("h1");
        let endpoint = "/calico/v1/host/h1/workload/docker/w/endpoint/e";
        let delta = calc.apply_batch([
            (endpoint.to_string(), Some(b"garbage".to_vec())),
            (
                "/calico/v1/policy/profile/P/rules".to_string(),
                Some(b"[]".to_vec()),
            ),
            (
                "/calico/v1/policy/profile/P/tags".to_string(),
                Some(b"{".to_vec()),
            ),
            (
                "/calico/v1/ipam/v4/pool/192.168.0.0-16".to_string(),
                Some(b"1".to_vec()),
            ),
            // Superseded by a valid value later in the same batch: not reported.
            (
                "/calico/v1/config/LogSeverityScreen".to_string(),
                Some(b"info".to_vec()),
            ),
        ]);
        let keys: Vec<&str> = delta.invalid.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "/calico/v1/host/h1/workload/docker/w/endpoint/e",
                "/calico/v1/ipam/v4/pool/192.168.0.0-16",
                "/calico/v1/policy/profile/P/rules",
                "/calico/v1/policy/profile/P/tags",
            ]
        );
        let fixed = calc.apply(
            endpoint,
            Some(
                br#"{"state":"active","name":"calie","mac":"ee:ee:ee:ee:ee:ee","profile_ids":[]}"#,
            ),
        );
        assert!(fixed.invalid.is_empty(), "{:?}", fixed.invalid);
        assert_eq!(calc.local_endpoints(), 1);
    }

    #[test]
    fn a_shared_listing_loads_like_the_same_batch_and_shares_records() {
        let shared = SharedDecodes::new();
        let ep = |name: &str, ip: &str| {
            format!(r#"{{"state":"active","name":"{name}","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["A"],"ipv4_nets":["{ip}/32"]}}"#)
                .into_bytes()
        };
        // Endpoints before their profile (key order), one invalid endpoint, a host record.
        let kvs: Vec<(String, Vec<u8>)> = vec![
            ("/calico/v1/Ready".into(), b"true".to_vec()),
            (
                "/calico/v1/host/h1/bird_ip".into(),
                b"172.31.250.1".to_vec(),
            ),
            (
                "/calico/v1/host/h1/workload/docker/w1/endpoint/e1".into(),
                ep("calie1", "192.168.1.1"),
            ),
            (
                "/calico/v1/host/h2/workload/docker/w2/endpoint/e2".into(),
                br#"{"state":"active","name":"calie2","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["A"],"ipv4_nets":["192.168.1.2/32"],"labels":{"role":"web"}}"#.to_vec(),
            ),
            (
                "/calico/v1/host/h2/workload/docker/w3/endpoint/e3".into(),
                b"{not json".to_vec(),
            ),
            // The same address as e1 (counted twice in the tag's members), a host record that
            // does not decode, and a block affinity.
            (
                "/calico/v1/host/h2/workload/docker/w4/endpoint/e4".into(),
                ep("calie4", "192.168.1.1"),
            ),
            ("/calico/v1/host/h2/bird_ip".into(), b"not an ip".to_vec()),
            (
                "/calico/ipam/v2/host/h2/ipv4/block/192.168.1.0-26".into(),
                Vec::new(),
            ),
            (
                "/calico/v1/policy/profile/A/rules".into(),
                br#"{"inbound_rules":[{"action":"allow","src_tag":"A"}],"outbound_rules":[]}"#
                    .to_vec(),
            ),
            (
                "/calico/v1/policy/profile/A/tags".into(),
                br#"["A"]"#.to_vec(),
            ),
            // A rule selector a remote endpoint matches: the bulk load must count it in.
            (
                "/calico/v1/policy/tier/default/policy/p".into(),
                br#"{"order":10,"selector":"all()","inbound_rules":[{"action":"allow","src_selector":"role == 'web'"}],"outbound_rules":[]}"#
                    .to_vec(),
            ),
        ];
        let listing = SharedListing::new(kvs.clone(), &shared);
        assert_eq!(listing.len(), kvs.len());
        assert!(listing.records()[0].key.starts_with(PROFILE_PREFIX));
        let decoded = listing
            .records()
            .iter()
            .filter(|r| r.endpoint.is_some())
            .count();
        assert_eq!(decoded, 3, "the invalid endpoint is left raw");
        assert_eq!(
            listing.hosts().keys().collect::<Vec<_>>(),
            ["h1", "h2"],
            "h1's bird_ip, h2's block"
        );
        for host in ["h1", "h2"] {
            let mut loaded = Calculator::with_shared(host, shared.clone());
            let delta = loaded.load_listing(&listing);
            assert!(!delta.is_empty());
            let mut batched = Calculator::new(host);
            batched.apply_batch(kvs.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
            assert_eq!(loaded.state(), batched.state());
            assert_eq!(loaded.desired(), batched.desired());
            assert_eq!(loaded.desired(), &compute(loaded.state(), host));
            assert_eq!(loaded.state().endpoints.len(), 3);
            assert_eq!(loaded.state().hosts["h2"].blocks.len(), 1);
            let set = &loaded.desired().ipsets[&tag_set_name("A", IpFamily::V4)];
            assert_eq!(set.members.len(), 2);
            let web = loaded
                .desired()
                .ipsets
                .iter()
                .find(|(name, _)| name.starts_with("cali4-s:"))
                .map(|(_, set)| {
                    set.members
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                });
            assert_eq!(
                web,
                Some(vec!["192.168.1.2/32".to_string()]),
                "selector members"
            );
            assert!(
                Arc::ptr_eq(&loaded.state().hosts["h1"], &listing.hosts()["h1"]),
                "the host table is the listing's"
            );
            let invalid: Vec<&String> = delta.invalid.keys().collect();
            assert_eq!(
                invalid,
                [
                    "/calico/v1/host/h2/bird_ip",
                    "/calico/v1/host/h2/workload/docker/w3/endpoint/e3"
                ]
            );
            let (id, ep) = listing
                .records()
                .iter()
                .find_map(|r| r.endpoint.clone())
                .unwrap();
            assert!(Arc::ptr_eq(&loaded.state().endpoints[&id], &ep));
            // Loading it again (not the bulk path: the state holds endpoints) changes nothing.
            assert!(loaded.load_listing(&listing).is_empty());
            assert_eq!(loaded.state(), batched.state());
        }
    }
}
