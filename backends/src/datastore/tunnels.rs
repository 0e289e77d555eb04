//! Tunnel addresses: what calico-node's `allocate-ipip-addr` did for IPIP (reference: IPIP in
//! Calico 2.x), and Calico v3 did for VXLAN. A host keeps its tunnel address while it lies in
//! an enabled pool of the overlay; otherwise it gets one through IPAM (from its affine blocks)
//! and the record is written in the same transaction as the assignment:
//!
//! - IPIP: `/calico/v1/host/<h>/config/IpInIpTunnelAddr` (the original's key, a bare address);
//! - VXLAN: `/calico/v1/host/<h>/vtep` (`{"ip": ..., "mac": ...}`, our extension), its MAC
//!   derived from the host name ([`Vtep::for_host`]).

use std::net::{IpAddr, Ipv4Addr};

use calico_core::codec::Value;
use calico_core::compute::overlay::IPIP_TUNNEL_ADDR;
use calico_core::keys::{IpVersion, Key};
use calico_core::model::{IpPool, Vtep};
use ipnet::IpNet;

use super::{retry_on_conflict, AssignRequest, Datastore, DatastoreError};

/// Which overlay a tunnel address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlay {
    Ipip,
    Vxlan,
}

impl Overlay {
    fn wants(self, pool: &IpPool) -> bool {
        !pool.disabled
            && match self {
                Overlay::Ipip => pool.ipip.is_some(),
                Overlay::Vxlan => pool.vxlan,
            }
    }

    fn handle(self, host: &str) -> String {
        match self {
            Overlay::Ipip => format!("ipip-tunnel-addr-{host}"),
            Overlay::Vxlan => format!("vxlan-tunnel-addr-{host}"),
        }
    }

    fn key(self, host: &str) -> Key {
        match self {
            Overlay::Ipip => Key::HostConfig {
                host: host.to_string(),
                name: IPIP_TUNNEL_ADDR.to_string(),
            },
            Overlay::Vxlan => Key::HostVtep {
                host: host.to_string(),
            },
        }
    }

    fn value(self, host: &str, ip: Ipv4Addr) -> Value {
        match self {
            Overlay::Ipip => Value::Config(ip.to_string()),
            Overlay::Vxlan => Value::Vtep(Vtep::for_host(host, ip)),
        }
    }

    fn address(value: &Value) -> Option<Ipv4Addr> {
        match value {
            Value::Config(s) => s.trim().parse().ok(),
            Value::Vtep(v) => Some(v.ip),
            _ => None,
        }
    }
}

impl Datastore {
    /// Gives `host` a tunnel address for each overlay (IPIP, VXLAN) that has an enabled pool
    /// and that it has no address in yet. Returns the addresses assigned, as
    /// `(device, address)`.
    ///
    /// # Errors
    /// IPAM's (`PoolsExhausted`, ...) and the store's.
    pub async fn ensure_tunnel_addrs(
        &self,
        host: &str,
    ) -> Result<Vec<(&'static str, Ipv4Addr)>, DatastoreError> {
        calico_core::names::validate_hostname(host)?;
        let pools = self.list_pools(Some(IpVersion::V4)).await?;
        let mut out = Vec::new();
        for (overlay, dev) in [(Overlay::Ipip, "tunl0"), (Overlay::Vxlan, "vxlan.calico")] {
            let mine: Vec<IpNet> = pools
                .iter()
                .filter(|p| overlay.wants(p))
                .map(|p| p.cidr)
                .collect();
            let Some(first) = mine.first().copied() else {
                continue;
            };
            let key = overlay.key(host);
            let assigned = retry_on_conflict(&format!("assigning a {dev} address"), || async {
                let current = self.get(&key).await?;
                let held = current
                    .as_ref()
                    .and_then(|v| Overlay::address(&v.value))
                    .filter(|ip| mine.iter().any(|p| p.contains(&IpAddr::V4(*ip))));
                if held.is_some() {
                    return Ok(None);
                }
                let (ip, mut plan) = self
                    .plan_assign(AssignRequest::Pool(first), &overlay.handle(host), host)
                    .await?;
                let IpAddr::V4(ip) = ip else {
                    return Err(DatastoreError::NoPool { version: 4 });
                };
                match &current {
                    Some(v) => plan.require_revision(&key, v.revision),
                    None => plan.require_absent(&key),
                }
                plan.put(&key, &overlay.value(host, ip));
                self.commit(plan).await?;
                Ok(Some(ip))
            })
            .await?;
            out.extend(assigned.map(|ip| (dev, ip)));
        }
        Ok(out)
    }
}
