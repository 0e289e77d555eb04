//! NAT-outgoing and IPIP (reference 3.9): `cali-POSTROUTING` masquerades traffic from pools with
//! `masquerade` to destinations outside every pool; the IPIP host set lists the hosts whose
//! IPIP packets `cali-INPUT` accepts.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::config::HostConfig;
use super::names::{ALL_HOSTS_SET, ALL_POOLS_SET, MASQ_POOLS_SET, POSTROUTING_CHAIN};
use crate::cluster::ClusterState;
use crate::desired::{IpSet, IpSetKind};
use crate::iptables::{Chain, IpFamily, Match, Rule, SetDirection, Target};

/// Kernel chain → our chain in the v4 nat table.
pub fn hooks() -> BTreeMap<String, String> {
    BTreeMap::from([("POSTROUTING".to_string(), POSTROUTING_CHAIN.to_string())])
}

/// `cali-POSTROUTING` (always present, empty unless a v4 pool masquerades) and, when one does,
/// the `cali4-masq-pools` and `cali4-all-pools` sets.
pub fn nat_outgoing(state: &ClusterState) -> (Vec<Chain>, Vec<IpSet>) {
    let v4_pools = || {
        state
            .pools
            .values()
            .filter(|p| matches!(p.cidr, IpNet::V4(_)))
    };
    let masq: Vec<IpNet> = v4_pools()
        .filter(|p| p.masquerade)
        .map(|p| p.cidr)
        .collect();
    let mut chain = Chain {
        name: POSTROUTING_CHAIN.into(),
        rules: Vec::new(),
    };
    if masq.is_empty() {
        return (vec![chain], Vec::new());
    }
    chain.rules.push(
        Rule::new(
            vec![
                Match::Set {
                    name: MASQ_POOLS_SET.into(),
                    direction: SetDirection::Src,
                    negate: false,
                },
                Match::Set {
                    name: ALL_POOLS_SET.into(),
                    direction: SetDirection::Dst,
                    negate: true,
                },
            ],
            Target::Masquerade,
        )
        .with_comment("nat outgoing"),
    );
    let set = |name: &str, members: Vec<IpNet>| IpSet {
        name: name.to_string(),
        family: IpFamily::V4,
        kind: IpSetKind::HashNet,
        members: members.into_iter().collect(),
    };
    let all = v4_pools().map(|p| p.cidr).collect();
    (
        vec![chain],
        vec![set(MASQ_POOLS_SET, masq), set(ALL_POOLS_SET, all)],
    )
}

/// `cali4-all-hosts` (every host's IPv4, `bird_ip` or BGP `ip_addr_v4`) when IPIP is enabled.
pub fn ipip_host_set(state: &ClusterState, cfg: &HostConfig) -> Option<IpSet> {
    if !cfg.ipip_enabled {
        return None;
    }
    let members = state
        .hosts
        .values()
        .flat_map(|h| [h.bird_ip, h.ip_v4])
        .flatten()
        .map(|ip| IpNet::from(IpAddr::V4(ip)))
        .collect();
    Some(IpSet {
        name: ALL_HOSTS_SET.into(),
        family: IpFamily::V4,
        kind: IpSetKind::HashIp,
        members,
    })
}
