//! Prometheus metrics of the agent and a tiny HTTP endpoint answering `GET /metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters and gauges the reconcile loop updates; shared with the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    applies: AtomicU64,
    apply_nanos: AtomicU64,
    endpoints: AtomicU64,
    errors: AtomicU64,
    invalid_records: AtomicU64,
    resyncs: AtomicU64,
    waiting_interfaces: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    pub applies: u64,
    pub apply_nanos: u64,
    pub endpoints: u64,
    pub errors: u64,
    pub invalid_records: u64,
    pub resyncs: u64,
    pub waiting_interfaces: u64,
}

impl Metrics {
    /// Records one dataplane apply and how long it took.
    pub fn record_apply(&self, took: Duration) {
        self.applies.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.apply_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts datastore records that failed to decode (each is treated as absent).
    pub fn record_invalid_records(&self, n: usize) {
        self.invalid_records
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Sets how many endpoint interfaces the last apply found missing.
    pub fn set_waiting_interfaces(&self, n: usize) {
        self.waiting_interfaces
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn record_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_endpoints(&self, n: usize) {
        self.endpoints
            .store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            applies: self.applies.load(Ordering::Relaxed),
            apply_nanos: self.apply_nanos.load(Ordering::Relaxed),
            endpoints: self.endpoints.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            invalid_records: self.invalid_records.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            waiting_interfaces: self.waiting_interfaces.load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        // Precision loss only beyond 2^53 ns (~104 days of apply time) is acceptable.
        #[allow(clippy::cast_precision_loss)]
        let seconds = s.apply_nanos as f64 / 1e9;
        format!(
            "# HELP calico_node_applies_total Dataplane applies performed.\n\
             # TYPE calico_node_applies_total counter\n\
             calico_node_applies_total {}\n\
             # HELP calico_node_apply_seconds Time spent applying desired state.\n\
             # TYPE calico_node_apply_seconds summary\n\
             calico_node_apply_seconds_sum {seconds}\n\
             calico_node_apply_seconds_count {}\n\
             # HELP calico_node_endpoints Workload endpoints on this host.\n\
             # TYPE calico_node_endpoints gauge\n\
             calico_node_endpoints {}\n\
             # HELP calico_node_errors_total Failed reconcile steps.\n\
             # TYPE calico_node_errors_total counter\n\
             calico_node_errors_total {}\n\
             # HELP calico_node_invalid_records_total Datastore records that failed to decode (treated as absent).\n\
             # TYPE calico_node_invalid_records_total counter\n\
             calico_node_invalid_records_total {}\n\
             # HELP calico_node_resyncs_total Periodic resyncs and re-snapshots.\n\
             # TYPE calico_node_resyncs_total counter\n\
             calico_node_resyncs_total {}\n\
             # HELP calico_node_interfaces_waiting Endpoint interfaces not found on the host (programmed once they appear).\n\
             # TYPE calico_node_interfaces_waiting gauge\n\
             calico_node_interfaces_waiting {}\n",
            s.applies,
            s.applies,
            s.endpoints,
            s.errors,
            s.invalid_records,
            s.resyncs,
            s.waiting_interfaces
        )
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; anything else gets 404.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, Arc::clone(&metrics)));
                }
                Err(e) => tracing::warn!(error = %e, "accepting a metrics connection"),
            },
        }
    }
}

/// Reads the request head (bounded) and answers it.
async fn answer(mut stream: TcpStream, metrics: Arc<Metrics>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let request_line = String::from_utf8_lossy(&head);
    let mut parts = request_line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", metrics.render()),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        tracing::debug!(error = %e, "writing a metrics response");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_metric_with_its_value() {
        let m = Metrics::default();
        m.record_apply(Duration::from_millis(1500));
        m.record_apply(Duration::from_millis(500));
        m.record_error();
        m.record_resync();
        m.record_invalid_records(2);
        m.set_waiting_interfaces(4);
        m.set_endpoints(3);
        let text = m.render();
        for line in [
            "calico_node_applies_total 2",
            "calico_node_apply_seconds_sum 2",
            "calico_node_apply_seconds_count 2",
            "calico_node_endpoints 3",
            "calico_node_errors_total 1",
            "calico_node_invalid_records_total 2",
            "calico_node_resyncs_total 1",
            "calico_node_interfaces_waiting 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn http_endpoint_serves_metrics_and_404s_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.set_endpoints(7);
        let server = tokio::spawn(serve(listener, metrics, std::future::pending()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("\ncalico_node_endpoints 7\n"), "{ok}");
        let missing = get("/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.abort();
    }
}
