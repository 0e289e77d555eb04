//! Host registration, global defaults, Felix and BGP config, BGP peers and the node mesh
//! (reference 1.2, 1.6, 1.7).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use calico_core::codec::Value;
use calico_core::keys::{IpVersion, Key, BGP_V1, IPAM_V2};
use calico_core::model::{
    AsNumber, BgpLogLevel, BgpPeer, NodeMesh, DEFAULT_AS, GLOBAL_CONFIG_DEFAULTS,
};

use super::{retry_on_conflict, unexpected, Datastore, DatastoreError, Listing, TxnPlan};

/// One host as registered under `/calico/bgp/v1/host/<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostRecord {
    pub hostname: String,
    pub ip_v4: Option<Ipv4Addr>,
    pub ip_v6: Option<Ipv6Addr>,
    /// `None`: inherits the global AS.
    pub as_num: Option<AsNumber>,
    pub peers: Vec<BgpPeer>,
}

fn config_key(host: &str, name: &str) -> Key {
    Key::HostConfig {
        host: host.to_string(),
        name: name.to_string(),
    }
}

impl Datastore {
    /// Writes the global defaults that are absent (reference 1.7: Felix config, `as_num`
    /// 64511, `node_mesh` on), then `Ready=true`, in one transaction.
    pub async fn ensure_global_config(&self) -> Result<(), DatastoreError> {
        retry_on_conflict("writing global config", || async {
            let mut wanted: Vec<(Key, Value)> = GLOBAL_CONFIG_DEFAULTS
                .iter()
                .map(|(name, value)| {
                    (
                        Key::GlobalConfig {
                            name: (*name).to_string(),
                        },
                        Value::Config((*value).to_string()),
                    )
                })
                .collect();
            wanted.push((Key::GlobalAsNum, Value::AsNum(AsNumber(DEFAULT_AS))));
            wanted.push((Key::NodeMesh, Value::NodeMesh(NodeMesh { enabled: true })));
            let mut plan = TxnPlan::default();
            for (key, value) in wanted {
                if self.store().get(&key.to_string()).await?.is_none() {
                    plan.require_absent(&key);
                    plan.put(&key, &value);
                }
            }
            plan.put(&Key::Ready, &Value::Ready(true));
            self.commit(plan).await?;
            Ok(())
        })
        .await
    }

    /// Registers `host` (reference 2.1 step 7) in one transaction: `bird_ip`, `ip_addr_v4`,
    /// `ip_addr_v6` (`""` when none), `as_num` (deleted when `None`),
    /// `DefaultEndpointToHostAction=RETURN` and `marker=created`.
    pub async fn register_host(
        &self,
        host: &str,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
        as_num: Option<AsNumber>,
    ) -> Result<(), DatastoreError> {
        calico_core::names::validate_hostname(host)?;
        let mut plan = TxnPlan::default();
        let h = host.to_string();
        plan.put(&Key::BirdIp { host: h.clone() }, &Value::BirdIp(ip));
        plan.put(
            &Key::HostIp {
                host: h.clone(),
                version: IpVersion::V4,
            },
            &Value::HostIp(Some(IpAddr::V4(ip))),
        );
        plan.put(
            &Key::HostIp {
                host: h.clone(),
                version: IpVersion::V6,
            },
            &Value::HostIp(ip6.map(IpAddr::V6)),
        );
        let as_key = Key::HostAsNum { host: h.clone() };
        match as_num {
            Some(asn) => plan.put(&as_key, &Value::AsNum(asn)),
            None => plan.delete(&as_key),
        }
        plan.put(
            &config_key(host, "DefaultEndpointToHostAction"),
            &Value::Config("RETURN".into()),
        );
        plan.put(
            &config_key(host, "marker"),
            &Value::Config("created".into()),
        );
        self.commit(plan).await?;
        Ok(())
    }

