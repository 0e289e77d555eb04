//! Decoded endpoint records (and host records) shared by the calculators of one process.
//!
//! The simulator runs one calculator per host, and each holds every endpoint of the cluster:
//! N hosts × E endpoints decoded records, where only E are distinct. A [`SharedDecodes`]
//! handed to every calculator makes the same key with the same bytes decode to the same
//! `Arc`, so the cluster's endpoints are held once and each calculator keeps pointers. Each
//! calculator still takes every update itself and computes its own desired state from its own
//! view: only immutable decoded values are shared, never what a host derives from them.
//!
//! Host records are built from several keys each, so they are shared after the fact:
//! [`SharedDecodes::intern_host`] swaps a calculator's record for an equal one another
//! calculator already holds (N hosts each holding N host records would otherwise grow with
//! the square of the cluster).
//!
//! Entries hold weak references: a record lives as long as some calculator holds it. Dead
//! entries are swept now and then, so churn does not grow the table without bound.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::calc::{host_record_of, ListingBase};
use crate::cluster::{ClusterState, HostState};
use crate::codec::{decode, Value};
use crate::keys::Key;
use crate::model::{EndpointId, WorkloadEndpoint};
use crate::ModelError;

/// Inserts between sweeps of dead entries.
const SWEEP_EVERY: usize = 1 << 14;

/// One decoded endpoint and the bytes it was decoded from.
struct Entry {
    bytes: Box<[u8]>,
    id: Weak<EndpointId>,
    endpoint: Weak<WorkloadEndpoint>,
}

/// A fast multiply-rotate hash of the raw key (the table is looked up for every endpoint
/// every host takes; SipHash's resistance to chosen keys buys nothing in one simulator).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Table {
    by_key: HashMap<Box<str>, Entry, BuildHasherDefault<KeyHasher>>,
    hosts: HashMap<String, Weak<HostState>>,
    inserts: usize,
}

/// A process-wide table of decoded endpoints, cheap to clone (clones share the table).
#[derive(Clone, Default)]
pub struct SharedDecodes {
    table: Arc<Mutex<Table>>,
}

impl fmt::Debug for SharedDecodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.table.lock().map_or(0, |t| t.by_key.len());
        f.debug_struct("SharedDecodes")
            .field("entries", &entries)
            .finish()
    }
}

/// Two handles are equal when they share one table.
impl PartialEq for SharedDecodes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }
}

impl SharedDecodes {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces `record` (host `name`'s) by the shared one when that is equal, or makes it the
    /// shared one.
    pub fn intern_host(&self, name: &str, record: &mut Arc<HostState>) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = table.hosts.get(name).and_then(Weak::upgrade) {
            if Arc::ptr_eq(&shared, record) {
                return;
            }
            if *shared == **record {
                *record = shared;
                return;
            }
        }
        table.hosts.insert(name.to_string(), Arc::downgrade(record));
    }

    /// The shared record of `raw_key` when some calculator already decoded exactly `bytes`
    /// for it and still holds it: no parsing, no decoding.
    pub fn cached_endpoint(
        &self,
        raw_key: &str,
        bytes: &[u8],
    ) -> Option<(Arc<EndpointId>, Arc<WorkloadEndpoint>)> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let entry = table.by_key.get(raw_key)?;
        if *entry.bytes != *bytes {
            return None;
        }
        Some((entry.id.upgrade()?, entry.endpoint.upgrade()?))
    }

    /// The endpoint stored at `raw_key` (parsed as `key`, with `id` its endpoint id) as
    /// `bytes`: the record another calculator already decoded from the same bytes, or one
    /// decoded now and shared from now on.
    ///
    /// # Errors
    /// The bytes are not a valid endpoint (nothing is cached then).
    pub fn endpoint(
        &self,
        raw_key: &str,
        key: &Key,
        id: &EndpointId,
        bytes: &[u8],
    ) -> Result<(Arc<EndpointId>, Arc<WorkloadEndpoint>), ModelError> {
        // A poisoned lock only means another thread panicked mid-insert; the table is still
        // a valid cache (at worst an entry is missing), so keep using it.
        if let Some(hit) = self.cached_endpoint(raw_key, bytes) {
            return Ok(hit);
        }
        let endpoint = match decode(key, bytes)? {
            Value::Endpoint(ep) => Arc::new(ep),
            _ => {
                return Err(ModelError::field(
                    "endpoint",
                    raw_key,
                    "not an endpoint key",
                ))
            }
        };
        let id = Arc::new(id.clone());
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.inserts += 1;
        if table.inserts % SWEEP_EVERY == 0 {
            table.by_key.retain(|_, e| e.endpoint.strong_count() > 0);
        }
        table.by_key.insert(
            raw_key.into(),
            Entry {
                bytes: bytes.into(),
                id: Arc::downgrade(&id),
                endpoint: Arc::downgrade(&endpoint),
            },
        );
        Ok((id, endpoint))
    }
}

