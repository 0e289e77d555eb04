//! Tunnel addresses: what calico-node's `allocate-ipip-addr` did for IPIP (reference: IPIP in
//! Calico 2.x), and Calico v3 did for VXLAN. A host keeps its tunnel address while it lies in
//! an enabled pool of the overlay; otherwise it gets one through IPAM (from its affine blocks)
//! and the record is written in the same transaction as the assignment:
//!
//! - IPIP: `/calico/v1/host/<h>/config/IpInIpTunnelAddr` (the original's key, a bare address);
//! - VXLAN: `/calico/v1/host/<h>/vtep` (`{"ip": ..., "mac": ...}`, our extension), its MAC
//!   derived from the host name ([`Vtep::for_host`]).
//!
//! An address outside every enabled pool of its overlay (the pool was removed, or lost its
//! overlay) is released and its record deleted, as calico-node's `allocate-ipip-addr` did
//! before assigning anew; `node remove` releases both with the host's other addresses.

use std::net::{IpAddr, Ipv4Addr};

use calico_core::codec::Value;
use calico_core::compute::overlay::IPIP_TUNNEL_ADDR;
use calico_core::keys::{IpVersion, Key};
use calico_core::model::{IpPool, Vtep};
use ipnet::IpNet;

use super::{retry_on_conflict, AssignRequest, Datastore, DatastoreError, TxnPlan};

/// A tunnel address given to a host, or taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelAddrChange {
    /// `tunl0` or `vxlan.calico`.
    pub device: &'static str,
    pub ip: Ipv4Addr,
    /// Assigned (true) or released (false).
    pub assigned: bool,
}

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

const OVERLAYS: [(Overlay, &str); 2] = [(Overlay::Ipip, "tunl0"), (Overlay::Vxlan, "vxlan.calico")];

impl Datastore {
    /// Brings `host`'s tunnel addresses in line with the pools: an address outside every
    /// enabled pool of its overlay is released and its record deleted; then each overlay
    /// with an enabled pool gives the host an address if it has none in one.
    ///
    /// # Errors
    /// IPAM's (`PoolsExhausted`, ...) and the store's.
    pub async fn ensure_tunnel_addrs(
        &self,
        host: &str,
    ) -> Result<Vec<TunnelAddrChange>, DatastoreError> {
        calico_core::names::validate_hostname(host)?;
        let pools = self.list_pools(Some(IpVersion::V4)).await?;
        let mut out = Vec::new();
        for (overlay, device) in OVERLAYS {
            let mine: Vec<IpNet> = pools
                .iter()
                .filter(|p| overlay.wants(p))
                .map(|p| p.cidr)
                .collect();
            if let Some(ip) = self.release_stale(overlay, device, host, &mine).await? {
                out.push(TunnelAddrChange {
                    device,
                    ip,
                    assigned: false,
                });
            }
            if let Some(ip) = self
                .assign_tunnel_addr(overlay, device, host, &mine)
                .await?
            {
                out.push(TunnelAddrChange {
                    device,
                    ip,
                    assigned: true,
                });
            }
        }
        Ok(out)
    }

    /// The tunnel addresses `host`'s records hold that IPAM has under the host's tunnel
    /// handles (for `node remove` to release with its other addresses).
    ///
    /// # Errors
    /// The store's.
    pub async fn tunnel_addrs_of(&self, host: &str) -> Result<Vec<IpAddr>, DatastoreError> {
        let mut out = Vec::new();
        for (overlay, _) in OVERLAYS {
            if let Some(ip) = self.held_tunnel_addr(overlay, host).await? {
                out.push(IpAddr::V4(ip));
            }
        }
        Ok(out)
    }

    /// The address `host`'s record for `overlay` names, when IPAM has it under the host's
    /// handle: an address set by hand, or since given to someone else, is not ours to release.
    async fn held_tunnel_addr(
        &self,
        overlay: Overlay,
        host: &str,
    ) -> Result<Option<Ipv4Addr>, DatastoreError> {
        let Some(ip) = self
            .get(&overlay.key(host))
            .await?
            .and_then(|v| Overlay::address(&v.value))
        else {
            return Ok(None);
        };
        Ok(self
            .is_tunnel_addr_of(overlay, host, ip)
            .await?
            .then_some(ip))
    }

    /// Whether IPAM holds `ip` under `host`'s `overlay` tunnel handle.
    async fn is_tunnel_addr_of(
        &self,
        overlay: Overlay,
        host: &str,
        ip: Ipv4Addr,
    ) -> Result<bool, DatastoreError> {
        let info = self.ipam_info(IpAddr::V4(ip)).await?;
        Ok(info.and_then(|i| i.handle_id) == Some(overlay.handle(host)))
    }

    /// Releases `host`'s `overlay` address and deletes its record when the address lies in
    /// none of `mine`, the overlay's enabled pools. Returns the address released.
    async fn release_stale(
        &self,
        overlay: Overlay,
        device: &str,
        host: &str,
        mine: &[IpNet],
    ) -> Result<Option<Ipv4Addr>, DatastoreError> {
        let key = overlay.key(host);
        retry_on_conflict(&format!("releasing {host}'s {device} address"), || async {
            let Some(current) = self.get(&key).await? else {
                return Ok(None);
            };
            let ip = Overlay::address(&current.value);
            if ip.is_some_and(|ip| mine.iter().any(|p| p.contains(&IpAddr::V4(ip)))) {
                return Ok(None);
            }
            let mut plan = match ip {
                Some(ip) if self.is_tunnel_addr_of(overlay, host, ip).await? => {
                    self.plan_release(&[IpAddr::V4(ip)]).await?
                }
                _ => TxnPlan::default(),
            };
            plan.require_revision(&key, current.revision);
            plan.delete(&key);
            self.commit(plan).await?;
            Ok(ip)
        })
        .await
    }

    /// Gives `host` an `overlay` address from the first of `mine` unless its record already
    /// holds one in them. Returns the address assigned.
    async fn assign_tunnel_addr(
        &self,
        overlay: Overlay,
        device: &str,
        host: &str,
        mine: &[IpNet],
    ) -> Result<Option<Ipv4Addr>, DatastoreError> {
        let Some(first) = mine.first().copied() else {
            return Ok(None);
        };
        let key = overlay.key(host);
        retry_on_conflict(&format!("assigning a {device} address"), || async {
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
        .await
    }
}
