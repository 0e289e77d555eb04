//! Names of our chains and ipsets, shortened with [`uniquely_shorten`] so they fit the kernel.
//!
//! Budgets: chains at most [`MAX_CHAIN_LEN`] (28) characters, ipsets at most [`MAX_IPSET_LEN`]
//! (31). Every ipset we own starts with `cali4-` or `cali6-`; the Linux dataplane builds a full
//! rewrite in [`temp_ipset_name`] (the same name with the `-` after the family digit replaced by
//! `_`, so `cali4-t-web` → `cali4_t-web`): the same length as the real name, and never the name of
//! a set we own, so a restore can fill the temp set and `swap` it in.

use crate::iptables::IpFamily;
use crate::names::uniquely_shorten;

/// iptables' chain name limit.
pub const MAX_CHAIN_LEN: usize = 28;
/// ipset's name limit (IPSET_MAXNAMELEN 32 minus the NUL).
pub const MAX_IPSET_LEN: usize = 31;

pub const FORWARD_CHAIN: &str = "cali-FORWARD";
pub const INPUT_CHAIN: &str = "cali-INPUT";
pub const OUTPUT_CHAIN: &str = "cali-OUTPUT";
pub const POSTROUTING_CHAIN: &str = "cali-POSTROUTING";
pub const FROM_WL_DISPATCH: &str = "cali-from-wl-dispatch";
pub const TO_WL_DISPATCH: &str = "cali-to-wl-dispatch";
/// Dispatches traffic arriving at this host to its host endpoints' `cali-fh-` chains.
pub const FROM_HOST_ENDPOINT: &str = "cali-from-host-endpoint";
/// Dispatches traffic this host sends to its host endpoints' `cali-th-` chains.
pub const TO_HOST_ENDPOINT: &str = "cali-to-host-endpoint";
/// Felix's inbound failsafe ports: always open on host endpoints.
pub const FAILSAFE_IN: &str = "cali-failsafe-in";
/// Felix's outbound failsafe ports: always open on host endpoints.
pub const FAILSAFE_OUT: &str = "cali-failsafe-out";
const FROM_HOST_PREFIX: &str = "cali-fh-";
const TO_HOST_PREFIX: &str = "cali-th-";

/// `cali-fh-<id>`: inbound policy of the host endpoint with id `id`.
pub fn from_host_chain(id: &str) -> String {
    with_prefix(FROM_HOST_PREFIX, id, MAX_CHAIN_LEN)
}

/// `cali-th-<id>`: outbound policy of the host endpoint with id `id`.
pub fn to_host_chain(id: &str) -> String {
    with_prefix(TO_HOST_PREFIX, id, MAX_CHAIN_LEN)
}

const FROM_WL_PREFIX: &str = "cali-fw-";
const TO_WL_PREFIX: &str = "cali-tw-";
const PROFILE_IN_PREFIX: &str = "cali-pri-";
const PROFILE_OUT_PREFIX: &str = "cali-pro-";
const TAG_SET_PREFIX: &str = "-t-";
const POLICY_IN_PREFIX: &str = "cali-pi-";
const POLICY_OUT_PREFIX: &str = "cali-po-";

fn with_prefix(prefix: &str, name: &str, max: usize) -> String {
    format!("{prefix}{}", uniquely_shorten(name, max - prefix.len()))
}

/// `cali-fw-<iface>`: outbound policy of the workload behind `iface` (traffic *from* it).
pub fn from_wl_chain(iface: &str) -> String {
    with_prefix(FROM_WL_PREFIX, iface, MAX_CHAIN_LEN)
}

/// `cali-tw-<iface>`: inbound policy of the workload behind `iface` (traffic *to* it).
pub fn to_wl_chain(iface: &str) -> String {
    with_prefix(TO_WL_PREFIX, iface, MAX_CHAIN_LEN)
}

/// `cali-pri-<profile>`: a profile's inbound rules.
pub fn profile_inbound_chain(profile: &str) -> String {
    with_prefix(PROFILE_IN_PREFIX, profile, MAX_CHAIN_LEN)
}

/// `cali-pro-<profile>`: a profile's outbound rules.
pub fn profile_outbound_chain(profile: &str) -> String {
    with_prefix(PROFILE_OUT_PREFIX, profile, MAX_CHAIN_LEN)
}

/// `cali4` or `cali6`: the prefix of every ipset we own in a family.
pub fn ipset_family_prefix(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "cali4",
        IpFamily::V6 => "cali6",
    }
}

/// `cali4-t-<tag>`: the members of a tag (tags get the `t-` infix so no tag can collide with
/// the fixed sets such as `cali4-all-pools`).
pub fn tag_set(tag: &str, family: IpFamily) -> String {
    let prefix = format!("{}{TAG_SET_PREFIX}", ipset_family_prefix(family));
    with_prefix(&prefix, tag, MAX_IPSET_LEN)
}

/// `cali4-s:<id>`: the members of a selector, by its unique id (`s:<base64>`), cut to the
/// ipset limit as the original did (the id is a hash; its first 23 characters keep it unique).
pub fn selector_set(unique_id: &str, family: IpFamily) -> String {
    let mut name = format!("{}-{unique_id}", ipset_family_prefix(family));
    name.truncate(MAX_IPSET_LEN);
    name
}

/// `cali-pi-<policy>`: a policy's inbound rules.
pub fn policy_inbound_chain(policy: &str) -> String {
    with_prefix(POLICY_IN_PREFIX, policy, MAX_CHAIN_LEN)
}

/// `cali-po-<policy>`: a policy's outbound rules.
pub fn policy_outbound_chain(policy: &str) -> String {
    with_prefix(POLICY_OUT_PREFIX, policy, MAX_CHAIN_LEN)
}

/// `cali4-masq-pools`: pools with NAT-outgoing.
pub const MASQ_POOLS_SET: &str = "cali4-masq-pools";
/// `cali4-all-pools`: every v4 pool.
pub const ALL_POOLS_SET: &str = "cali4-all-pools";
/// `cali4-all-hosts`: every calico host's IPv4, the only allowed IPIP sources.
pub const ALL_HOSTS_SET: &str = "cali4-all-hosts";

/// The temporary name the dataplane fills before swapping a set in (see the module docs).
pub fn temp_ipset_name(name: &str) -> String {
    let mut out = name.to_string();
    if out.len() > 5 && out.is_char_boundary(5) && out.is_char_boundary(6) {
        out.replace_range(5..6, "_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_keep_their_prefix() {
        let long = "a".repeat(100);
        assert_eq!(profile_inbound_chain("PROF_A_B"), "cali-pri-PROF_A_B");
        let chain = profile_outbound_chain(&long);
        assert_eq!(chain.len(), MAX_CHAIN_LEN);
        assert!(chain.starts_with("cali-pro-_"), "{chain}");
        let set = tag_set(&long, IpFamily::V6);
        assert_eq!(set.len(), MAX_IPSET_LEN);
        assert!(set.starts_with("cali6-t-_"), "{set}");
        assert_eq!(from_wl_chain("cali0123456789a"), "cali-fw-cali0123456789a");
        assert_eq!(temp_ipset_name("cali4-t-web"), "cali4_t-web");
        assert_eq!(temp_ipset_name(&set).len(), set.len());
    }
}