/// Where profile records live: a listing holds them first (see [`SharedListing::new`]).
const PROFILE_PREFIX: &str = "/calico/v1/policy/profile/";

/// One listed record; endpoints come decoded (through the [`SharedDecodes`] table).
#[derive(Debug)]
pub struct ListedRecord {
    pub key: String,
    pub value: Vec<u8>,
    /// The decoded endpoint when `key` is an endpoint's and `value` decodes; invalid
    /// endpoints are taken from the raw bytes by each loader.
    pub endpoint: Option<(Arc<EndpointId>, Arc<WorkloadEndpoint>)>,
    /// Any other record the cluster state depends on, parsed and decoded once for every
    /// loader (a listing holds several records per host, which every host takes: parsing
    /// them per loader grows with the square of the cluster).
    pub decoded: Option<(Key, Result<Option<Value>, ModelError>)>,
}

/// A datastore listing decoded once and loaded by many calculators (the simulator's agents
/// all snapshot the same store at the same revision): each loader still builds its own
/// state and indexes from it, but nobody copies the bytes or looks the endpoints up again.
#[derive(Debug, Default)]
pub struct SharedListing {
    /// Profile records first: a profile's tags arriving after its endpoints would make the
    /// loader re-index every one of them.
    records: Vec<ListedRecord>,
    /// The host table the listing's decodable host records make (interned through the
    /// [`SharedDecodes`]), which a loader holding no hosts takes whole.
    hosts: BTreeMap<String, Arc<HostState>>,
    /// What every loader builds alike from the records, built by the first one.
    base: OnceLock<ListingBase>,
}

impl SharedListing {
    /// The listing of `kvs` (raw key, value), endpoints decoded through `shared`.
    pub fn new(kvs: impl IntoIterator<Item = (String, Vec<u8>)>, shared: &SharedDecodes) -> Self {
        let (mut records, rest): (Vec<_>, Vec<_>) = kvs
            .into_iter()
            .map(|(key, value)| {
                let (endpoint, decoded) = match Key::parse(&key) {
                    Ok(parsed) => match &parsed {
                        Key::Endpoint(id) => {
                            (shared.endpoint(&key, &parsed, id, &value).ok(), None)
                        }
                        _ if ClusterState::depends_on(&parsed) => {
                            let decoded = decode(&parsed, &value).map(Some);
                            (None, Some((parsed, decoded)))
                        }
                        _ => (None, None),
                    },
                    Err(_) => (None, None),
                };
                ListedRecord {
                    key,
                    value,
                    endpoint,
                    decoded,
                }
            })
            .partition(|r| r.key.starts_with(PROFILE_PREFIX));
        records.extend(rest);
        let mut state = ClusterState::default();
        for record in &records {
            if let Some((key, Ok(value))) = &record.decoded {
                if host_record_of(key).is_some() {
                    state.apply_decoded(key.clone(), Ok(value.clone()));
                }
            }
        }
        let mut hosts = state.hosts;
        for (name, record) in &mut hosts {
            shared.intern_host(name, record);
        }
        SharedListing {
            records,
            hosts,
            base: OnceLock::new(),
        }
    }

