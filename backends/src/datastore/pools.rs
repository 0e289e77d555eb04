//! IP pools (`/calico/v1/ipam/v{4,6}/pool/<cidr-dashed>`, reference 1.5).

use calico_core::codec::Value;
use calico_core::keys::{IpVersion, Key, V1};
use calico_core::model::{IpPool, DEFAULT_POOL_V4, DEFAULT_POOL_V6};
use ipnet::IpNet;

use super::{retry_on_conflict, unexpected, Datastore, DatastoreError, Listing, TxnPlan};

fn pool_prefix(version: IpVersion) -> String {
    match version {
        IpVersion::V4 => format!("{V1}ipam/v4/pool/"),
        IpVersion::V6 => format!("{V1}ipam/v6/pool/"),
    }
}

impl Datastore {
    /// The pools of one family (or both), sorted by CIDR.
    pub async fn list_pools(
        &self,
        version: Option<IpVersion>,
    ) -> Result<Vec<IpPool>, DatastoreError> {
        self.list_pools_lenient(version).await?.strict()
    }

    /// As [`list_pools`](Self::list_pools), with the undecodable pool records beside them.
    pub async fn list_pools_lenient(
        &self,
        version: Option<IpVersion>,
    ) -> Result<Listing<Vec<IpPool>>, DatastoreError> {
        let versions = match version {
            Some(v) => vec![v],
            None => vec![IpVersion::V4, IpVersion::V6],
        };
        let mut pools = Vec::new();
        let mut broken = Vec::new();
        for v in versions {
            let listing = self.list_lenient(&pool_prefix(v)).await?;
            broken.extend(listing.broken);
            for (key, item) in listing.items {
                match item.value {
                    Value::Pool(pool) => pools.push(pool),
                    _ => return Err(unexpected(&key)),
                }
            }
        }
        Ok(Listing {
            items: pools,
            broken,
        })
    }

    /// The pool with exactly this CIDR.
    pub async fn get_pool(&self, cidr: IpNet) -> Result<Option<IpPool>, DatastoreError> {
        let key = Key::Pool { cidr: cidr.trunc() };
        match self.get(&key).await? {
            None => Ok(None),
            Some(v) => match v.value {
                Value::Pool(pool) => Ok(Some(pool)),
                _ => Err(unexpected(&key)),
            },
        }
    }

    /// Writes (or overwrites) a pool. An IPIP pool also sets global `IpInIpEnabled=true` in the
    /// same transaction (it never reverts on its own, as in the original).
    pub async fn put_pool(&self, pool: &IpPool) -> Result<(), DatastoreError> {
        self.put_pools(std::slice::from_ref(pool)).await
    }

    /// Writes (or overwrites) several pools in one transaction (see [`Self::put_pool`]).
    pub async fn put_pools(&self, pools: &[IpPool]) -> Result<(), DatastoreError> {
        let mut plan = TxnPlan::default();
        let mut ipip = false;
        for pool in pools {
            let mut pool = pool.clone();
            pool.cidr = pool.cidr.trunc();
            pool.validate()?;
            ipip |= pool.ipip.is_some();
            plan.put(&Key::Pool { cidr: pool.cidr }, &Value::Pool(pool));
        }
        if ipip {
            plan.put(
                &Key::GlobalConfig {
                    name: "IpInIpEnabled".into(),
                },
                &Value::Config("true".into()),
            );
        }
        self.commit(plan).await?;
        Ok(())
    }

    /// Removes the pool with exactly this CIDR.
    ///
    /// # Errors
    /// `PoolNotFound` when there is none.
    pub async fn remove_pool(&self, cidr: IpNet) -> Result<(), DatastoreError> {
        let cidr = cidr.trunc();
        if self.delete(&Key::Pool { cidr }).await? {
            Ok(())
        } else {
            Err(DatastoreError::PoolNotFound { cidr })
        }
    }

    /// Creates 192.168.0.0/16 when there is no IPv4 pool and fd80:24e2:f998:72d6::/64 when there
    /// is no IPv6 pool (reference 2.1 step 5). Returns the pools created.
    pub async fn ensure_default_pools(&self) -> Result<Vec<IpNet>, DatastoreError> {
        retry_on_conflict("creating the default pools", || async {
            let mut plan = TxnPlan::default();
            let mut created = Vec::new();
            for (version, default) in [
                (IpVersion::V4, DEFAULT_POOL_V4),
                (IpVersion::V6, DEFAULT_POOL_V6),
            ] {
                if !self.list_pools(Some(version)).await?.is_empty() {
                    continue;
                }
                let cidr: IpNet = match default.parse() {
                    Ok(c) => c,
                    Err(_) => continue,
                };
                let key = Key::Pool { cidr };
                plan.require_absent(&key);
                plan.put(&key, &Value::Pool(IpPool::new(cidr)));
                created.push(cidr);
            }
            self.commit(plan).await?;
            Ok(created)
        })
        .await
    }
}
