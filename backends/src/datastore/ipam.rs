//! Block IPAM (reference 1.8): 64-address blocks (/26, /122) with host affinity.
//!
//! Reservation is split into *planning* (read blocks and handles, decide, return the compares
//! and writes as a [`TxnPlan`]) and *committing*, so `calicoctl container add` can commit the
//! reservation and the endpoint in one transaction and retry both on conflict.
//!
//! Auto-assign order: blocks affine to this host, then a free block claimed by scanning the
//! pool's blocks in order, then borrowing a free address from any other block of the pool.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use calico_core::codec::Value;
use calico_core::keys::{IpVersion, Key, IPAM_V2};
use calico_core::model::{AllocationAttribute, AllocationBlock, IpPool, IpamHandle, BLOCK_SIZE};
use ipnet::IpNet;

use super::{retry_on_conflict, unexpected, Datastore, DatastoreError, TxnPlan, Versioned};

/// What address to assign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignRequest {
    /// Exactly this address; it must lie in an enabled pool and be free.
    Ip(IpAddr),
    /// Any free address of this family from the enabled IPAM pools.
    Auto(IpVersion),
    /// Any free address from the pool with exactly this CIDR.
    Pool(IpNet),
}

/// Who holds an address (`calicoctl ipam info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamInfo {
    pub ip: IpAddr,
    pub block: IpNet,
    pub affinity: Option<String>,
    pub handle_id: Option<String>,
    pub secondary: BTreeMap<String, String>,
}

/// The block an address belongs to: its /26 (IPv4) or /122 (IPv6).
pub fn block_cidr(ip: IpAddr) -> IpNet {
    let prefix = match ip {
        IpAddr::V4(_) => 26,
        IpAddr::V6(_) => 122,
    };
    // The prefix lengths are valid for their family, so this cannot fail.
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

fn ordinal(block: &IpNet, ip: IpAddr) -> Option<usize> {
    if !block.contains(&ip) {
        return None;
    }
    let off = match (block.network(), ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => u128::from(u32::from(a) - u32::from(n)),
        (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) - u128::from(n),
        _ => return None,
    };
    usize::try_from(off).ok().filter(|o| *o < BLOCK_SIZE)
}

fn addr_at(block: &IpNet, ord: usize) -> IpAddr {
    match block.network() {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n) + ord as u32)),
        IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n) + ord as u128)),
    }
}

fn block_prefix(version: IpVersion) -> String {
    match version {
        IpVersion::V4 => format!("{IPAM_V2}assignment/ipv4/block/"),
        IpVersion::V6 => format!("{IPAM_V2}assignment/ipv6/block/"),
    }
}

fn check_block(key: &Key, block: &AllocationBlock) -> Result<(), DatastoreError> {
    let bad_index = block
        .allocations
        .iter()
        .flatten()
        .any(|i| *i >= block.attributes.len());
    if block.allocations.len() != BLOCK_SIZE || bad_index {
        return Err(DatastoreError::Store(crate::StoreError::Corrupt {
            key: key.to_string(),
            reason: "block allocations are not 64 valid entries".into(),
        }));
    }
    Ok(())
}

/// Marks `ord` as held by `handle`, reusing an identical attribute entry.
fn allocate(block: &mut AllocationBlock, ord: usize, handle: &str) {
    let attr = AllocationAttribute {
        handle_id: Some(handle.to_string()),
        secondary: BTreeMap::new(),
    };
    let idx = match block.attributes.iter().position(|a| *a == attr) {
        Some(i) => i,
        None => {
            block.attributes.push(attr);
            block.attributes.len() - 1
        }
    };
    if let Some(slot) = block.allocations.get_mut(ord) {
        *slot = Some(idx);
    }
}

/// Drops attribute entries no allocation refers to any more, renumbering the rest.
fn compact_attributes(block: &mut AllocationBlock) {
    let used: BTreeSet<usize> = block.allocations.iter().flatten().copied().collect();
    let mut remap = BTreeMap::new();
    let mut kept = Vec::new();
    for (i, attr) in block.attributes.iter().enumerate() {
        if used.contains(&i) {
            remap.insert(i, kept.len());
            kept.push(attr.clone());
        }
    }
    for slot in block.allocations.iter_mut().flatten() {
        if let Some(n) = remap.get(slot) {
            *slot = *n;
        }
    }
    block.attributes = kept;
}