    /// Deletes everything of `host`: its Felix tree, its BGP tree and its IPAM affinities, in
    /// one transaction. Returns how many keys were deleted.
    pub async fn remove_host(&self, host: &str) -> Result<usize, DatastoreError> {
        calico_core::names::validate_hostname(host)?;
        let mut plan = TxnPlan::default();
        for prefix in [
            Key::host_dir(host),
            Key::bgp_host_dir(host),
            format!("{IPAM_V2}host/{host}/"),
        ] {
            for key in self.list_keys(&prefix).await? {
                plan.delete(key);
            }
        }
        let n = plan.ops.len();
        self.commit(plan).await?;
        Ok(n)
    }

    /// The host's BGP addresses (`ip_addr_v4`, `ip_addr_v6`); `None` where absent or `""`.
    pub async fn host_ips(
        &self,
        host: &str,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), DatastoreError> {
        let mut out = (None, None);
        for version in [IpVersion::V4, IpVersion::V6] {
            let key = Key::HostIp {
                host: host.to_string(),
                version,
            };
            match self.get(&key).await?.map(|v| v.value) {
                None | Some(Value::HostIp(None)) => {}
                Some(Value::HostIp(Some(IpAddr::V4(ip)))) => out.0 = Some(ip),
                Some(Value::HostIp(Some(IpAddr::V6(ip)))) => out.1 = Some(ip),
                Some(_) => return Err(unexpected(&key)),
            }
        }
        Ok(out)
    }

    /// Every host registered in the BGP tree, sorted by name.
    pub async fn list_hosts(&self) -> Result<Vec<HostRecord>, DatastoreError> {
        let mut hosts: BTreeMap<String, HostRecord> = BTreeMap::new();
        for (key, item) in self.list(&format!("{BGP_V1}host/")).await? {
            let host = match &key {
                Key::HostIp { host, .. } | Key::HostAsNum { host } | Key::HostPeer { host, .. } => {
                    host.clone()
                }
                _ => continue,
            };
            let rec = hosts.entry(host.clone()).or_insert_with(|| HostRecord {
                hostname: host,
                ..HostRecord::default()
            });
            match item.value {
                Value::HostIp(Some(IpAddr::V4(ip))) => rec.ip_v4 = Some(ip),
                Value::HostIp(Some(IpAddr::V6(ip))) => rec.ip_v6 = Some(ip),
                Value::HostIp(None) => {}
                Value::AsNum(asn) => rec.as_num = Some(asn),
                Value::Peer(peer) => rec.peers.push(peer),
                _ => return Err(unexpected(&key)),
            }
        }
        Ok(hosts.into_values().collect())
    }

    /// Adds (or overwrites) a BGP peer: global when `host` is `None`, else per host.
    pub async fn put_bgp_peer(
        &self,
        host: Option<&str>,
        peer: &BgpPeer,
    ) -> Result<(), DatastoreError> {
        let key = peer_key(host, peer.ip);
        self.put(&key, &Value::Peer(peer.clone())).await?;
        Ok(())
    }

    /// Removes a BGP peer.
    ///
    /// # Errors
    /// `PeerNotFound` when there is none with this IP.
    pub async fn remove_bgp_peer(
        &self,
        host: Option<&str>,
        ip: IpAddr,
    ) -> Result<(), DatastoreError> {
        if self.delete(&peer_key(host, ip)).await? {
            Ok(())
        } else {
            Err(DatastoreError::PeerNotFound { ip })
        }
    }

    /// The BGP peers of one family (or both), global or of one host, sorted by IP.
    pub async fn list_bgp_peers(
        &self,
        host: Option<&str>,
        version: Option<IpVersion>,
    ) -> Result<Vec<BgpPeer>, DatastoreError> {
        self.list_bgp_peers_lenient(host, version).await?.strict()
    }

