//! `EtcdStore`: the `Store` trait over etcd v3 through etcd-client.
//!
//! - `config`: endpoints, TLS files and timeouts from the environment, and the client's TLS
//!   settings built from those files.
//! - `convert`: etcd key values, key ranges and errors to `Store` types.
//! - `watch`: the resuming watch task behind `Store::watch`.
//!
//! Revisions are etcd's own (`mod_revision`, `create_revision`, the response header revision
//! for writes); compare-and-swap is an etcd Txn whose else-branch reads the key back so a
//! failure can say what it found. Every request is bounded by the request timeout, so an
//! unreachable etcd gives `Unavailable` instead of a hang; etcd-client reconnects its channel
//! by itself, so calls succeed again once etcd is back.
//!
//! Several endpoints (a cluster) get one client each, and requests go to one member at a
//! time: etcd-client's own balanced channel spreads requests over every endpoint, dead ones
//! included, so with one member down a third of all requests failed with "connection
//! refused". A request whose connection to its member cannot be made (nothing was sent, so
//! retrying even a write is safe) moves the store to the next member and is retried there;
//! any other failure (a timeout, "leader changed") is returned as it is.

mod config;
mod convert;
mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient,
    Txn, TxnOp as EtcdTxnOp, TxnOpResponse, TxnResponse,
};

pub use config::{EtcdConfig, EtcdConfigError, TlsFiles, DEFAULT_ENDPOINT};

use crate::{Compare, KeyValue, Revision, Store, StoreError, TxnOp, WatchStream};
use convert::{is_connect_failure, key_value, prefix_range, store_error};

/// Keys per range request in `list`: 1,000 endpoint-sized values stay far below etcd's
/// ~4 MiB response cap and the client's decoding limit.
const LIST_PAGE: i64 = 1000;