impl Datastore {
    async fn blocks(
        &self,
        version: IpVersion,
    ) -> Result<BTreeMap<IpNet, Versioned<AllocationBlock>>, DatastoreError> {
        let mut out = BTreeMap::new();
        for (key, item) in self.list(&block_prefix(version)).await? {
            let (Key::IpamBlock { cidr }, Value::Block(block)) = (&key, item.value) else {
                return Err(unexpected(&key));
            };
            check_block(&key, &block)?;
            out.insert(
                *cidr,
                Versioned {
                    value: block,
                    revision: item.revision,
                },
            );
        }
        Ok(out)
    }

    async fn block(
        &self,
        cidr: IpNet,
    ) -> Result<Option<Versioned<AllocationBlock>>, DatastoreError> {
        let key = Key::IpamBlock { cidr };
        match self.get(&key).await? {
            None => Ok(None),
            Some(Versioned {
                value: Value::Block(block),
                revision,
            }) => {
                check_block(&key, &block)?;
                Ok(Some(Versioned {
                    value: block,
                    revision,
                }))
            }
            Some(_) => Err(unexpected(&key)),
        }
    }

    async fn handle(&self, id: &str) -> Result<Option<Versioned<IpamHandle>>, DatastoreError> {
        let key = Key::IpamHandle { id: id.to_string() };
        match self.get(&key).await? {
            None => Ok(None),
            Some(Versioned {
                value: Value::Handle(h),
                revision,
            }) => Ok(Some(Versioned { value: h, revision })),
            Some(_) => Err(unexpected(&key)),
        }
    }

    /// Plans reserving one address for `handle` on `host`; returns the address and the plan.
    /// Nothing is written until the caller commits the plan (with its own writes).
    ///
    /// # Errors
    /// `IpNotInPool`, `IpInUse`, `PoolNotFound`, `NoPool`, `PoolsExhausted`.
    pub async fn plan_assign(
        &self,
        request: AssignRequest,
        handle: &str,
        host: &str,
    ) -> Result<(IpAddr, TxnPlan), DatastoreError> {
        calico_core::names::validate_name("handle", handle)?;
        calico_core::names::validate_hostname(host)?;
        let (ip, block, mut plan) = match request {
            AssignRequest::Ip(ip) => self.plan_explicit(ip, handle, host).await?,
            AssignRequest::Auto(version) => {
                let pools: Vec<IpPool> = self
                    .list_pools(Some(version))
                    .await?
                    .into_iter()
                    .filter(|p| !p.disabled && p.ipam)
                    .collect();
                if pools.is_empty() {
                    return Err(DatastoreError::NoPool {
                        version: match version {
                            IpVersion::V4 => 4,
                            IpVersion::V6 => 6,
                        },
                    });
                }
                self.plan_auto(&pools, version, handle, host).await?
            }
            AssignRequest::Pool(cidr) => {
                let cidr = cidr.trunc();
                let pool = self
                    .get_pool(cidr)
                    .await?
                    .filter(|p| !p.disabled)
                    .ok_or(DatastoreError::PoolNotFound { cidr })?;
                self.plan_auto(&[pool], IpVersion::of(&cidr), handle, host)
                    .await?
            }
        };
        plan.extend(self.plan_handle_add(handle, block).await?);
        Ok((ip, plan))
    }

