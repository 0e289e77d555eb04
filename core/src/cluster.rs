//! `ClusterState`: the typed snapshot of everything the node agent reads, built from raw
//! key/value updates in any order. Invalid values count as absent (Felix's rule).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::codec::{decode, Value};
use crate::keys::{IpVersion, Key};
use crate::model::{
    AsNumber, BgpLogLevel, BgpPeer, EndpointId, HostEndpoint, HostEndpointId, IpPool, LabelMap,
    Policy, Rules, Vtep, WorkloadEndpoint, DEFAULT_AS,
};
use crate::ModelError;

/// A profile as the agent sees it. Either half may be missing; `rules == None` (missing or
/// invalid) makes every endpoint using the profile drop all traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileState {
    pub tags: Option<Vec<String>>,
    pub rules: Option<Rules>,
    /// Labels the profile's endpoints inherit (behind their own) for selectors.
    pub labels: Option<LabelMap>,
}

/// One host's registration and BGP settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    pub bird_ip: Option<Ipv4Addr>,
    /// The host's VXLAN tunnel endpoint (`/calico/v1/host/<h>/vtep`).
    pub vtep: Option<Vtep>,
    pub ip_v4: Option<Ipv4Addr>,
    pub ip_v6: Option<Ipv6Addr>,
    pub as_num: Option<AsNumber>,
    pub peers: BTreeMap<IpAddr, BgpPeer>,
    pub bgp_loglevel: Option<BgpLogLevel>,
    /// Per-host Felix config (`/calico/v1/host/<h>/config/*`, including `marker`).
    pub config: BTreeMap<String, String>,
    /// IPAM blocks affine to the host (`/calico/ipam/v2/host/<h>/ipv4|ipv6/block/<cidr>`):
    /// BIRD announces each as one aggregate route (reference 4.4).
    pub blocks: BTreeSet<IpNet>,
}

impl HostState {
    fn is_empty(&self) -> bool {
        *self == HostState::default()
    }
}

/// Global BGP settings under `/calico/bgp/v1/global`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpGlobal {
    pub as_num: AsNumber,
    pub node_mesh: bool,
    pub peers: BTreeMap<IpAddr, BgpPeer>,
    pub loglevel: Option<BgpLogLevel>,
}

impl Default for BgpGlobal {
    fn default() -> Self {
        BgpGlobal {
            as_num: AsNumber(DEFAULT_AS),
            node_mesh: true,
            peers: BTreeMap::new(),
            loglevel: None,
        }
    }
}

/// Everything policy and routing depend on, for every host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterState {
    pub ready: bool,
    pub global_config: BTreeMap<String, String>,
    pub pools: BTreeMap<IpNet, IpPool>,
    /// Behind `Arc`s (copy-on-write) so that calculators sharing a
    /// [`crate::shared::SharedDecodes`] hold one copy of each identical host record.
    pub hosts: BTreeMap<String, Arc<HostState>>,
    pub bgp: BgpGlobal,
    /// Behind `Arc`s so that calculators sharing a [`crate::shared::SharedDecodes`] hold one
    /// copy of each record between them (lookups take a plain `&EndpointId`); the map itself
    /// too, copy-on-write, so the calculators that loaded one listing share it until they
    /// change it.
    pub endpoints: Arc<BTreeMap<Arc<EndpointId>, Arc<WorkloadEndpoint>>>,
    /// Shared like `endpoints`, and each profile on its own: a changed profile copies the
    /// map's pointers and that one profile.
    pub profiles: Arc<BTreeMap<String, Arc<ProfileState>>>,
    /// Selector policies of tier `default`, by name.
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// Host endpoints of every host.
    pub host_endpoints: BTreeMap<HostEndpointId, HostEndpoint>,
}

/// What one raw update did to the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The key is part of the model and the state now reflects it.
    Changed(Key),
    /// The value was invalid: the key was removed from the state as if deleted.
    Invalid(Key, ModelError),
    /// The key is not one the policy/routing state depends on (IPAM, status, unknown keys).
    Ignored,
}

impl ClusterState {
    /// Host settings, or the empty default for an unregistered host.
    pub fn host(&self, host: &str) -> HostState {
        self.hosts
            .get(host)
            .map(|h| HostState::clone(h))
            .unwrap_or_default()
    }

    /// The AS a host speaks BGP with: its own or the global default.
    pub fn host_as(&self, host: &str) -> AsNumber {
        self.hosts
            .get(host)
            .and_then(|h| h.as_num)
            .unwrap_or(self.bgp.as_num)
    }

    /// Applies one raw update (`None` = deleted). Order-independent: the state after a set of
    /// updates depends only on the last value of each key.
    pub fn apply(&mut self, raw_key: &str, value: Option<&[u8]>) -> Applied {
        let Ok(key) = Key::parse(raw_key) else {
            return Applied::Ignored;
        };
        if !Self::depends_on(&key) {
            return Applied::Ignored;
        }
        let decoded = value.map(|bytes| decode(&key, bytes)).transpose();
        self.apply_decoded(key, decoded)
    }

