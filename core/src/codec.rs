//! Values: decoding the bytes stored under a [`Key`] into the typed model, and encoding back.
//! Decoding never panics; a bad value is a `ModelError::Decode` naming the key.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::keys::Key;
use crate::model::{
    validate_labels, AllocationBlock, AsNumber, BgpLogLevel, BgpPeer, FelixStatus, HostEndpoint,
    IpPool, IpamHandle, LabelMap, NodeMesh, Policy, Rules, Vtep, WorkloadEndpoint,
};
use crate::names::validate_name;
use crate::ModelError;

/// A decoded value; which variant follows from the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Ready(bool),
    /// A raw Felix config string (global or per host, including `marker`).
    Config(String),
    BirdIp(Ipv4Addr),
    Vtep(Vtep),
    Endpoint(WorkloadEndpoint),
    Tags(Vec<String>),
    Rules(Rules),
    /// A profile's labels.
    Labels(LabelMap),
    Policy(Policy),
    HostEndpoint(HostEndpoint),
    Pool(IpPool),
    AsNum(AsNumber),
    NodeMesh(NodeMesh),
    LogLevel(BgpLogLevel),
    Peer(BgpPeer),
    /// A host's BGP address; `None` for the `""` written when the host has none of the family.
    HostIp(Option<IpAddr>),
    /// A host's subnet (`network_v4` / `network_v6`).
    HostNetwork(IpNet),
    Block(AllocationBlock),
    Affinity,
    Handle(IpamHandle),
    Status(FelixStatus),
}

fn json<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|e| decode_err(key, e))
}

fn text<'a>(key: &Key, bytes: &'a [u8]) -> Result<&'a str, ModelError> {
    std::str::from_utf8(bytes)
        .map(str::trim)
        .map_err(|e| decode_err(key, e))
}

