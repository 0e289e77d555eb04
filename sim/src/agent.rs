//! `SimAgent`: a minimal node agent for one simulated host — the seam the real reconcile loop
//! (`calico_cli::agent`) will replace. It lists `/calico/` once, then follows a watch, draining
//! whatever events are already queued without ever blocking; each batch goes through core's
//! incremental `Calculator`, and when the desired state changed it is applied to the host's
//! `SimDataplane`. Like Felix it does nothing until `/calico/v1/Ready` is true.

use calico_backends::{Store, WatchEvent, WatchStream};
use calico_core::calc::Calculator;
use calico_core::keys::CALICO;
use calico_dataplane::sim::SimDataplane;
use futures::{FutureExt, StreamExt};

use crate::SimError;

/// What one agent step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentStep {
    /// Datastore events consumed (the snapshot's keys on the first step).
    pub events: usize,
    /// Changes the apply made to the dataplane.
    pub dataplane_changes: usize,
}

/// One host's agent: calculator plus watch.
pub struct SimAgent {
    host: String,
    calc: Calculator,
    watch: Option<WatchStream>,
    /// Set when the desired state may differ from what was last applied.
    dirty: bool,
}

impl std::fmt::Debug for SimAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAgent")
            .field("host", &self.host)
            .field("watching", &self.watch.is_some())
            .field("dirty", &self.dirty)
            .finish()
    }
}

impl SimAgent {
    /// A fresh agent for `host`; its first step loads the snapshot.
    pub fn new(host: &str) -> Self {
        SimAgent {
            host: host.to_string(),
            calc: Calculator::new(host),
            watch: None,
            dirty: true,
        }
    }

    /// The calculator (its cluster state and desired state).
    pub fn calculator(&self) -> &Calculator {
        &self.calc
    }

    /// Loads a snapshot into a new calculator and starts watching right after it.
    async fn resync(&mut self, store: &dyn Store) -> Result<usize, SimError> {
        let (kvs, revision) = store.list(CALICO).await.map_err(SimError::store(format!(
            "listing {CALICO} for host {}",
            self.host
        )))?;
        let watch = store
            .watch(CALICO, revision + 1)
            .await
            .map_err(SimError::store(format!(
                "watching {CALICO} for host {}",
                self.host
            )))?;
        let n = kvs.len();
        self.calc = Calculator::new(&self.host);
        self.calc
            .apply_batch(kvs.into_iter().map(|kv| (kv.key, Some(kv.value))));
        self.watch = Some(watch);
        self.dirty = true;
        Ok(n)
    }

    /// Takes every event already queued on the watch; a broken watch triggers a resync.
    async fn drain(&mut self, store: &dyn Store) -> Result<usize, SimError> {
        let mut updates = Vec::new();
        let mut broken = false;
        if let Some(watch) = self.watch.as_mut() {
            while let Some(item) = watch.next().now_or_never() {
                match item {
                    Some(Ok(WatchEvent::Put(kv))) => updates.push((kv.key, Some(kv.value))),
                    Some(Ok(WatchEvent::Delete { key, .. })) => updates.push((key, None)),
                    Some(Ok(WatchEvent::InSync { .. })) => {}
                    Some(Err(_)) | None => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken || self.watch.is_none() {
            return self.resync(store).await;
        }
        let n = updates.len();
        if n > 0 {
            let delta = self.calc.apply_batch(updates);
            self.dirty |= !delta.is_empty();
        }
        Ok(n)
    }

    /// One reconcile step: take queued updates, then apply the desired state if it changed.
    ///
    /// # Errors
    /// Store failures while listing or watching; dataplane failures while applying (the next
    /// step retries).
    pub async fn step(
        &mut self,
        store: &dyn Store,
        dataplane: &SimDataplane,
    ) -> Result<AgentStep, SimError> {
        let events = self.drain(store).await?;
        let mut step = AgentStep {
            events,
            dataplane_changes: 0,
        };
        if self.dirty && self.calc.state().ready {
            let report = dataplane
                .apply_now(self.calc.desired())
                .map_err(SimError::dataplane(
                    &self.host,
                    "applying the desired state",
                ))?;
            self.dirty = false;
            step.dataplane_changes = report.changes.len();
        }
        Ok(step)
    }
}
