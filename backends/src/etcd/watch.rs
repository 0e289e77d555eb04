//! The watch behind `EtcdStore::watch`: an etcd watch from a revision, an `InSync` marker once
//! the history up to the revision current at creation has been delivered, and transparent
//! resumption after a lost connection from the last delivered revision + 1.
//!
//! When is the replay complete? etcd sends a watcher's history in batches, each with a header
//! revision that is the store revision at batch time; a batch with fewer than etcd's 1,000
//! revisions of events ends the catch-up, so its header revision is complete. A watch whose
//! replay has no events at all gets nothing, so the task also asks for progress notifications;
//! etcd before 3.4.24/3.5.8 answered those without waiting for the watcher to catch up
//! (etcd issue 15220), so a progress answer is only trusted once the stream has been quiet for
//! a while. An event past the target revision always proves the replay complete.

use std::time::Duration;

use etcd_client::{
    EventType, GetOptions, WatchOptions, WatchRequestSender, WatchResponse, WatchResponseStream,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::convert::{is_compacted, key_string, key_value, prefix_range, store_error};
use super::{header_revision, EtcdStore};
use crate::{Revision, StoreError, WatchEvent, WatchStream};

/// Events buffered between the watch task and the consumer.
const BUFFER: usize = 1024;

/// etcd's `watchBatchMaxRevs`: a catch-up batch holding this many revisions may have more
/// behind it.
const ETCD_BATCH_MAX_REVS: usize = 1000;

/// How often to ask for progress until in sync, and how long the stream must have been quiet
/// before a progress answer is believed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(300);

/// Backoff between attempts to re-establish a broken watch.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

type Sender = mpsc::Sender<Result<WatchEvent, StoreError>>;

/// Starts a watch of `prefix` from `from_revision` (at least 1).
///
/// # Errors
/// `Compacted` when `from_revision` is older than etcd's history, `Unavailable` when etcd does
/// not answer.
pub(super) async fn start(
    store: EtcdStore,
    prefix: String,
    from_revision: Revision,
) -> Result<WatchStream, StoreError> {
    let from = from_revision.max(1);
    let current = store.current_revision(&prefix).await?;
    if from <= current {
        check_not_compacted(&store, &prefix, from).await?;
    }
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut task = WatchTask {
        store,
        prefix,
        next: from,
        target: current,
        in_sync: false,
    };
    if current < from {
        // Nothing to replay: every event up to `current` is (vacuously) delivered.
        task.in_sync = true;
        let _ = tx.send(Ok(WatchEvent::InSync { revision: current })).await;
    }
    let (sender, responses) = task.open().await?;
    tokio::spawn(task.run(sender, responses, tx));
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

/// A range read at `from` fails exactly when `from` has been compacted; the watch then tells
/// the oldest revision still held.
async fn check_not_compacted(
    store: &EtcdStore,
    prefix: &str,
    from: Revision,
) -> Result<(), StoreError> {
    let (start, end) = prefix_range(prefix);
    let options = GetOptions::new()
        .with_range(end)
        .with_count_only()
        .with_revision(from);
    let mut kv = store.kv();
    let read = kv.get(start, Some(options));
    match tokio::time::timeout(store.config.request_timeout, read).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if is_compacted(&e) => {
            let oldest = oldest_revision(store, prefix, from).await.unwrap_or(from);
            Err(StoreError::Compacted {
                requested: from,
                oldest,
            })
        }
        Ok(Err(e)) => Err(store_error(&store.endpoints, from, e)),
        Err(_) => Err(super::timed_out(
            &store.endpoints,
            "watching",
            store.config.request_timeout,
        )),
    }
}

/// The compaction revision etcd reports to a watch opened at a compacted `from`.
async fn oldest_revision(store: &EtcdStore, prefix: &str, from: Revision) -> Option<Revision> {
    let (start, end) = prefix_range(prefix);
    let options = WatchOptions::new()
        .with_range(end)
        .with_start_revision(from);
    let find = async {
        let mut stream = store
            .client()
            .watch_client()
            .watch(start, Some(options))
            .await
            .ok()?;
        while let Some(response) = stream.message().await.ok()? {
            if response.compact_revision() > 0 {
                return Some(response.compact_revision());
            }
        }
        None
    };
    tokio::time::timeout(store.config.request_timeout, find)
        .await
        .ok()
        .flatten()
}

/// What ended one etcd watch.
enum Interruption {
    /// The consumer dropped the stream.
    Closed,
    /// The connection broke or etcd canceled the watch for another reason: resume.
    Lost(String),
    /// The stream must end with this error.
    Fatal(StoreError),
}

struct WatchTask {
    store: EtcdStore,
    prefix: String,
    /// The first revision not yet delivered: where a resumed watch starts.
    next: Revision,
    /// The store revision when the watch was created: `InSync` once all up to it is delivered.
    target: Revision,
    in_sync: bool,
}

impl WatchTask {
    /// Opens an etcd watch from `self.next` and waits for etcd to confirm it.
    async fn open(&self) -> Result<(WatchRequestSender, WatchResponseStream), StoreError> {
        let (start, end) = prefix_range(&self.prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(self.next);
        let member = self.store.current_index();
        let mut client = self.store.clients[member].watch_client();
        let timeout = self.store.config.request_timeout;
        let endpoints = &self.store.endpoints;
        let opened = async {
            let stream = client
                .watch(start, Some(options))
                .await
                .map_err(|e| store_error(endpoints, self.next, e))?;
            let (sender, mut responses) = stream.split();
            match responses.message().await {
                Ok(Some(created)) if created.created() && !created.canceled() => {
                    Ok((sender, responses))
                }
                Ok(Some(refused)) => Err(self.refusal(&refused)),
                Ok(None) => Err(StoreError::Unavailable {
                    endpoint: endpoints.clone(),
                    reason: "watch stream closed before the watch was created".to_string(),
                }),
                Err(e) => Err(store_error(endpoints, self.next, e)),
            }
        };
        let result = match tokio::time::timeout(timeout, opened).await {
            Ok(result) => result,
            Err(_) => Err(super::timed_out(endpoints, "opening a watch", timeout)),
        };
        // A member that cannot take the watch (dead, or cut off): resume on the next one.
        if let Err(StoreError::Unavailable { .. }) = &result {
            self.store.fail_over(member);
        }
        result
    }

    fn refusal(&self, response: &WatchResponse) -> StoreError {
        if response.compact_revision() > 0 {
            StoreError::Compacted {
                requested: self.next,
                oldest: response.compact_revision(),
            }
        } else {
            StoreError::Unavailable {
                endpoint: self.store.endpoints.clone(),
                reason: format!("etcd canceled the watch: {}", response.cancel_reason()),
            }
        }
    }

    /// Delivers events until the consumer goes away or the stream must end, re-opening the
    /// etcd watch whenever the connection breaks.
    async fn run(mut self, sender: WatchRequestSender, responses: WatchResponseStream, tx: Sender) {
        let mut current = Some((sender, responses));
        let mut backoff = RETRY_MIN;
        loop {
            let (sender, responses) = match current.take() {
                Some(pair) => pair,
                None => match self.open().await {
                    Ok(pair) => {
                        tracing::info!(prefix = %self.prefix, from = self.next, "etcd watch resumed");
                        backoff = RETRY_MIN;
                        pair
                    }
                    Err(err @ StoreError::Compacted { .. }) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(prefix = %self.prefix, error = %err, "etcd watch not re-established; retrying");
                        tokio::select! {
                            () = tx.closed() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                        continue;
                    }
                },
            };
            match self.follow(sender, responses, &tx).await {
                Interruption::Closed => return,
                Interruption::Fatal(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                Interruption::Lost(reason) => {
                    self.store
                        .watch_interruptions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(prefix = %self.prefix, %reason, "etcd watch interrupted; resuming");
                }
            }
        }
    }

    /// Follows one etcd watch until it ends.
    async fn follow(
        &mut self,
        mut sender: WatchRequestSender,
        mut responses: WatchResponseStream,
        tx: &Sender,
    ) -> Interruption {
        let mut last_activity = Instant::now();
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                () = tx.closed() => return Interruption::Closed,
                _ = progress.tick(), if !self.in_sync => {
                    if sender.request_progress().await.is_err() {
                        return Interruption::Lost("watch request stream closed".to_string());
                    }
                }
                message = responses.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return Interruption::Lost("watch stream ended".to_string()),
                        Err(e) => return Interruption::Lost(e.to_string()),
                    };
                    if response.canceled() || response.compact_revision() > 0 {
                        return match self.refusal(&response) {
                            err @ StoreError::Compacted { .. } => Interruption::Fatal(err),
                            err => Interruption::Lost(err.to_string()),
                        };
                    }
                    let quiet = last_activity.elapsed() >= PROGRESS_INTERVAL;
                    if response.events().is_empty() {
                        if quiet && header_revision(response.header()) >= self.target {
                            if let Err(closed) = self.mark_in_sync(tx).await {
                                return closed;
                            }
                        }
                        continue;
                    }
                    last_activity = Instant::now();
                    if let Err(stop) = self.deliver(&response, tx).await {
                        return stop;
                    }
                }
            }
        }
    }

    /// Sends the events of one response, with `InSync` where the replay turns out complete.
    async fn deliver(&mut self, response: &WatchResponse, tx: &Sender) -> Result<(), Interruption> {
        let resumed_from = self.next;
        let mut revisions = 0;
        let mut last_revision = 0;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision < resumed_from {
                continue;
            }
            if revision != last_revision {
                revisions += 1;
                last_revision = revision;
            }
            if revision > self.target {
                self.mark_in_sync(tx).await?;
            }
            let item = match event.event_type() {
                EventType::Put => key_value(kv).map(WatchEvent::Put),
                EventType::Delete => {
                    key_string(kv.key()).map(|key| WatchEvent::Delete { key, revision })
                }
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() {
                return Err(Interruption::Closed);
            }
            if failed {
                return Err(Interruption::Closed);
            }
        }
        if last_revision > 0 {
            self.next = last_revision + 1;
        }
        let batch_complete = revisions < ETCD_BATCH_MAX_REVS;
        if last_revision >= self.target
            || (batch_complete && header_revision(response.header()) >= self.target)
        {
            self.mark_in_sync(tx).await?;
        }
        Ok(())
    }

    async fn mark_in_sync(&mut self, tx: &Sender) -> Result<(), Interruption> {
        if self.in_sync {
            return Ok(());
        }
        self.in_sync = true;
        tx.send(Ok(WatchEvent::InSync {
            revision: self.target,
        }))
        .await
        .map_err(|_| Interruption::Closed)
    }
}
