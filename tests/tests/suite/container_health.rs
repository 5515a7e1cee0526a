//! Every container binary, started as an operator would (its own process, configured only by
//! `WORLDLAND_*` variables, against this machine's Redis and RabbitMQ), serves `/healthz`,
//! `/readyz` and `/metrics` — the endpoints `infra/k8s` probes — and stops cleanly on SIGTERM.
//! The binaries come from `cargo build --workspace --bins` (scripts/test runs it first).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use worldland_tests::TestEnv;

/// How long a binary may take to connect and answer (a bounded wait on another process).
const START_WITHIN: Duration = Duration::from_secs(30);

/// One GET; the status code and body, or why not.
async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("no status in {out:?}"))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Polls `path` until it answers `want` (the process is connecting) or the time is up.
async fn await_status(child: &mut Child, name: &str, port: u16, path: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + START_WITHIN;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let mut last = Err("not asked yet".to_string());
    while tokio::time::Instant::now() < deadline {
        ticker.tick().await;
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited with {status} before {path} answered {want}");
        }
        last = get(port, path).await;
        if let Ok((status, body)) = &last {
            if *status == want {
                return body.clone();
            }
        }
    }
    panic!("{name}: {path} never answered {want}; last: {last:?}");
}

async fn serves_health_and_stops_on_sigterm(name: &str, queue_bindings: Option<&[&str]>) {
    let env = TestEnv::new(&[]);
    if let Some(bindings) = queue_bindings {
        env.queue(name, bindings); // deleted when the test ends
    }
    let binary = worldland_tests::bin_dir().join(name);
    assert!(
        binary.exists(),
        "{} missing: run `cargo build --workspace --bins` (scripts/test does)",
        binary.display()
    );
    let port = worldland_tests::spare_port();
    let cfg = &env.cfg;
    let mut child = Command::new(&binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("WORLDLAND_HEALTH_ADDR", format!("127.0.0.1:{port}"))
        .env("WORLDLAND_STORE", "memory")
        .env("WORLDLAND_CLUSTER", "simulated")
        .env("WORLDLAND_BUS", "rabbitmq")
        .env("WORLDLAND_EXCHANGE", &cfg.exchange)
        .env("WORLDLAND_QUEUE_PREFIX", &cfg.queue_prefix)
        .env("WORLDLAND_STREAM_PREFIX", &cfg.stream_prefix)
        .env("WORLDLAND_BRIDGE_GROUP", &cfg.bridge_group)
        .env("WORLDLAND_BRIDGE_BLOCK_MS", "100")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    assert_eq!(await_status(&mut child, name, port, "/healthz", 200).await.trim(), "ok");
    await_status(&mut child, name, port, "/readyz", 200).await;
    let (status, metrics) = get(port, "/metrics").await.expect("/metrics");
    assert_eq!(status, 200, "{name} /metrics: {metrics}");
    let pid = child.id().expect("running").to_string();
    let term = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(term.success());
    let exit = tokio::time::timeout(START_WITHIN, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} did not stop within {START_WITHIN:?} of SIGTERM"))
        .expect("exit status");
    assert!(exit.success(), "{name} stopped with {exit} after SIGTERM");
}

#[tokio::test]
async fn redis_bridge_serves_health() {
    serves_health_and_stops_on_sigterm("redis-bridge", None).await;
}

#[tokio::test]
async fn registration_handler_serves_health() {
    serves_health_and_stops_on_sigterm("registration-handler", Some(registration_handler::BINDINGS)).await;
}

#[tokio::test]
async fn join_token_issuer_serves_health() {
    serves_health_and_stops_on_sigterm("join-token-issuer", Some(join_token_issuer::BINDINGS)).await;
}

#[tokio::test]
async fn heartbeat_recorder_serves_health() {
    serves_health_and_stops_on_sigterm("heartbeat-recorder", Some(heartbeat_recorder::BINDINGS)).await;
}

#[tokio::test]
async fn staleness_sweeper_serves_health() {
    serves_health_and_stops_on_sigterm("staleness-sweeper", None).await;
}

#[tokio::test]
async fn csr_approver_serves_health() {
    serves_health_and_stops_on_sigterm("csr-approver", None).await;
}

#[tokio::test]
async fn allocator_serves_health() {
    serves_health_and_stops_on_sigterm("allocator", Some(worldland_core::bus::routes::ALLOCATOR.1)).await;
}
