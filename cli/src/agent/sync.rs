//! Snapshot, watch and resync plumbing: list what the agent reads under `/calico/`, follow
//! `/calico/` from the listing's revision, and drain whatever events are ready into one batch without waiting.

use std::time::Duration;

use std::sync::Arc;

use calico_backends::{MemStore, Revision, Store, StoreError, WatchEvent, WatchStream};
use calico_core::shared::{SharedDecodes, SharedListing};
use futures::{FutureExt, StreamExt};
use tokio::sync::Mutex;

/// Everything the agent reads lives under this prefix.
pub const PREFIX: &str = "/calico/";

/// The key calicoctl sets to `true` once the global defaults are written.
pub const READY_KEY: &str = "/calico/v1/Ready";

/// Raw updates in arrival order (`None` = deleted).
pub(crate) type Updates = Vec<(String, Option<Vec<u8>>)>;

/// The parts of `/calico/` a snapshot lists: everything the agent's state depends on. IPAM
/// blocks and handles (one handle per endpoint) and Felix status records are left out: the
/// agent ignores them, and a cluster's worth of them would be copied at every snapshot (by
/// every host of the simulator).
pub const SNAPSHOT_PREFIXES: [&str; 3] =
    ["/calico/v1/", "/calico/bgp/v1/", "/calico/ipam/v2/host/"];

/// A listing of [`SNAPSHOT_PREFIXES`] and the revision to watch `/calico/` from (plus one).
///
/// The listings are taken one after another, so the revision is the earliest of them: the
/// watch then replays whatever changed in between, and since the state depends only on the
/// last value of each key, it ends where one consistent listing would have.
pub(crate) async fn snapshot(store: &dyn Store) -> Result<(Updates, Revision), StoreError> {
    let mut updates = Vec::new();
    let mut revision: Option<Revision> = None;
    for prefix in SNAPSHOT_PREFIXES {
        let (kvs, rev) = store.list(prefix).await?;
        revision = Some(revision.map_or(rev, |r| r.min(rev)));
        updates.extend(kvs.into_iter().map(|kv| (kv.key, Some(kv.value))));
    }
    Ok((updates, revision.unwrap_or_default()))
}

/// One listing of [`SNAPSHOT_PREFIXES`] of a [`MemStore`], decoded once and shared by every
/// agent of the process that snapshots it at the same revision (the simulator's hosts all
/// start together: N agents would otherwise each copy and decode the whole cluster). Each
/// agent still loads the listing into its own calculator and computes its own state.
#[derive(Clone)]
pub struct SharedSnapshots {
    store: MemStore,
    decodes: SharedDecodes,
    /// The last listing and the revision it is consistent at.
    last: Arc<Mutex<Option<CachedListing>>>,
}

/// A listing and the store revision it is consistent at.
type CachedListing = (Revision, Arc<SharedListing>);

impl std::fmt::Debug for SharedSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSnapshots").finish_non_exhaustive()
    }
}

/// Two handles are equal when they share one cache.
impl PartialEq for SharedSnapshots {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.last, &other.last)
    }
}

impl SharedSnapshots {
    /// Snapshots of `store`, endpoints decoded through `decodes`.
    pub fn new(store: MemStore, decodes: SharedDecodes) -> Self {
        Self {
            store,
            decodes,
            last: Arc::default(),
        }
    }

    /// The listing at the store's current revision: the cached one when nothing was written
    /// since it was taken, else a new one (cached for the next agent).
    pub(crate) async fn snapshot(&self) -> Result<(Arc<SharedListing>, Revision), StoreError> {
        // Held across the listing so that agents stepped on other threads wait for it
        // rather than each taking the same listing.
        let mut last = self.last.lock().await;
        if let Some((revision, listing)) = last.as_ref() {
            if *revision == self.store.revision() {
                return Ok((Arc::clone(listing), *revision));
            }
        }
        *last = None;
        let (updates, revision) = snapshot(&self.store).await?;
        let kvs = updates
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key, v)));
        let listing = Arc::new(SharedListing::new(kvs, &self.decodes));
        *last = Some((revision, Arc::clone(&listing)));
        Ok((listing, revision))
    }
}

/// Whether `/calico/v1/Ready` holds `true`.
pub(crate) async fn is_ready(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store
        .get(READY_KEY)
        .await?
        .is_some_and(|kv| String::from_utf8_lossy(&kv.value).trim() == "true"))
}

/// Why a watch can no longer be followed: the caller takes a new snapshot.
#[derive(Debug)]
pub(crate) enum WatchBroken {
    Failed(StoreError),
    Ended,
}

/// One drained batch of watch events.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) updates: Updates,
    /// Number of events taken from the stream (including `InSync`).
    pub(crate) events: usize,
    /// The highest revision seen.
    pub(crate) revision: Revision,
}

impl Batch {
    /// Adds one event; `Err` when the watch broke.
    pub(crate) fn push(
        &mut self,
        event: Option<Result<WatchEvent, StoreError>>,
    ) -> Result<(), WatchBroken> {
        let event = match event {
            None => return Err(WatchBroken::Ended),
            Some(Err(e)) => return Err(WatchBroken::Failed(e)),
            Some(Ok(event)) => event,
        };
        self.events += 1;
        self.revision = self.revision.max(event.revision());
        match event {
            WatchEvent::Put(kv) => self.updates.push((kv.key, Some(kv.value))),
            WatchEvent::Delete { key, .. } => self.updates.push((key, None)),
            WatchEvent::InSync { .. } => {}
        }
        Ok(())
    }

    /// Adds every event already queued on `stream`, up to `max` in total, without waiting.
    pub(crate) fn drain_ready(
        &mut self,
        stream: &mut WatchStream,
        max: usize,
    ) -> Result<(), WatchBroken> {
        while self.events < max {
            // `unconstrained`: tokio's cooperative budget would otherwise make a ready
            // channel look empty after ~128 polls in one task, and a stepped agent (the
            // simulator's) would miss events that are already queued.
            match tokio::task::unconstrained(stream.next()).now_or_never() {
                None => break,
                Some(event) => self.push(event)?,
            }
        }
        Ok(())
    }
}

/// Exponential backoff between failed steps, capped.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next retry; doubles each time up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success, start again from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
