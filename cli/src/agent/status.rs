//! Felix-style liveness reports (reference 1.9): every `ReportingIntervalSecs` the agent
//! writes `{"time", "uptime", "first_update"}` to `/calico/felix/v1/host/<host>/status` and
//! `.../last_reported_status`. An interval of 0 disables them. The record also lists the
//! interfaces the agent is waiting for (`"waiting_interfaces"`: endpoints whose veth does not
//! exist), which `calicoctl status` shows; it is rewritten as soon as that list changes.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calico_backends::{Store, StoreError};
use calico_core::cluster::ClusterState;
use tokio::time::Instant;

/// The config key naming the interval (per host, then global).
pub const REPORTING_INTERVAL_KEY: &str = "ReportingIntervalSecs";

/// Writes this host's status records; remembers whether it has written one yet.
#[derive(Debug)]
pub(crate) struct StatusReporter {
    started: Instant,
    first: bool,
}

impl StatusReporter {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            first: true,
        }
    }

    /// Writes both records with the current wall time, the agent's uptime and the
    /// interfaces it waits for.
    pub(crate) async fn report(
        &mut self,
        store: &dyn Store,
        host: &str,
        waiting: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let value = status_json(
            SystemTime::now(),
            self.started.elapsed().as_secs_f64(),
            self.first,
            waiting,
        );
        let dir = format!("/calico/felix/v1/host/{host}");
        store
            .put(&format!("{dir}/status"), value.clone().into_bytes())
            .await?;
        store
            .put(&format!("{dir}/last_reported_status"), value.into_bytes())
            .await?;
        self.first = false;
        Ok(())
    }
}

/// The reporting interval from the datastore (host config, then global), else `default`;
/// `None` when it is 0 (disabled). Unparsable values fall back to `default`, as Felix does.
pub(crate) fn reporting_interval(
    state: &ClusterState,
    host: &str,
    default: Duration,
) -> Option<Duration> {
    let configured = state
        .hosts
        .get(host)
        .and_then(|h| h.config.get(REPORTING_INTERVAL_KEY))
        .or_else(|| state.global_config.get(REPORTING_INTERVAL_KEY))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let interval = configured.map_or(default, Duration::from_secs);
    (!interval.is_zero()).then_some(interval)
}

/// The JSON of one status record.
pub(crate) fn status_json(
    now: SystemTime,
    uptime: f64,
    first_update: bool,
    waiting: &BTreeSet<String>,
) -> String {
    serde_json::json!({
        "time": iso8601(now),
        "uptime": uptime,
        "first_update": first_update,
        "waiting_interfaces": waiting,
    })
    .to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC (times before 1970 print as the epoch).
pub(crate) fn iso8601(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are small and positive by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(at(1_456_790_399)), "2016-02-29T23:59:59Z");
        assert_eq!(iso8601(at(4_102_444_800)), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn status_json_has_the_felix_fields() {
        let v: serde_json::Value = serde_json::from_str(&status_json(
            at(86_400),
            1.5,
            true,
            &BTreeSet::from(["caliX".to_owned()]),
        ))
        .unwrap();
        assert_eq!(v["time"], "1970-01-02T00:00:00Z");
        assert_eq!(v["uptime"], 1.5);
        assert_eq!(v["first_update"], true);
        assert_eq!(v["waiting_interfaces"], serde_json::json!(["caliX"]));
    }

    #[test]
    fn reporting_interval_prefers_host_then_global_and_zero_disables() {
        let default = Duration::from_secs(30);
        let mut state = ClusterState::default();
        assert_eq!(reporting_interval(&state, "h", default), Some(default));
        state
            .global_config
            .insert(REPORTING_INTERVAL_KEY.into(), "0".into());
        assert_eq!(reporting_interval(&state, "h", default), None);
        std::sync::Arc::make_mut(state.hosts.entry("h".into()).or_default())
            .config
            .insert(REPORTING_INTERVAL_KEY.into(), "5".into());
        assert_eq!(
            reporting_interval(&state, "h", default),
            Some(Duration::from_secs(5))
        );
    }
}
