//! calico-node's reconcile loop (Felix's role), level-triggered: wait for `Ready`, list
//! `/calico/`, compute this host's desired state, apply it (only the difference: nothing is
//! flushed, so traffic keeps flowing across a restart), then follow the watch in batches,
//! resync against the dataplane periodically, and take a fresh snapshot whenever the watch
//! breaks (`Compacted`, a lost connection).
//!
//! - `engine`: raw updates → `DesiredState`.
//! - [`sync`]: snapshot, watch draining, backoff.
//! - `status`: liveness reports to the datastore.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
//! - `run`: [`Agent::run`], the long-running loop with timers and backoff.
//! - [`launcher`]: the process-based `NodeControl` calicoctl uses to start/stop the agent.
//!
//! The loop is steppable ([`Agent::start`], [`Agent::poll_once`], [`Agent::resync`]) so the
//! simulator can run many agents in one thread and settle deterministically; [`Agent::run`]
//! is the long-running loop built from those steps.

mod engine;
mod error;
pub mod launcher;
pub mod metrics;
mod run;
mod status;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use calico_backends::{Revision, Store, StoreError, WatchStream};
use calico_core::cluster::ClusterState;
use calico_core::desired::DesiredState;
use calico_core::plan::{plan, Change};
use calico_core::shared::SharedDecodes;
use calico_core::ModelError;
use calico_dataplane::Dataplane;
use tokio::time::Instant;

use engine::Engine;
pub use error::AgentError;
pub use metrics::{Metrics, MetricsSnapshot};
use status::StatusReporter;
pub use status::REPORTING_INTERVAL_KEY;
pub use sync::SharedSnapshots;
use sync::{Batch, WatchBroken};

/// How the agent paces itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// How often `observe()` is compared with the desired state to repair drift.
    pub resync_interval: Duration,
    /// First delay after a failed step; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often to re-check `/calico/v1/Ready` before the first snapshot.
    pub ready_poll: Duration,
    /// Most watch events folded into one apply.
    pub max_batch: usize,
    /// Status report interval when the datastore does not set `ReportingIntervalSecs`
    /// (zero disables).
    pub reporting_interval: Duration,
    /// Compute and print the plan instead of applying it.
    pub dry_run: bool,
    /// Decoded endpoint records shared with other agents of this process (the simulator's
    /// hosts), so that N agents hold one copy of each; `None` for a real node.
    pub shared_decodes: Option<SharedDecodes>,
    /// Snapshots shared with other agents of this process (the simulator's hosts, over one
    /// `MemStore`); `None` lists the store.
    pub shared_snapshots: Option<SharedSnapshots>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            ready_poll: Duration::from_secs(1),
            max_batch: 1000,
            reporting_interval: Duration::from_secs(30),
            dry_run: false,
            shared_decodes: None,
            shared_snapshots: None,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepOutcome {
    /// Watch events consumed (including the in-sync marker).
    pub events: usize,
    /// The dataplane changes made (or, in a dry run, planned), in one vocabulary.
    pub changes: Vec<Change>,
    /// Whether a fresh snapshot was taken (first start, broken watch).
    pub resnapshot: bool,
}