    /// [`ClusterState::apply`] of a key already parsed and a value already decoded (`Ok(None)`
    /// = deleted, `Err` = undecodable), as a [`crate::shared::SharedListing`] carries them.
    pub fn apply_decoded(
        &mut self,
        key: Key,
        decoded: Result<Option<Value>, ModelError>,
    ) -> Applied {
        if !Self::depends_on(&key) {
            return Applied::Ignored;
        }
        let decoded = match decoded {
            Ok(v) => v,
            Err(err) => {
                self.set(&key, None);
                return Applied::Invalid(key, err);
            }
        };
        if self.set(&key, decoded) {
            Applied::Changed(key)
        } else {
            Applied::Ignored
        }
    }

    /// Whether policy or routing depends on this key (IPAM blocks, handles, status records and
    /// host subnets do not; block affinities do, for route aggregation).
    pub fn depends_on(key: &Key) -> bool {
        !matches!(
            key,
            Key::IpamBlock { .. }
                | Key::IpamHandle { .. }
                | Key::FelixStatus { .. }
                | Key::FelixLastReported { .. }
                | Key::HostNetwork { .. }
        )
    }

    /// Sets or clears the slot of `key`. Returns false for keys outside the policy model.
    fn set(&mut self, key: &Key, value: Option<Value>) -> bool {
        match (key, value) {
            (Key::Ready, v) => self.ready = matches!(v, Some(Value::Ready(true))),
            (Key::GlobalConfig { name }, Some(Value::Config(s))) => {
                self.global_config.insert(name.clone(), s);
            }
            (Key::GlobalConfig { name }, _) => {
                self.global_config.remove(name);
            }
            (Key::Pool { cidr }, Some(Value::Pool(pool))) => {
                self.pools.insert(*cidr, pool);
            }
            (Key::Pool { cidr }, _) => {
                self.pools.remove(cidr);
            }
            (Key::Endpoint(id), Some(Value::Endpoint(ep))) => {
                Arc::make_mut(&mut self.endpoints).insert(Arc::new(id.clone()), Arc::new(ep));
            }
            (Key::Endpoint(id), _) => {
                if self.endpoints.contains_key(id) {
                    Arc::make_mut(&mut self.endpoints).remove(id);
                }
            }
            (Key::ProfileTags { profile }, v) => self.update_profile(profile, |p| {
                p.tags = match v {
                    Some(Value::Tags(tags)) => Some(tags),
                    _ => None,
                }
            }),
            (Key::ProfileRules { profile }, v) => self.update_profile(profile, |p| {
                p.rules = match v {
                    Some(Value::Rules(rules)) => Some(rules),
                    _ => None,
                }
            }),
            (Key::ProfileLabels { profile }, v) => self.update_profile(profile, |p| {
                p.labels = match v {
                    Some(Value::Labels(labels)) => Some(labels),
                    _ => None,
                }
            }),
            (Key::Policy { name }, Some(Value::Policy(policy))) => {
                self.policies.insert(name.clone(), Arc::new(policy));
            }
            (Key::Policy { name }, _) => {
                self.policies.remove(name);
            }
            (Key::HostEndpoint(id), Some(Value::HostEndpoint(hep))) => {
                self.host_endpoints.insert(id.clone(), hep);
            }
            (Key::HostEndpoint(id), _) => {
                self.host_endpoints.remove(id);
            }
            (Key::GlobalAsNum, v) => {
                self.bgp.as_num = match v {
                    Some(Value::AsNum(asn)) => asn,
                    _ => AsNumber(DEFAULT_AS),
                }
            }
            (Key::NodeMesh, v) => {
                self.bgp.node_mesh = match v {
                    Some(Value::NodeMesh(mesh)) => mesh.enabled,
                    _ => true,
                }
            }
            (Key::GlobalBgpLogLevel, v) => {
                self.bgp.loglevel = match v {
                    Some(Value::LogLevel(l)) => Some(l),
                    _ => None,
                }
            }
            (Key::GlobalPeer { ip }, Some(Value::Peer(peer))) => {
                self.bgp.peers.insert(*ip, peer);
            }
            (Key::GlobalPeer { ip }, _) => {
                self.bgp.peers.remove(ip);
            }
            (Key::HostConfig { host, name }, v) => self.update_host(host, |h| match v {
                Some(Value::Config(s)) => {
                    h.config.insert(name.clone(), s);
                }
                _ => {
                    h.config.remove(name);
                }
            }),
            (Key::BirdIp { host }, v) => self.update_host(host, |h| {
                h.bird_ip = match v {
                    Some(Value::BirdIp(ip)) => Some(ip),
                    _ => None,
                }
            }),
            (Key::HostVtep { host }, v) => self.update_host(host, |h| {
                h.vtep = match v {
                    Some(Value::Vtep(vtep)) => Some(vtep),
                    _ => None,
                }
            }),
            (Key::HostIp { host, version }, v) => self.update_host(host, |h| {
                let ip = match v {
                    Some(Value::HostIp(ip)) => ip,
                    _ => None,
                };
                match (version, ip) {
                    (IpVersion::V4, Some(IpAddr::V4(ip))) => h.ip_v4 = Some(ip),
                    (IpVersion::V4, _) => h.ip_v4 = None,
                    (IpVersion::V6, Some(IpAddr::V6(ip))) => h.ip_v6 = Some(ip),
                    (IpVersion::V6, _) => h.ip_v6 = None,
                }
            }),
            (Key::HostAsNum { host }, v) => self.update_host(host, |h| {
                h.as_num = match v {
                    Some(Value::AsNum(asn)) => Some(asn),
                    _ => None,
                }
            }),
            (Key::HostBgpLogLevel { host }, v) => self.update_host(host, |h| {
                h.bgp_loglevel = match v {
                    Some(Value::LogLevel(l)) => Some(l),
                    _ => None,
                }
            }),
            (Key::HostPeer { host, ip }, v) => self.update_host(host, |h| match v {
                Some(Value::Peer(peer)) => {
                    h.peers.insert(*ip, peer);
                }
                _ => {
                    h.peers.remove(ip);
                }
            }),
            (Key::IpamAffinity { host, cidr }, v) => self.update_host(host, |h| {
                if matches!(v, Some(Value::Affinity)) {
                    h.blocks.insert(*cidr);
                } else {
                    h.blocks.remove(cidr);
                }
            }),
            (
                Key::IpamBlock { .. }
                | Key::IpamHandle { .. }
                | Key::FelixStatus { .. }
                | Key::FelixLastReported { .. }
                | Key::HostNetwork { .. },
                _,
            ) => return false,
        }
        true
    }

