//! Tag ipsets (reference 3.8): one `hash:ip` set per tag and family that a compiled profile
//! rule references, holding the addresses of every active endpoint, on any host, one of whose
//! profiles carries the tag.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::names::{selector_set as selector_set_name, tag_set as tag_set_name};
use crate::cluster::ClusterState;
use crate::desired::{IpSet, IpSetKind};
use crate::iptables::IpFamily;
use crate::model::{EndpointState, WorkloadEndpoint};

/// The family of an address.
pub fn family_of(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The tags an endpoint carries: the union of its profiles' tags. Inactive endpoints carry none.
pub fn endpoint_tags<'a>(state: &'a ClusterState, ep: &'a WorkloadEndpoint) -> BTreeSet<&'a str> {
    if ep.state != EndpointState::Active {
        return BTreeSet::new();
    }
    profiles_tags(state, &ep.profile_ids)
}

/// The tags of the profiles named in `profile_ids` (those that exist).
pub fn profiles_tags<'a>(state: &'a ClusterState, profile_ids: &[String]) -> BTreeSet<&'a str> {
    profile_ids
        .iter()
        .filter_map(|p| state.profiles.get(p))
        .filter_map(|p| p.tags.as_ref())
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Members (both families) of each of `tags`, scanning every endpoint once.
pub fn tag_members<'a>(
    state: &'a ClusterState,
    tags: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<&'a str, BTreeSet<IpNet>> {
    let wanted: BTreeSet<&str> = tags.into_iter().map(String::as_str).collect();
    let mut out: BTreeMap<&str, BTreeSet<IpNet>> = BTreeMap::new();
    if wanted.is_empty() {
        return out;
    }
    for ep in state.endpoints.values() {
        for tag in endpoint_tags(state, ep) {
            if wanted.contains(tag) {
                out.entry(tag).or_default().extend(ep.nets());
            }
        }
    }
    out
}

/// The ipset of `tag` in `family`, keeping only the members of that family.
pub fn tag_set<'a>(
    tag: &str,
    family: IpFamily,
    members: impl IntoIterator<Item = &'a IpNet>,
) -> IpSet {
    IpSet {
        name: tag_set_name(tag, family),
        family,
        kind: IpSetKind::HashIp,
        members: members
            .into_iter()
            .filter(|n| family_of(n) == family)
            .copied()
            .collect(),
    }
}

/// The ipset of the selector with `unique_id` in `family`, keeping only that family's members.
pub fn selector_set<'a>(
    unique_id: &str,
    family: IpFamily,
    members: impl IntoIterator<Item = &'a IpNet>,
) -> IpSet {
    IpSet {
        name: selector_set_name(unique_id, family),
        family,
        kind: IpSetKind::HashIp,
        members: members
            .into_iter()
            .filter(|n| family_of(n) == family)
            .copied()
            .collect(),
    }
}
