//! A small Prometheus registry and the health endpoint every worker serves: `/healthz` (alive),
//! `/readyz` (consuming), `/metrics` (messages handled and refused per reason, handler latency
//! histogram, queue lag). Plain HTTP/1.1 on a tokio listener: no framework for three routes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// Handler latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    /// (worker, outcome, reason) → count; outcome is done, refused or retried.
    messages: BTreeMap<(String, &'static str, String), u64>,
    latency: BTreeMap<String, Histogram>,
    /// (stream or queue) → entries waiting.
    lag: BTreeMap<String, i64>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static READY: AtomicBool = AtomicBool::new(false);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut guard = REGISTRY.lock().expect("metrics lock");
    f(guard.get_or_insert_with(Registry::default))
}

/// Counts one settled message.
pub fn message(worker: &str, outcome: &'static str, reason: &str) {
    with(|r| *r.messages.entry((worker.to_string(), outcome, reason.to_string())).or_default() += 1);
}

pub fn latency(worker: &str, took: Duration) {
    let secs = took.as_secs_f64();
    with(|r| {
        let h = r.latency.entry(worker.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    });
}

pub fn lag(source: &str, waiting: i64) {
    with(|r| {
        r.lag.insert(source.to_string(), waiting);
    });
}

/// Marks this process ready (consuming) or not.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::SeqCst);
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The registry in Prometheus' text format.
pub fn render() -> String {
    with(|r| {
        let mut out = String::new();
        out.push_str("# HELP worldland_messages_total Messages settled by a worker, by outcome and reason.\n# TYPE worldland_messages_total counter\n");
        for ((w, o, reason), n) in &r.messages {
            out.push_str(&format!(
                "worldland_messages_total{{worker=\"{}\",outcome=\"{o}\",reason=\"{}\"}} {n}\n",
                escape(w),
                escape(reason)
            ));
        }
        out.push_str(
            "# HELP worldland_handler_seconds Time a worker's handler took per message.\n# TYPE worldland_handler_seconds histogram\n",
        );
        for (w, h) in &r.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "worldland_handler_seconds_bucket{{worker=\"{}\",le=\"{b}\"}} {}\n",
                    escape(w),
                    h.counts[i]
                ));
            }
            out.push_str(&format!(
                "worldland_handler_seconds_bucket{{worker=\"{}\",le=\"+Inf\"}} {}\n",
                escape(w),
                h.count
            ));
            out.push_str(&format!("worldland_handler_seconds_sum{{worker=\"{}\"}} {}\n", escape(w), h.sum));
            out.push_str(&format!(
                "worldland_handler_seconds_count{{worker=\"{}\"}} {}\n",
                escape(w),
                h.count
            ));
        }
        out.push_str("# HELP worldland_queue_lag Entries waiting to be read.\n# TYPE worldland_queue_lag gauge\n");
        for (s, n) in &r.lag {
            out.push_str(&format!("worldland_queue_lag{{source=\"{}\"}} {n}\n", escape(s)));
        }
        out
    })
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` fires.
pub async fn serve(listener: TcpListener, mut shutdown: broadcast::Receiver<()>) {
    loop {
        let (mut sock, _) = tokio::select! {
            _ = shutdown.recv() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body, kind) = match path {
                "/healthz" => ("200 OK", "ok\n".to_string(), "text/plain"),
                "/readyz" if READY.load(Ordering::SeqCst) => ("200 OK", "ready\n".to_string(), "text/plain"),
                "/readyz" => ("503 Service Unavailable", "not ready\n".to_string(), "text/plain"),
                "/metrics" => ("200 OK", render(), "text/plain; version=0.0.4"),
                _ => ("404 Not Found", "not found\n".to_string(), "text/plain"),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = broadcast::channel(1);
        let server = tokio::spawn(serve(listener, rx));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        set_ready(false);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        message("metrics-test-worker", "refused", "invalid_hostname");
        message("metrics-test-worker", "refused", "invalid_hostname");
        latency("metrics-test-worker", Duration::from_millis(3));
        lag("metrics-test:provider:registration", 7);
        let m = get(addr, "/metrics").await;
        assert!(
            m.contains("worldland_messages_total{worker=\"metrics-test-worker\",outcome=\"refused\",reason=\"invalid_hostname\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("worldland_handler_seconds_bucket{worker=\"metrics-test-worker\",le=\"0.005\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("worldland_handler_seconds_bucket{worker=\"metrics-test-worker\",le=\"0.0025\"} 0"),
            "{m}"
        );
        assert!(
            m.contains("worldland_queue_lag{source=\"metrics-test:provider:registration\"} 7"),
            "{m}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        let _ = stop.send(());
        server.await.unwrap();
    }
}