/// The client's limit on one decoded response, above tonic's 4 MiB default so a page of
/// larger values still fits.
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 keepalive ping interval and how long to wait for its answer. etcd's server
/// (`--grpc-keepalive-min-time`, default 5 s) answers pings more frequent than that with
/// GOAWAY `too_many_pings` after two strikes, which broke every watch about every 12 s when
/// we pinged every 3 s; 30 s stays clear of any sane setting and still notices a dead peer
/// within 40 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A `Store` on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    /// One client per configured endpoint, in the configured order.
    clients: Arc<Vec<Client>>,
    /// The index in `clients` of the member requests go to now (shared by clones).
    current: Arc<AtomicUsize>,
    config: EtcdConfig,
    endpoints: String,
    /// Watches that lost their etcd stream and had to be re-opened, since connect.
    watch_interruptions: Arc<AtomicU64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the configured endpoints (over TLS when they are `https://`, with the
    /// configured CA and client certificate) and checks that etcd answers.
    ///
    /// # Errors
    /// `Unavailable` naming the endpoints when none answers within the connect timeout (a
    /// TLS handshake etcd or we refuse counts as no answer), or when the TLS settings are
    /// inconsistent or a certificate file cannot be read (the reason names the file).
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let endpoints = config.endpoints_label();
        let tls = config.tls_options().map_err(|e| StoreError::Unavailable {
            endpoint: endpoints.clone(),
            reason: e.to_string(),
        })?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT);
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        let mut clients = Vec::new();
        for endpoint in &config.endpoints {
            let connecting = Client::connect([endpoint], Some(options.clone()));
            match tokio::time::timeout(config.connect_timeout, connecting).await {
                Ok(Ok(client)) => clients.push(client),
                Ok(Err(e)) => return Err(store_error(&endpoints, 0, e)),
                Err(_) => return Err(timed_out(&endpoints, "connecting", config.connect_timeout)),
            }
        }
        let timeout = config.connect_timeout;
        let store = EtcdStore {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
            config,
            endpoints,
            watch_interruptions: Arc::new(AtomicU64::new(0)),
        };
        // The channels connect lazily: one cheap read proves etcd is there (on the first
        // member that answers).
        store
            .call_within("connecting", timeout, |mut kv| async move {
                kv.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await?;
        Ok(store)
    }

    /// Connects with [`EtcdConfig::from_env`].
    ///
    /// # Errors
    /// `Unavailable` for a bad configuration or an etcd that does not answer.
    pub async fn connect_from_env() -> Result<Self, StoreError> {
        let config = EtcdConfig::from_env().map_err(|e| StoreError::Unavailable {
            endpoint: std::env::var("ETCD_ENDPOINTS")
                .or_else(|_| std::env::var("ETCD_AUTHORITY"))
                .unwrap_or_else(|_| DEFAULT_ENDPOINT.to_string()),
            reason: e.to_string(),
        })?;
        Self::connect(config).await
    }

    /// The endpoints this store talks to, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// How many times a watch of this store lost its etcd stream and resumed (each is logged
    /// as "etcd watch interrupted"); 0 on a healthy, idle connection.
    pub fn watch_interruptions(&self) -> u64 {
        self.watch_interruptions.load(Ordering::Relaxed)
    }

    /// The etcd-client of the member requests go to now, for what the `Store` trait does
    /// not cover (compaction in tests, maintenance).
    pub fn client(&self) -> &Client {
        &self.clients[self.current_index()]
    }

    fn current_index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.clients.len()
    }

    /// Moves requests on from member `failed` to the next one, unless another request
    /// already did.
    fn fail_over(&self, failed: usize) {
        let next = (failed + 1) % self.clients.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && next != failed
        {
            tracing::warn!(
                from = %self.config.endpoints[failed],
                to = %self.config.endpoints[next],
                "etcd member unreachable; using the next endpoint"
            );
        }
    }

    fn kv_at(&self, index: usize) -> KvClient {
        self.clients[index]
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_BYTES)
    }

    fn kv(&self) -> KvClient {
        self.kv_at(self.current_index())
    }

    /// Runs one request under the request timeout, mapping its errors.
    async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T, StoreError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_within(what, self.config.request_timeout, request)
            .await
    }

    /// Runs `request` on the current member within `timeout`; when its connection cannot be
    /// made, moves to the next member and tries again, once per member.
    async fn call_within<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut request: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempts = self.clients.len();
        loop {
            let index = self.current_index();
            attempts -= 1;
            match tokio::time::timeout(timeout, request(self.kv_at(index))).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if attempts > 0 && is_connect_failure(&e) => self.fail_over(index),
                Ok(Err(e)) => return Err(store_error(&self.endpoints, 0, e)),
                Err(_) => return Err(timed_out(&self.endpoints, what, timeout)),
            }
        }
    }

    async fn run_txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.call(what, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// The store's current revision (a count-only read of nothing in particular).
    pub(crate) async fn current_revision(&self, prefix: &str) -> Result<Revision, StoreError> {
        let (start, end) = prefix_range(prefix);
        let options = GetOptions::new().with_range(end).with_count_only();
        let response = self
            .call("reading the current revision", |mut kv| {
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
        Ok(header_revision(response.header()))
    }
}

fn timed_out(endpoints: &str, what: &str, after: Duration) -> StoreError {
    StoreError::Unavailable {
        endpoint: endpoints.to_string(),
        reason: format!("{what}: no answer within {after:?}"),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, etcd_client::ResponseHeader::revision)
}

/// The key value a get op in a txn's else-branch read back, if the key exists.
fn read_back(response: &TxnResponse, index: usize) -> Result<Option<KeyValue>, StoreError> {
    match response.op_responses().get(index) {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map(key_value).transpose(),
        _ => Ok(None),
    }
}

/// The compare that guards a write against `expected`, plus existence (an absent key has
/// `mod_revision == 0`, which must not let `update(key, _, 0)` create it).
fn guard(key: &str, expected: Revision) -> Vec<EtcdCompare> {
    vec![
        EtcdCompare::create_revision(key, CompareOp::Greater, 0),
        EtcdCompare::mod_revision(key, CompareOp::Equal, expected),
    ]
}

/// `NotFound` or `Conflict` from what a failed guarded write read back.
fn guard_failure(key: &str, expected: Revision, found: Option<KeyValue>) -> StoreError {
    match found {
        None => StoreError::NotFound {
            key: key.to_string(),
        },
        Some(kv) => StoreError::Conflict {
            key: key.to_string(),
            expected,
            actual: kv.mod_revision,
        },
    }
}

/// The ops of a transaction with only the last op on each key kept, in their order: etcd
/// refuses a txn that writes one key twice ("duplicate key given in txn request"), while the
/// `Store` contract applies ops in order, so the last one decides the key's final state.
/// (A delete-then-put of an existing key thus keeps its `create_revision` on etcd.)
fn last_op_per_key(ops: Vec<TxnOp>) -> Vec<TxnOp> {
    let key = |op: &TxnOp| match op {
        TxnOp::Put { key, .. } | TxnOp::Delete { key } => key.clone(),
    };
    let last: std::collections::HashMap<String, usize> =
        ops.iter().enumerate().map(|(i, op)| (key(op), i)).collect();
    ops.into_iter()
        .enumerate()
        .filter(|(i, op)| last.get(&key(op)) == Some(i))
        .map(|(_, op)| op)
        .collect()
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .call(
                "reading a key",
                |mut kv| async move { kv.get(key, None).await },
            )
            .await?;
        response.kvs().first().map(key_value).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let (mut start, end) = prefix_range(prefix);
        let mut items = Vec::new();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = self
                .call("listing", |mut kv| {
                    let (start, options) = (start.clone(), options.clone());
                    async move { kv.get(start, Some(options)).await }
                })
                .await;
            let response = match page {
                Ok(response) => response,
                // A compacted page names the revision the listing was pinned to.
                Err(StoreError::Compacted { .. }) => {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        oldest: revision,
                    })
                }
                Err(e) => return Err(e),
            };
            if revision == 0 {
                revision = header_revision(response.header());
            }
            for kv in response.kvs() {
                items.push(key_value(kv)?);
            }
            match (response.more(), response.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((items, revision)),
            }
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when(vec![EtcdCompare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![EtcdTxnOp::put(key, value, None)]);
        let response = self.run_txn("creating a key", txn).await?;
        if response.succeeded() {
            Ok(header_revision(response.header()))
        } else {
            Err(StoreError::AlreadyExists {
                key: key.to_string(),
            })
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when(guard(key, expected))
            .and_then(vec![EtcdTxnOp::put(key, value, None)])
            .or_else(vec![EtcdTxnOp::get(key, None)]);
        let response = self.run_txn("updating a key", txn).await?;
        if response.succeeded() {
            Ok(header_revision(response.header()))
        } else {
            Err(guard_failure(key, expected, read_back(&response, 0)?))
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let response = self
            .call("writing a key", |mut kv| {
                let value = value.clone();
                async move { kv.put(key, value, None).await }
            })
            .await?;
        Ok(header_revision(response.header()))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let Some(expected) = expected else {
            let response = self
                .call("deleting a key", |mut kv| async move {
                    kv.delete(key, None::<DeleteOptions>).await
                })
                .await?;
            if response.deleted() == 0 {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                });
            }
            return Ok(header_revision(response.header()));
        };
        let txn = Txn::new()
            .when(guard(key, expected))
            .and_then(vec![EtcdTxnOp::delete(key, None)])
            .or_else(vec![EtcdTxnOp::get(key, None)]);
        let response = self.run_txn("deleting a key", txn).await?;
        if response.succeeded() {
            Ok(header_revision(response.header()))
        } else {
            Err(guard_failure(key, expected, read_back(&response, 0)?))
        }
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<Revision, StoreError> {
        let mut conditions = Vec::new();
        let mut reads = Vec::new();
        for compare in &compares {
            match compare {
                Compare::Absent { key } => {
                    conditions.push(EtcdCompare::create_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        0,
                    ));
                    reads.push(EtcdTxnOp::get(key.as_str(), None));
                }
                Compare::ModRevision { key, revision } => {
                    conditions.extend(guard(key, *revision));
                    reads.push(EtcdTxnOp::get(key.as_str(), None));
                }
            }
        }
        let writes: Vec<EtcdTxnOp> = last_op_per_key(ops)
            .into_iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => EtcdTxnOp::put(key, value, None),
                TxnOp::Delete { key } => EtcdTxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new().when(conditions).and_then(writes).or_else(reads);
        let response = self.run_txn("running a transaction", txn).await?;
        if response.succeeded() {
            return Ok(header_revision(response.header()));
        }
        // The else-branch read every compared key at the revision the compares saw.
        for (index, compare) in compares.iter().enumerate() {
            let found = read_back(&response, index)?;
            let actual = found.as_ref().map_or(0, |kv| kv.mod_revision);
            match compare {
                Compare::Absent { key } if found.is_some() => {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: 0,
                        actual,
                    });
                }
                Compare::ModRevision { key, revision }
                    if found.is_none() || actual != *revision =>
                {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *revision,
                        actual,
                    });
                }
                _ => {}
            }
        }
        Err(StoreError::Corrupt {
            key: compares.first().map_or_else(String::new, |c| match c {
                Compare::Absent { key } | Compare::ModRevision { key, .. } => key.clone(),
            }),
            reason: "etcd failed the transaction but every compared key matches".to_string(),
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::start(self.clone(), prefix.to_string(), from_revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_ops_on_a_key_replace_earlier_ones() {
        let put = |k: &str, v: &[u8]| TxnOp::Put {
            key: k.into(),
            value: v.to_vec(),
        };
        let delete = |k: &str| TxnOp::Delete { key: k.into() };
        let ops = vec![
            delete("c"),
            put("a", b"1"),
            put("c", b"2"),
            put("a", b"3"),
            delete("b"),
        ];
        assert_eq!(
            last_op_per_key(ops),
            vec![put("c", b"2"), put("a", b"3"), delete("b")]
        );
    }
}