fn decode_err(key: &Key, reason: impl ToString) -> ModelError {
    ModelError::Decode {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Refuses config values compute could not use where a wrong value would weaken the host's
/// protection (the failsafe lists): such a record is treated as absent, so the default holds.
fn validate_config(name: &str, value: &str) -> Result<(), ModelError> {
    use crate::compute::config::{
        parse_failsafe_ports, FAILSAFE_INBOUND_KEY, FAILSAFE_OUTBOUND_KEY,
    };
    match name {
        FAILSAFE_INBOUND_KEY => parse_failsafe_ports(FAILSAFE_INBOUND_KEY, value).map(drop),
        FAILSAFE_OUTBOUND_KEY => parse_failsafe_ports(FAILSAFE_OUTBOUND_KEY, value).map(drop),
        _ => Ok(()),
    }
}

/// Decodes and validates the value stored under `key`.
///
/// # Errors
/// `ModelError::Decode` naming the key when the bytes are not a valid value for it.
pub fn decode(key: &Key, bytes: &[u8]) -> Result<Value, ModelError> {
    let invalid = |e: ModelError| decode_err(key, e);
    Ok(match key {
        Key::Ready => Value::Ready(text(key, bytes)? == "true"),
        Key::GlobalConfig { name } | Key::HostConfig { name, .. } => {
            let value = text(key, bytes)?;
            validate_config(name, value).map_err(invalid)?;
            Value::Config(value.to_string())
        }
        Key::BirdIp { .. } => {
            Value::BirdIp(text(key, bytes)?.parse().map_err(|e| decode_err(key, e))?)
        }
        Key::HostVtep { .. } => {
            let vtep: Vtep = json(key, bytes)?;
            vtep.validate().map_err(invalid)?;
            Value::Vtep(vtep)
        }
        Key::Endpoint(_) => Value::Endpoint(json(key, bytes)?),
        Key::ProfileTags { .. } => {
            let tags: Vec<String> = json(key, bytes)?;
            for t in &tags {
                validate_name("tag", t).map_err(invalid)?;
            }
            Value::Tags(tags)
        }
        Key::ProfileRules { .. } => {
            let mut rules: Rules = json(key, bytes)?;
            rules.validate().map_err(invalid)?;
            Value::Rules(rules)
        }
        Key::ProfileLabels { .. } => {
            let labels: LabelMap = json(key, bytes)?;
            validate_labels(&labels).map_err(invalid)?;
            Value::Labels(labels)
        }
        Key::Policy { .. } => {
            let mut policy: Policy = json(key, bytes)?;
            policy.validate().map_err(invalid)?;
            Value::Policy(policy)
        }
        Key::HostEndpoint(_) => {
            let hep: HostEndpoint = json(key, bytes)?;
            hep.validate().map_err(invalid)?;
            Value::HostEndpoint(hep)
        }
        Key::Pool { cidr } => {
            let mut pool: IpPool = json(key, bytes)?;
            pool.validate().map_err(invalid)?;
            pool.cidr = pool.cidr.trunc();
            if pool.cidr != *cidr {
                return Err(decode_err(
                    key,
                    format!("pool cidr {} does not match its key", pool.cidr),
                ));
            }
            Value::Pool(pool)
        }
        Key::GlobalAsNum | Key::HostAsNum { .. } => {
            Value::AsNum(text(key, bytes)?.parse().map_err(invalid)?)
        }
        Key::NodeMesh => Value::NodeMesh(json(key, bytes)?),
        Key::GlobalBgpLogLevel | Key::HostBgpLogLevel { .. } => {
            Value::LogLevel(text(key, bytes)?.parse().map_err(invalid)?)
        }
        Key::GlobalPeer { ip } | Key::HostPeer { ip, .. } => {
            let peer: BgpPeer = json(key, bytes)?;
            if peer.ip != *ip {
                return Err(decode_err(
                    key,
                    format!("peer ip {} does not match its key", peer.ip),
                ));
            }
            Value::Peer(peer)
        }
        Key::HostIp { version, .. } => {
            let s = text(key, bytes)?;
            if s.is_empty() {
                Value::HostIp(None)
            } else {
                let ip: IpAddr = s.parse().map_err(|e| decode_err(key, e))?;
                if crate::keys::IpVersion::of_addr(&ip) != *version {
                    return Err(decode_err(key, format!("{ip} is of the wrong IP version")));
                }
                Value::HostIp(Some(ip))
            }
        }
        Key::HostNetwork { version, .. } => {
            let net: IpNet = text(key, bytes)?.parse().map_err(|e| decode_err(key, e))?;
            if crate::keys::IpVersion::of_addr(&net.addr()) != *version {
                return Err(decode_err(key, format!("{net} is of the wrong IP version")));
            }
            Value::HostNetwork(net.trunc())
        }
        Key::IpamBlock { .. } => Value::Block(json(key, bytes)?),
        Key::IpamAffinity { .. } => Value::Affinity,
        Key::IpamHandle { .. } => Value::Handle(json(key, bytes)?),
        Key::FelixStatus { .. } | Key::FelixLastReported { .. } => Value::Status(json(key, bytes)?),
    })
}

/// Encodes a value as the original stored it: JSON for objects, bare strings for scalars.
pub fn encode(value: &Value) -> Vec<u8> {
    fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
        // Serialising these plain structs to a Vec cannot fail (string keys, no custom errors).
        serde_json::to_vec(v).unwrap_or_default()
    }
    match value {
        Value::Ready(b) => b.to_string().into_bytes(),
        Value::Config(s) => s.clone().into_bytes(),
        Value::BirdIp(ip) => ip.to_string().into_bytes(),
        Value::Vtep(vtep) => to_json(vtep),
        Value::Endpoint(ep) => to_json(ep),
        Value::Tags(tags) => to_json(tags),
        Value::Rules(rules) => to_json(rules),
        Value::Labels(labels) => to_json(labels),
        Value::Policy(policy) => to_json(policy),
        Value::HostEndpoint(hep) => to_json(hep),
        Value::Pool(pool) => to_json(pool),
        Value::AsNum(asn) => asn.to_string().into_bytes(),
        Value::NodeMesh(mesh) => to_json(mesh),
        Value::LogLevel(level) => level.to_string().into_bytes(),
        Value::Peer(peer) => to_json(peer),
        Value::HostIp(ip) => ip.map(|ip| ip.to_string()).unwrap_or_default().into_bytes(),
        Value::HostNetwork(net) => net.to_string().into_bytes(),
        Value::Block(block) => to_json(block),
        Value::Affinity => Vec::new(),
        Value::Handle(handle) => to_json(handle),
        Value::Status(status) => to_json(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_keys() -> Vec<Key> {
        [
            "/calico/v1/Ready",
            "/calico/v1/config/InterfacePrefix",
            "/calico/v1/host/h/bird_ip",
            "/calico/v1/host/h/workload/docker/w/endpoint/e",
            "/calico/v1/policy/profile/P/tags",
            "/calico/v1/policy/profile/P/rules",
            "/calico/v1/policy/profile/P/labels",
            "/calico/v1/policy/tier/default/policy/p",
            "/calico/v1/host/h/endpoint/eth0",
            "/calico/v1/ipam/v4/pool/192.168.0.0-16",
            "/calico/bgp/v1/global/as_num",
            "/calico/bgp/v1/global/node_mesh",
            "/calico/bgp/v1/global/loglevel",
            "/calico/bgp/v1/global/peer_v4/10.0.0.1",
            "/calico/bgp/v1/host/h/ip_addr_v6",
            "/calico/ipam/v2/assignment/ipv4/block/192.168.1.0-26",
            "/calico/ipam/v2/handle/x",
            "/calico/felix/v1/host/h/status",
        ]
        .iter()
        .map(|k| Key::parse(k).unwrap())
        .collect()
    }

    #[test]
    fn seed_endpoint_json_round_trips_exactly() {
        let key = Key::parse("/calico/v1/host/h/workload/docker/w/endpoint/e").unwrap();
        let raw = r#"{"state":"active","name":"cali1f0e3a5c6d7","mac":"ee:ee:ee:ee:ee:ee","profile_ids":[],"ipv4_nets":["192.168.0.1/32"],"ipv6_nets":[],"ipv4_gateway":"10.0.0.1","ipv6_gateway":null}"#;
        let value = decode(&key, raw.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(encode(&value)).unwrap(), raw);
    }

    #[test]
    fn default_profile_rules_are_the_originals() {
        let json =
            String::from_utf8(encode(&Value::Rules(Rules::default_for("PROF_A_B")))).unwrap();
        assert_eq!(
            json,
            r#"{"id":"PROF_A_B","inbound_rules":[{"action":"allow","src_tag":"PROF_A_B"}],"outbound_rules":[{"action":"allow"}]}"#
        );
    }

    #[test]
    fn policy_records_of_calicoctl_1x_decode() {
        let cases = [
            (
                "/calico/v1/host/rack1-host1/workload/k8s/default.frontend-5gs43/endpoint/eth0",
                r#"{"state":"active","name":"cali0ef24ba","active_instance_id":"","mac":"ca:fe:1d:52:bb:e9","profile_ids":["profile1"],"ipv4_nets":["192.168.0.5/32"],"ipv6_nets":[],"labels":{"app":"frontend","calico/k8s_ns":"default"}}"#,
            ),
            (
                "/calico/v1/policy/profile/profile1/labels",
                r#"{"profile":"profile1"}"#,
            ),
            (
                "/calico/v1/policy/tier/default/policy/allow-tcp-6379",
                r#"{"inbound_rules":[{"action":"allow","protocol":"tcp","src_selector":"role == 'frontend'","dst_ports":[6379]}],"outbound_rules":[{"action":"allow"}],"selector":"role == 'database'","types":["ingress","egress"]}"#,
            ),
            (
                "/calico/v1/host/myhost/endpoint/eth0",
                r#"{"name":"eth0","expected_ipv4_addrs":["192.168.0.1","192.168.0.2"],"labels":{"type":"production"},"profile_ids":["profile1","profile2"]}"#,
            ),
        ];
        for (key, raw) in cases {
            let key = Key::parse(key).unwrap();
            let value = decode(&key, raw.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let again = decode(&key, &encode(&value)).unwrap();
            assert_eq!(again, value, "{key}");
        }
        let key = Key::parse("/calico/v1/policy/tier/default/policy/p").unwrap();
        let err = decode(&key, br#"{"selector":"role =="}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("/calico/v1/policy/tier/default/policy/p"),
            "{err}"
        );
        assert!(err.to_string().contains("column 8"), "{err}");
        let key = Key::parse("/calico/v1/policy/profile/P/labels").unwrap();
        let err = decode(&key, br#"{"a":"b-"}"#).unwrap_err();
        assert!(err.to_string().contains("labels"), "{err}");
    }

    #[test]
    fn legacy_profile_id_becomes_a_list() {
        let key = Key::parse("/calico/v1/host/h/workload/docker/w/endpoint/e").unwrap();
        let raw = r#"{"state":"active","name":"caliX","mac":"EE-EE-EE-EE-EE-01","profile_id":"A"}"#;
        let Value::Endpoint(ep) = decode(&key, raw.as_bytes()).unwrap() else {
            panic!("not an endpoint")
        };
        assert_eq!(ep.profile_ids, vec!["A".to_string()]);
        assert_eq!(ep.mac.to_string(), "ee:ee:ee:ee:ee:01");
    }

    #[test]
    fn invalid_rules_are_rejected_naming_the_key() {
        let key = Key::parse("/calico/v1/policy/profile/P/rules").unwrap();
        for bad in [
            r#"{"inbound_rules":[{"dst_ports":[80]}],"outbound_rules":[]}"#,
            r#"{"inbound_rules":[{"protocol":"icmp","icmp_code":1}],"outbound_rules":[]}"#,
            r#"{"inbound_rules":[{"protocol":0}],"outbound_rules":[]}"#,
            r#"{"inbound_rules":[{"src_tag":"a b"}],"outbound_rules":[]}"#,
            r#"{"inbound_rules":[]}"#,
            r#"{"inbound_rules":[{"bogus":1}],"outbound_rules":[]}"#,
        ] {
            let err = decode(&key, bad.as_bytes()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("/calico/v1/policy/profile/P/rules"),
                "{err}"
            );
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for key in sample_keys() {
                let _ = decode(&key, &bytes);
            }
        }

        #[test]
        fn decoders_never_panic_on_json_like_text(s in r#"[\[\]{}",:a-z0-9_ ./-]{0,80}"#) {
            for key in sample_keys() {
                let _ = decode(&key, s.as_bytes());
            }
        }
    }
}