    /// As [`list_bgp_peers`](Self::list_bgp_peers), with the undecodable peer records
    /// beside them.
    pub async fn list_bgp_peers_lenient(
        &self,
        host: Option<&str>,
        version: Option<IpVersion>,
    ) -> Result<Listing<Vec<BgpPeer>>, DatastoreError> {
        let prefix = match host {
            None => format!("{BGP_V1}global/peer_v"),
            Some(h) => format!("{BGP_V1}host/{h}/peer_v"),
        };
        let listing = self.list_lenient(&prefix).await?;
        let mut peers = Vec::new();
        for (key, item) in listing.items {
            match item.value {
                Value::Peer(peer) => {
                    if version.is_none_or(|v| v == IpVersion::of_addr(&peer.ip)) {
                        peers.push(peer);
                    }
                }
                _ => return Err(unexpected(&key)),
            }
        }
        peers.sort_by_key(|p| p.ip);
        Ok(Listing {
            items: peers,
            broken: listing.broken,
        })
    }

    /// Whether the node-to-node mesh is on (on when unset).
    pub async fn node_mesh(&self) -> Result<bool, DatastoreError> {
        match self.get(&Key::NodeMesh).await?.map(|v| v.value) {
            None => Ok(true),
            Some(Value::NodeMesh(m)) => Ok(m.enabled),
            Some(_) => Err(unexpected(&Key::NodeMesh)),
        }
    }

    pub async fn set_node_mesh(&self, enabled: bool) -> Result<(), DatastoreError> {
        self.put(&Key::NodeMesh, &Value::NodeMesh(NodeMesh { enabled }))
            .await?;
        Ok(())
    }

    /// The global default AS (64511 when unset).
    pub async fn default_as(&self) -> Result<AsNumber, DatastoreError> {
        match self.get(&Key::GlobalAsNum).await?.map(|v| v.value) {
            None => Ok(AsNumber(DEFAULT_AS)),
            Some(Value::AsNum(asn)) => Ok(asn),
            Some(_) => Err(unexpected(&Key::GlobalAsNum)),
        }
    }

    pub async fn set_default_as(&self, asn: AsNumber) -> Result<(), DatastoreError> {
        self.put(&Key::GlobalAsNum, &Value::AsNum(asn)).await?;
        Ok(())
    }

    /// Sets BIRD's log level, globally or for one host.
    pub async fn set_bgp_loglevel(
        &self,
        host: Option<&str>,
        level: BgpLogLevel,
    ) -> Result<(), DatastoreError> {
        let key = match host {
            None => Key::GlobalBgpLogLevel,
            Some(h) => Key::HostBgpLogLevel {
                host: h.to_string(),
            },
        };
        self.put(&key, &Value::LogLevel(level)).await?;
        Ok(())
    }

    /// A global Felix parameter (`/calico/v1/config/<name>`).
    pub async fn felix_config(&self, name: &str) -> Result<Option<String>, DatastoreError> {
        let key = global_config_key(name)?;
        match self.get(&key).await?.map(|v| v.value) {
            None => Ok(None),
            Some(Value::Config(s)) => Ok(Some(s)),
            Some(_) => Err(unexpected(&key)),
        }
    }

    /// Sets (`Some`) or removes (`None`) a global Felix parameter.
    pub async fn set_felix_config(
        &self,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), DatastoreError> {
        let key = global_config_key(name)?;
        match value {
            Some(v) => {
                self.put(&key, &Value::Config(v.to_string())).await?;
            }
            None => {
                self.delete(&key).await?;
            }
        }
        Ok(())
    }
}

fn global_config_key(name: &str) -> Result<Key, DatastoreError> {
    calico_core::names::validate_name("config name", name)?;
    Ok(Key::GlobalConfig {
        name: name.to_string(),
    })
}

fn peer_key(host: Option<&str>, ip: IpAddr) -> Key {
    match host {
        None => Key::GlobalPeer { ip },
        Some(h) => Key::HostPeer {
            host: h.to_string(),
            ip,
        },
    }
}