    async fn plan_explicit(
        &self,
        ip: IpAddr,
        handle: &str,
        host: &str,
    ) -> Result<(IpAddr, IpNet, TxnPlan), DatastoreError> {
        let pools = self.list_pools(Some(IpVersion::of_addr(&ip))).await?;
        if !pools.iter().any(|p| !p.disabled && p.cidr.contains(&ip)) {
            return Err(DatastoreError::IpNotInPool { ip });
        }
        let cidr = block_cidr(ip);
        let key = Key::IpamBlock { cidr };
        let mut plan = TxnPlan::default();
        let (mut block, revision) = match self.block(cidr).await? {
            Some(b) => (b.value, b.revision),
            None => {
                plan.put(
                    &Key::IpamAffinity {
                        host: host.to_string(),
                        cidr,
                    },
                    &Value::Affinity,
                );
                (AllocationBlock::new(cidr, Some(host)), 0)
            }
        };
        let ord = ordinal(&cidr, ip).ok_or(DatastoreError::IpNotInPool { ip })?;
        if block.allocations.get(ord).copied().flatten().is_some() {
            return Err(DatastoreError::IpInUse { ip });
        }
        allocate(&mut block, ord, handle);
        plan.require_revision(&key, revision);
        plan.put(&key, &Value::Block(block));
        Ok((ip, cidr, plan))
    }

    async fn plan_auto(
        &self,
        pools: &[IpPool],
        version: IpVersion,
        handle: &str,
        host: &str,
    ) -> Result<(IpAddr, IpNet, TxnPlan), DatastoreError> {
        let in_pools = |ip: &IpAddr| pools.iter().any(|p| p.cidr.contains(ip));
        let free_in = |block: &AllocationBlock| {
            (0..BLOCK_SIZE).find(|ord| {
                block.allocations.get(*ord).copied().flatten().is_none()
                    && in_pools(&addr_at(&block.cidr, *ord))
            })
        };
        let blocks = self.blocks(version).await?;
        let affinity = format!("host:{host}");
        let take = |cidr: IpNet, versioned: &Versioned<AllocationBlock>, ord: usize| {
            let mut block = versioned.value.clone();
            allocate(&mut block, ord, handle);
            let key = Key::IpamBlock { cidr };
            let mut plan = TxnPlan::default();
            plan.require_revision(&key, versioned.revision);
            plan.put(&key, &Value::Block(block));
            (addr_at(&cidr, ord), cidr, plan)
        };
        // 1. Blocks this host already has affinity for.
        for (cidr, b) in &blocks {
            if b.value.affinity.as_deref() == Some(affinity.as_str()) {
                if let Some(ord) = free_in(&b.value) {
                    return Ok(take(*cidr, b, ord));
                }
            }
        }
        // 2. Claim the first block of a pool nobody has created yet.
        for pool in pools {
            let block_len = match version {
                IpVersion::V4 => 26,
                IpVersion::V6 => 122,
            };
            let candidates: Box<dyn Iterator<Item = IpNet>> = if pool.cidr.prefix_len() >= block_len
            {
                Box::new(std::iter::once(block_cidr(pool.cidr.network())))
            } else {
                match pool.cidr.subnets(block_len) {
                    Ok(s) => Box::new(s),
                    Err(_) => continue,
                }
            };
            for cidr in candidates {
                if blocks.contains_key(&cidr) {
                    continue;
                }
                let block = AllocationBlock::new(cidr, Some(host));
                let Some(ord) = free_in(&block) else { continue };
                let fresh = Versioned {
                    value: block,
                    revision: 0,
                };
                let (ip, cidr, mut plan) = take(cidr, &fresh, ord);
                plan.put(
                    &Key::IpamAffinity {
                        host: host.to_string(),
                        cidr,
                    },
                    &Value::Affinity,
                );
                return Ok((ip, cidr, plan));
            }
        }
        // 3. Borrow from any other block of the pools.
        for (cidr, b) in &blocks {
            if let Some(ord) = free_in(&b.value) {
                return Ok(take(*cidr, b, ord));
            }
        }
        Err(DatastoreError::PoolsExhausted {
            pools: pools.iter().map(|p| p.cidr).collect(),
        })
    }

    async fn plan_handle_add(&self, handle: &str, block: IpNet) -> Result<TxnPlan, DatastoreError> {
        let key = Key::IpamHandle {
            id: handle.to_string(),
        };
        let (mut h, revision) = match self.handle(handle).await? {
            Some(v) => (v.value, v.revision),
            None => (
                IpamHandle {
                    id: handle.to_string(),
                    block: BTreeMap::new(),
                },
                0,
            ),
        };
        *h.block.entry(block.to_string()).or_insert(0) += 1;
        let mut plan = TxnPlan::default();
        plan.require_revision(&key, revision);
        plan.put(&key, &Value::Handle(h));
        Ok(plan)
    }

