//! Metrics and the health endpoint every worker serves: `/healthz` (alive), `/readyz`
//! (consuming), `/metrics` (messages handled and refused per reason, handler latency histogram,
//! queue lag). Metrics go through the `metrics` facade into a Prometheus recorder installed once
//! per process; the three routes are a small axum router.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::readiness::Readiness;

const MESSAGES: &str = "worldland_messages_total";
const HANDLER_SECONDS: &str = "worldland_handler_seconds";
const QUEUE_LAG: &str = "worldland_queue_lag";
const SWEEPER_GUARD: &str = "worldland_sweeper_guard_active";
const SWEEPER_NODE_GUARD: &str = "worldland_sweeper_node_guard_active";

/// Handler latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`
/// (a scrape does it too), so they never pile up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process' Prometheus recorder: built, installed as the global `metrics` recorder and
/// described on first use, then shared by every caller (and every test) in the process.
fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HANDLER_SECONDS.to_string()), &BUCKETS)
            .expect("the latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            // Someone else installed a recorder first; /metrics will show nothing of ours.
            tracing::warn!(error = %e, "a global metrics recorder was already installed");
        }
        metrics::describe_counter!(MESSAGES, "Messages settled by a worker, by outcome and reason.");
        metrics::describe_histogram!(HANDLER_SECONDS, "Time a worker's handler took per message.");
        metrics::describe_gauge!(QUEUE_LAG, "Entries waiting to be read.");
        metrics::describe_gauge!(
            SWEEPER_GUARD,
            "1 while the staleness sweeper's stall guard holds (nobody marked offline), 0 otherwise."
        );
        metrics::describe_gauge!(
            SWEEPER_NODE_GUARD,
            "1 while the staleness sweeper's node-health guard holds (too many nodes unhealthy at once: nobody marked offline for its node), 0 otherwise."
        );
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "metrics upkeep thread not started; histograms drain on scrape only");
        }
        handle
    })
}

/// Counts one settled message; outcome is done, refused or retried.
pub fn message(worker: &str, outcome: &'static str, reason: &str) {
    handle();
    metrics::counter!(MESSAGES, "worker" => worker.to_string(), "outcome" => outcome, "reason" => reason.to_string()).increment(1);
}

/// Records how long a worker's handler took for one message.
pub fn latency(worker: &str, took: Duration) {
    handle();
    metrics::histogram!(HANDLER_SECONDS, "worker" => worker.to_string()).record(took.as_secs_f64());
}

/// Sets how many entries wait to be read from a stream or queue.
pub fn lag(source: &str, waiting: i64) {
    handle();
    metrics::gauge!(QUEUE_LAG, "source" => source.to_string()).set(waiting as f64);
}

/// Sets whether the staleness sweeper's stall guard holds.
pub fn sweeper_guard_active(active: bool) {
    handle();
    metrics::gauge!(SWEEPER_GUARD).set(if active { 1.0 } else { 0.0 });
}

/// Sets whether the staleness sweeper's node-health guard holds.
pub fn sweeper_node_guard_active(active: bool) {
    handle();
    metrics::gauge!(SWEEPER_NODE_GUARD).set(if active { 1.0 } else { 0.0 });
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    handle().render()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn prometheus() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render())
}

/// The health and metrics routes; `/readyz` answers for `readiness`.
fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(readiness)
}

/// Serves `/healthz`, `/readyz` (for `readiness`) and `/metrics` until `shutdown` fires, then
/// finishes the requests in flight and returns.
pub async fn serve(listener: TcpListener, readiness: Readiness, mut shutdown: broadcast::Receiver<()>) {
    handle();
    let stopped = async move {
        let _ = shutdown.recv().await;
    };
    if let Err(e) = axum::serve(listener, router(readiness)).with_graceful_shutdown(stopped).await {
        tracing::warn!(error = %e, "health and metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("the server closes the connection")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = broadcast::channel(1);
        let readiness = Readiness::default();
        let worker = readiness.part();
        let server = tokio::spawn(serve(listener, readiness, rx));
        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
        worker.set(false);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        worker.set(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        message("metrics-test-worker", "refused", "invalid_hostname");
        message("metrics-test-worker", "refused", "invalid_hostname");
        latency("metrics-test-worker", Duration::from_millis(3));
        lag("metrics-test:provider:registration", 7);
        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("content-type: text/plain; version=0.0.4"), "{m}");
        for line in [
            "# HELP worldland_messages_total Messages settled by a worker, by outcome and reason.",
            "# TYPE worldland_messages_total counter",
            "worldland_messages_total{worker=\"metrics-test-worker\",outcome=\"refused\",reason=\"invalid_hostname\"} 2",
            "# HELP worldland_handler_seconds Time a worker's handler took per message.",
            "# TYPE worldland_handler_seconds histogram",
            "worldland_handler_seconds_bucket{worker=\"metrics-test-worker\",le=\"0.0025\"} 0",
            "worldland_handler_seconds_bucket{worker=\"metrics-test-worker\",le=\"0.005\"} 1",
            "worldland_handler_seconds_bucket{worker=\"metrics-test-worker\",le=\"5\"} 1",
            "worldland_handler_seconds_bucket{worker=\"metrics-test-worker\",le=\"+Inf\"} 1",
            "worldland_handler_seconds_sum{worker=\"metrics-test-worker\"} 0.003",
            "worldland_handler_seconds_count{worker=\"metrics-test-worker\"} 1",
            "# HELP worldland_queue_lag Entries waiting to be read.",
            "# TYPE worldland_queue_lag gauge",
            "worldland_queue_lag{source=\"metrics-test:provider:registration\"} 7",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops when shutdown fires")
            .unwrap();
    }
}
