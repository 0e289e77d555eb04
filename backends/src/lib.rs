//! Datastore backends of calico-rs.
//!
//! - [`Store`]: raw keys, bytes and revisions in the shape of etcd v3 (get, list, create,
//!   update/delete by revision, multi-key transaction, watch with an in-sync marker).
//! - `MemStore`: the reference implementation; `SledStore`: embedded, durable, one machine;
//!   `EtcdStore`: etcd v3 for a cluster.
//! - `Datastore`: the typed layer (pools, hosts, endpoints, profiles, IPAM) over any `Store`.
//!
//! Data flow: calicoctl writes through `Datastore`; calico-node lists then watches the raw
//! `Store` and feeds the events to `calico_core`'s calculator.

mod datastore;
mod error;
mod etcd;
mod mem;
pub mod proxy;
mod sled_store;
mod store;
mod watch_hub;

pub use datastore::{
    retry_on_conflict, AssignRequest, BrokenRecord, Datastore, DatastoreError, EndpointFilter,
    HostRecord, IpamInfo, Listing, Profile, ProfileEdit, TunnelAddrChange, TxnPlan, Versioned,
    MAX_RETRIES,
};
pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdConfigError, EtcdStore, TlsFiles};
pub use mem::MemStore;
pub use sled_store::SledStore;
pub use store::{Compare, KeyValue, Revision, Store, TxnOp, WatchEvent, WatchStream};