    /// Plans releasing `ips` (addresses not assigned are skipped), updating blocks and
    /// handles; one write per block and per handle however many addresses they share.
    pub async fn plan_release(&self, ips: &[IpAddr]) -> Result<TxnPlan, DatastoreError> {
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        for ip in ips {
            by_block.entry(block_cidr(*ip)).or_default().push(*ip);
        }
        let mut plan = TxnPlan::default();
        let mut handle_drops: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        for (cidr, ips) in by_block {
            let Some(current) = self.block(cidr).await? else {
                continue;
            };
            let mut block = current.value;
            let mut changed = false;
            for ip in ips {
                let Some(ord) = ordinal(&cidr, ip) else {
                    continue;
                };
                let Some(idx) = block.allocations.get(ord).copied().flatten() else {
                    continue;
                };
                if let Some(slot) = block.allocations.get_mut(ord) {
                    *slot = None;
                }
                changed = true;
                if let Some(handle) = block.attributes.get(idx).and_then(|a| a.handle_id.clone()) {
                    *handle_drops
                        .entry(handle)
                        .or_default()
                        .entry(cidr.to_string())
                        .or_insert(0) += 1;
                }
            }
            if changed {
                compact_attributes(&mut block);
                let key = Key::IpamBlock { cidr };
                plan.require_revision(&key, current.revision);
                plan.put(&key, &Value::Block(block));
            }
        }
        for (id, drops) in handle_drops {
            let Some(current) = self.handle(&id).await? else {
                continue;
            };
            let mut h = current.value;
            for (block, n) in drops {
                if let Some(count) = h.block.get_mut(&block) {
                    *count = count.saturating_sub(n);
                    if *count == 0 {
                        h.block.remove(&block);
                    }
                }
            }
            let key = Key::IpamHandle { id };
            plan.require_revision(&key, current.revision);
            if h.block.is_empty() {
                plan.delete(&key);
            } else {
                plan.put(&key, &Value::Handle(h));
            }
        }
        Ok(plan)
    }

    /// Assigns and commits on its own, retrying on conflict (`calicoctl ipam`, tests).
    pub async fn assign_ip(
        &self,
        request: AssignRequest,
        handle: &str,
        host: &str,
    ) -> Result<IpAddr, DatastoreError> {
        retry_on_conflict("assigning an address", || async {
            let (ip, plan) = self.plan_assign(request, handle, host).await?;
            self.commit(plan).await?;
            Ok(ip)
        })
        .await
    }

    /// Releases one address, retrying on conflict.
    ///
    /// # Errors
    /// `IpNotAssigned` when it was not assigned.
    pub async fn release_ip(&self, ip: IpAddr) -> Result<(), DatastoreError> {
        retry_on_conflict(&format!("releasing {ip}"), || async {
            let plan = self.plan_release(&[ip]).await?;
            if plan.is_empty() {
                return Err(DatastoreError::IpNotAssigned { ip });
            }
            self.commit(plan).await?;
            Ok(())
        })
        .await
    }

    /// Who holds `ip`, or `None` when it is not assigned.
    pub async fn ipam_info(&self, ip: IpAddr) -> Result<Option<IpamInfo>, DatastoreError> {
        let cidr = block_cidr(ip);
        let Some(block) = self.block(cidr).await? else {
            return Ok(None);
        };
        let Some(ord) = ordinal(&cidr, ip) else {
            return Ok(None);
        };
        let Some(idx) = block.value.allocations.get(ord).copied().flatten() else {
            return Ok(None);
        };
        let attr = block.value.attributes.get(idx).cloned();
        Ok(Some(IpamInfo {
            ip,
            block: cidr,
            affinity: block.value.affinity.clone(),
            handle_id: attr.as_ref().and_then(|a| a.handle_id.clone()),
            secondary: attr.map(|a| a.secondary).unwrap_or_default(),
        }))
    }
}
