//! `Agent::run`: the long-running loop of the `calico-node` binary, built from the steppable
//! API (`start`, `poll_once`/`step`, `resync`, `report_status`) plus timers and backoff.

use std::future::Future;
use std::time::Duration;

use calico_backends::{StoreError, WatchStream};
use calico_dataplane::Dataplane;
use futures::StreamExt;
use tokio::time::{Instant, MissedTickBehavior};

use super::sync::{self, Backoff};
use super::{status, Agent, StepOutcome};

/// How often an apply that left endpoints waiting for their interfaces is retried (a veth
/// usually appears within a second of its endpoint record).
const WAITING_RETRY: Duration = Duration::from_secs(1);

impl<D: Dataplane> Agent<D> {
    /// The long-running loop: waits for `Ready`, starts, then applies watch batches as they
    /// arrive, resyncs every `resync_interval`, reports status, retries failures with capped
    /// exponential backoff, and returns when `shutdown` resolves, leaving the dataplane as
    /// it is.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let period = self.config.resync_interval.max(Duration::from_millis(1));
        let mut resync = tokio::time::interval_at(Instant::now() + period, period);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut status: Option<tokio::time::Interval> = None;
        loop {
            if self.watch.is_none() {
                // Felix's rule: no snapshot until `/calico/v1/Ready` is true (also after it
                // was deleted). A field borrow, not `self.is_ready()`: this future must stay
                // `Send`, and `&Agent` is not (its watch stream is not `Sync`).
                match sync::is_ready(self.store.as_ref()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(host = %self.hostname, "waiting for /calico/v1/Ready");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(self.config.ready_poll) => continue,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(host = %self.hostname, error = %e, "checking readiness");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(backoff.next_delay()) => continue,
                        }
                    }
                }
                if let Err(e) = self.start().await {
                    self.metrics.record_error();
                    let delay = backoff.next_delay();
                    tracing::warn!(host = %self.hostname, error = %e, ?delay, "snapshot failed; retrying");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
                backoff.reset();
            }
            if status.is_none() {
                status = self.status_interval();
            }
            // A failed apply is retried without waiting for new events; one that left an
            // endpoint waiting for its interface is retried every WAITING_RETRY.
            let waiting = !self.waiting.is_empty();
            let result = if self.dirty {
                self.poll_once().await
            } else {
                tokio::select! {
                biased;
                () = &mut shutdown => break,
                event = next_event(&mut self.watch) => self.step(Some(event)).await,
                _ = resync.tick() => self.resync().await,
                _ = tick(&mut status) => self.report_status().await.map(|()| StepOutcome::default()),
                () = tokio::time::sleep(WAITING_RETRY), if waiting => self.poll_once().await,
                }
            };
            // A changed set of waiting interfaces is reported at once (`calicoctl status`
            // shows it), unless status reports are disabled.
            let result = match result {
                Ok(_) if self.status_due && status.is_some() => {
                    self.report_status().await.map(|()| StepOutcome::default())
                }
                other => other,
            };
            match result {
                Ok(_) => backoff.reset(),
                Err(e) => {
                    self.metrics.record_error();
                    let delay = backoff.next_delay();
                    tracing::warn!(host = %self.hostname, error = %e, ?delay, "reconcile step failed; retrying");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(host = %self.hostname, "shutting down; the dataplane is left as it is");
    }

    /// The status timer, from the datastore's `ReportingIntervalSecs` (read once, as Felix
    /// reads config once); `None` when disabled.
    fn status_interval(&self) -> Option<tokio::time::Interval> {
        let state = self.engine.as_ref()?.state();
        let period =
            status::reporting_interval(state, &self.hostname, self.config.reporting_interval)?;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(interval)
    }
}

/// The next event of the watch; pending forever when there is none.
async fn next_event(
    watch: &mut Option<WatchStream>,
) -> Option<Result<calico_backends::WatchEvent, StoreError>> {
    match watch {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// The next tick of an optional interval; pending forever when disabled.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