    /// Sets (or with `None` removes) one endpoint from an already decoded, possibly shared,
    /// record: what [`ClusterState::apply`] does for an endpoint key.
    pub fn set_endpoint(&mut self, id: Arc<EndpointId>, endpoint: Option<Arc<WorkloadEndpoint>>) {
        match endpoint {
            Some(ep) => {
                Arc::make_mut(&mut self.endpoints).insert(id, ep);
            }
            None => {
                if self.endpoints.contains_key(&*id) {
                    Arc::make_mut(&mut self.endpoints).remove(&*id);
                }
            }
        }
    }

    fn update_profile(&mut self, name: &str, f: impl FnOnce(&mut ProfileState)) {
        let profiles = Arc::make_mut(&mut self.profiles);
        let profile = Arc::make_mut(profiles.entry(name.to_string()).or_default());
        f(profile);
        if profile.tags.is_none() && profile.rules.is_none() && profile.labels.is_none() {
            profiles.remove(name);
        }
    }

    fn update_host(&mut self, name: &str, f: impl FnOnce(&mut HostState)) {
        let host = match self.hosts.get_mut(name) {
            Some(host) => host,
            None => self.hosts.entry(name.to_string()).or_default(),
        };
        let host = Arc::make_mut(host);
        f(host);
        if host.is_empty() {
            self.hosts.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_endpoint_counts_as_deleted() {
        let mut state = ClusterState::default();
        let key = "/calico/v1/host/h/workload/docker/w/endpoint/e";
        let good =
            br#"{"state":"active","name":"calie","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["A"]}"#;
        assert!(matches!(state.apply(key, Some(good)), Applied::Changed(_)));
        assert_eq!(state.endpoints.len(), 1);
        assert!(matches!(
            state.apply(key, Some(b"{not json")),
            Applied::Invalid(..)
        ));
        assert!(state.endpoints.is_empty());
    }

    #[test]
    fn profile_halves_and_host_fields_are_tracked_independently() {
        let mut state = ClusterState::default();
        state.apply("/calico/v1/policy/profile/P/tags", Some(br#"["P"]"#));
        assert_eq!(state.profiles["P"].rules, None);
        state.apply("/calico/v1/policy/profile/P/tags", None);
        assert!(state.profiles.is_empty());
        state.apply("/calico/bgp/v1/host/h1/ip_addr_v4", Some(b"172.31.250.1"));
        state.apply("/calico/bgp/v1/host/h1/ip_addr_v6", Some(b""));
        assert_eq!(state.host("h1").ip_v4, Some(Ipv4Addr::new(172, 31, 250, 1)));
        assert_eq!(state.host_as("h1"), AsNumber(64511));
        assert_eq!(
            state.apply("/calico/ipam/v2/handle/x", Some(b"{}")),
            Applied::Ignored
        );
    }
}
