use serde::{Deserialize, Serialize};

/// Felix's liveness report (`/calico/felix/v1/host/<host>/status` and `last_reported_status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FelixStatus {
    /// ISO 8601, UTC, e.g. `2026-11-27T23:19:58Z`.
    pub time: String,
    pub uptime: f64,
    pub first_update: bool,
}