impl StepOutcome {
    /// Whether the dataplane changed (or would have, in a dry run).
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// The node agent of one host.
pub struct Agent<D: Dataplane> {
    store: Arc<dyn Store>,
    dataplane: D,
    hostname: String,
    config: AgentConfig,
    engine: Option<Engine>,
    watch: Option<WatchStream>,
    /// The revision the agent's view is consistent at.
    revision: Revision,
    /// The last apply failed: apply again at the next step even without new events.
    dirty: bool,
    /// Interfaces the last apply found missing (endpoints whose veth is not there yet or any
    /// more): applied again at every step until they appear.
    waiting: BTreeSet<String>,
    /// `waiting` changed since the last status report: `run` reports at once.
    status_due: bool,
    metrics: Arc<Metrics>,
    status: StatusReporter,
}

impl<D: Dataplane> std::fmt::Debug for Agent<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("hostname", &self.hostname)
            .field("revision", &self.revision)
            .field("watching", &self.watch.is_some())
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl<D: Dataplane> Agent<D> {
    /// An agent that has not read anything yet; call [`Agent::start`] or [`Agent::run`].
    pub fn new(store: Arc<dyn Store>, dataplane: D, hostname: String, config: AgentConfig) -> Self {
        Self {
            store,
            dataplane,
            hostname,
            config,
            engine: None,
            watch: None,
            revision: 0,
            dirty: false,
            waiting: BTreeSet::new(),
            status_due: false,
            metrics: Arc::new(Metrics::default()),
            status: StatusReporter::new(),
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The shared metrics (serve them with [`metrics::serve`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// For the simulator's tamper methods and packet walks.
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Stops the agent and hands back its dataplane, as it is.
    pub fn into_dataplane(self) -> D {
        self.dataplane
    }

    /// The desired state of the last snapshot/batch, `None` before [`Agent::start`].
    pub fn desired(&self) -> Option<&DesiredState> {
        self.engine.as_ref().map(Engine::desired)
    }

    /// The cluster state as the agent sees it, `None` before [`Agent::start`].
    pub fn cluster_state(&self) -> Option<&ClusterState> {
        self.engine.as_ref().map(Engine::state)
    }

    /// The revision the agent's view is consistent at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Whether `/calico/v1/Ready` is `true`.
    ///
    /// # Errors
    /// The datastore read failed.
    pub async fn is_ready(&self) -> Result<bool, AgentError> {
        sync::is_ready(self.store.as_ref())
            .await
            .map_err(|e| store_error("reading /calico/v1/Ready", e))
    }

    /// Takes a fresh snapshot of `/calico/` into a new engine, applies its desired state
    /// (only the difference reaches the kernel) and opens the watch from the snapshot's
    /// revision. Does not check `Ready` ([`Agent::poll_once`] and [`Agent::run`] wait for
    /// it). A batch that deletes `Ready` drops the watch without touching the dataplane.
    ///
    /// # Errors
    /// The listing, the watch or the apply failed; the next step starts over.
    pub async fn start(&mut self) -> Result<StepOutcome, AgentError> {
        self.watch = None;
        self.engine = None;
        let mut engine = Engine::new(&self.hostname, self.config.shared_decodes.clone());
        let (keys, revision) = match &self.config.shared_snapshots {
            Some(snapshots) => {
                let (listing, revision) = snapshots
                    .snapshot()
                    .await
                    .map_err(|e| store_error("listing /calico/", e))?;
                let ingested = engine.load_listing(&listing);
                report_invalid(&self.hostname, &self.metrics, &ingested.invalid);
                (listing.len(), revision)
            }
            None => {
                let (updates, revision) = sync::snapshot(self.store.as_ref())
                    .await
                    .map_err(|e| store_error("listing /calico/", e))?;
                let keys = updates.len();
                let ingested = engine.apply_batch(updates);
                report_invalid(&self.hostname, &self.metrics, &ingested.invalid);
                (keys, revision)
            }
        };
        self.metrics.set_endpoints(engine.local_endpoints());
        self.engine = Some(engine);
        self.revision = revision;
        tracing::info!(host = %self.hostname, revision, keys, "snapshot loaded");
        let changes = self.apply_desired().await?;
        let watch = self
            .store
            .watch(sync::PREFIX, revision + 1)
            .await
            .map_err(|e| store_error("watching /calico/", e))?;
        self.watch = Some(watch);
        Ok(StepOutcome {
            events: 0,
            changes,
            resnapshot: true,
        })
    }

    /// Takes every watch event that is ready now (without waiting, at most `max_batch`),
    /// feeds them as one batch and applies when this host's desired state changed. When
    /// there is no watch yet (or `Ready` was deleted) it does nothing until
    /// `/calico/v1/Ready` is true, then starts with a fresh snapshot; a broken watch is
    /// replaced by a fresh snapshot at once.
    ///
    /// # Errors
    /// A datastore or dataplane failure; the agent stays consistent and the next step
    /// retries (a failed apply is retried even without new events).
    pub async fn poll_once(&mut self) -> Result<StepOutcome, AgentError> {
        self.step(None).await
    }

    /// Compares what the dataplane holds with the desired state and re-applies when they
    /// differ (drift made behind the agent's back).
    ///
    /// # Errors
    /// Observing or applying failed.
    pub async fn resync(&mut self) -> Result<StepOutcome, AgentError> {
        let Some(engine) = &self.engine else {
            return self.start().await;
        };
        self.metrics.record_resync();
        let observed = self
            .dataplane
            .observe()
            .await
            .map_err(|source| AgentError::Observe {
                host: self.hostname.clone(),
                source,
            })?;
        let drift = plan(engine.desired(), &observed);
        if drift.is_empty() {
            return Ok(StepOutcome::default());
        }
        tracing::warn!(host = %self.hostname, drift = %drift, "dataplane drifted; repairing");
        let changes = self.apply_desired().await?;
        Ok(StepOutcome {
            changes,
            ..StepOutcome::default()
        })
    }

    /// Writes this host's status records now.
    ///
    /// # Errors
    /// The datastore write failed.
    pub async fn report_status(&mut self) -> Result<(), AgentError> {
        self.status
            .report(self.store.as_ref(), &self.hostname, &self.waiting)
            .await
            .map_err(|e| store_error(&format!("reporting status of host {}", self.hostname), e))?;
        self.status_due = false;
        Ok(())
    }

    /// One batch: `first` (already received by `run`) plus everything ready now.
    async fn step(
        &mut self,
        first: Option<Option<Result<calico_backends::WatchEvent, StoreError>>>,
    ) -> Result<StepOutcome, AgentError> {
        if self.watch.is_none() {
            // Like `run`: no snapshot until Ready (a stepped agent just idles).
            let ready = sync::is_ready(self.store.as_ref())
                .await
                .map_err(|e| store_error("reading /calico/v1/Ready", e))?;
            if !ready {
                return Ok(StepOutcome::default());
            }
            return self.start().await;
        }
        let Some(watch) = self.watch.as_mut() else {
            return self.start().await;
        };
        let mut batch = Batch::default();
        let drained = match first {
            Some(event) => batch.push(event),
            None => Ok(()),
        }
        .and_then(|()| batch.drain_ready(watch, self.config.max_batch));
        if let Err(broken) = drained {
            self.metrics.record_resync();
            match &broken {
                WatchBroken::Failed(e) => {
                    tracing::warn!(host = %self.hostname, error = %e, "watch broke; taking a new snapshot")
                }
                WatchBroken::Ended => {
                    tracing::warn!(host = %self.hostname, "watch ended; taking a new snapshot")
                }
            }
            let mut outcome = self.start().await?;
            outcome.events = batch.events;
            return Ok(outcome);
        }
        let Some(engine) = self.engine.as_mut() else {
            return self.start().await;
        };
        let events = batch.events;
        self.revision = self.revision.max(batch.revision);
        let was_ready = engine.state().ready;
        let ingested = engine.apply_batch(batch.updates);
        let changed = ingested.changed;
        self.metrics.set_endpoints(engine.local_endpoints());
        report_invalid(&self.hostname, &self.metrics, &ingested.invalid);
        if was_ready && !engine.state().ready {
            // Felix's rule: Ready deleted (or false) means the datastore is being rebuilt;
            // stop following it, leave the dataplane alone, snapshot again later.
            tracing::warn!(host = %self.hostname, "/calico/v1/Ready is no longer true; dropping the watch");
            self.watch = None;
            return Ok(StepOutcome {
                events,
                ..StepOutcome::default()
            });
        }
        let changes = if changed || self.dirty || !self.waiting.is_empty() {
            self.apply_desired().await?
        } else {
            Vec::new()
        };
        Ok(StepOutcome {
            events,
            changes,
            resnapshot: false,
        })
    }

    /// Applies the engine's desired state (or, in a dry run, prints the plan against what
    /// is observed) and returns the changes.
    async fn apply_desired(&mut self) -> Result<Vec<Change>, AgentError> {
        let Some(engine) = &self.engine else {
            return Ok(Vec::new());
        };
        let desired = engine.desired();
        if self.config.dry_run {
            let observed =
                self.dataplane
                    .observe()
                    .await
                    .map_err(|source| AgentError::Observe {
                        host: self.hostname.clone(),
                        source,
                    })?;
            let planned = plan(desired, &observed).changes;
            // A closed stdout (a pipe whose reader left) must not stop the agent.
            let mut out = std::io::stdout().lock();
            for change in &planned {
                let _ = writeln!(out, "{}: would {change}", self.hostname);
            }
            let _ = out.flush();
            drop(out);
            tracing::info!(host = %self.hostname, changes = planned.len(), "dry run: plan computed, nothing applied");
            return Ok(planned);
        }
        let started = Instant::now();
        let result = self.dataplane.apply(desired).await;
        self.metrics.record_apply(started.elapsed());
        match result {
            Ok(report) => {
                self.dirty = false;
                self.note_waiting(report.waiting);
                if !report.changes.is_empty() {
                    let changes: Vec<String> =
                        report.changes.iter().map(ToString::to_string).collect();
                    tracing::info!(host = %self.hostname, ?changes, "applied");
                }
                Ok(report.changes)
            }
            Err(source) => {
                self.dirty = true;
                Err(AgentError::Apply {
                    host: self.hostname.clone(),
                    source,
                })
            }
        }
    }
}

/// Says out loud which records failed to decode: each counts as absent (Felix's rule), so
/// an endpoint's interface leaves the dispatch chains, whose final DROP then drops all its
/// traffic, and a profile missing its rules drops everything for its endpoints.
fn report_invalid(host: &str, metrics: &Metrics, invalid: &BTreeMap<String, ModelError>) {
    for (key, error) in invalid {
        tracing::warn!(%host, %key, %error, "undecodable record treated as absent");
    }
    metrics.record_invalid_records(invalid.len());
}

impl<D: Dataplane> Agent<D> {
    /// Interfaces the last apply found missing (see [`calico_dataplane::ApplyReport`]).
    pub fn waiting_interfaces(&self) -> &BTreeSet<String> {
        &self.waiting
    }

    /// Logs each interface once when it starts and stops waiting, and sets the gauge.
    fn note_waiting(&mut self, now: BTreeSet<String>) {
        for iface in now.difference(&self.waiting) {
            tracing::warn!(host = %self.hostname, %iface, "interface not found; its endpoint is programmed once it appears");
        }
        for iface in self.waiting.difference(&now) {
            tracing::info!(host = %self.hostname, %iface, "interface no longer waited for");
        }
        self.metrics.set_waiting_interfaces(now.len());
        self.status_due |= self.waiting != now;
        self.waiting = now;
    }
}

fn store_error(action: &str, source: StoreError) -> AgentError {
    AgentError::Store {
        action: action.to_owned(),
        source,
    }
}