    /// The host records of the listing (those that decode), as [`ClusterState::hosts`].
    pub fn hosts(&self) -> &BTreeMap<String, Arc<HostState>> {
        &self.hosts
    }

    /// What loading the listing into a pristine calculator builds alike on every host.
    pub(crate) fn base(&self) -> &ListingBase {
        self.base.get_or_init(|| ListingBase::build(self))
    }

    /// The records, profiles first.
    pub fn records(&self) -> &[ListedRecord] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/calico/v1/host/h/workload/docker/w/endpoint/e";

    fn ep_bytes(mac: &str) -> Vec<u8> {
        format!(r#"{{"state":"active","name":"calie","mac":"{mac}","profile_ids":["A"]}}"#)
            .into_bytes()
    }

    fn lookup(shared: &SharedDecodes, bytes: &[u8]) -> (Arc<EndpointId>, Arc<WorkloadEndpoint>) {
        let key = Key::parse(KEY).unwrap();
        let Key::Endpoint(id) = &key else {
            panic!("not an endpoint key")
        };
        shared.endpoint(KEY, &key, id, bytes).unwrap()
    }

    #[test]
    fn same_bytes_share_one_record_and_new_bytes_decode_again() {
        let shared = SharedDecodes::new();
        let first = lookup(&shared, &ep_bytes("ee:ee:ee:ee:ee:ee"));
        let second = lookup(&shared, &ep_bytes("ee:ee:ee:ee:ee:ee"));
        assert!(Arc::ptr_eq(&first.1, &second.1));
        assert!(Arc::ptr_eq(&first.0, &second.0));
        let cached = shared.cached_endpoint(KEY, &ep_bytes("ee:ee:ee:ee:ee:ee"));
        assert!(cached.is_some_and(|(_, ep)| Arc::ptr_eq(&ep, &first.1)));
        assert!(shared.cached_endpoint(KEY, b"{}").is_none());
        let changed = lookup(&shared, &ep_bytes("ee:ee:ee:ee:ee:01"));
        assert!(!Arc::ptr_eq(&first.1, &changed.1));
        assert_eq!(changed.1.mac.to_string(), "ee:ee:ee:ee:ee:01");
    }

    #[test]
    fn equal_host_records_are_shared_and_a_changed_one_takes_over() {
        let shared = SharedDecodes::new();
        let record = |as_num| {
            Arc::new(HostState {
                as_num: Some(crate::model::AsNumber(as_num)),
                ..HostState::default()
            })
        };
        let mut first = record(64511);
        let mut second = record(64511);
        shared.intern_host("h1", &mut first);
        shared.intern_host("h1", &mut second);
        assert!(Arc::ptr_eq(&first, &second));
        let mut changed = record(65000);
        shared.intern_host("h1", &mut changed);
        let mut again = record(65000);
        shared.intern_host("h1", &mut again);
        assert!(Arc::ptr_eq(&changed, &again));
        assert_eq!(first.as_num, Some(crate::model::AsNumber(64511)));
    }

    #[test]
    fn a_record_nobody_holds_is_decoded_afresh_and_bad_bytes_are_refused() {
        let shared = SharedDecodes::new();
        let bytes = ep_bytes("ee:ee:ee:ee:ee:ee");
        let weak = Arc::downgrade(&lookup(&shared, &bytes).1);
        assert!(
            weak.upgrade().is_none(),
            "the table does not keep records alive"
        );
        assert_eq!(lookup(&shared, &bytes).1.name, "calie");
        let key = Key::parse(KEY).unwrap();
        let Key::Endpoint(id) = &key else {
            panic!("not an endpoint key")
        };
        let err = shared
            .endpoint(KEY, &key, id, b"{not json")
            .unwrap_err()
            .to_string();
        assert!(err.contains(KEY), "the decoding error names the key: {err}");
    }
}
