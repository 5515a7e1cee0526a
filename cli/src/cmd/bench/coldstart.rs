//! `worldland bench coldstart`: each Lambda binary's init time and size.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ColdStart {
    pub binary: String,
    pub size_mb: f64,
    pub init_ms_median: f64,
    pub init_ms_max: f64,
}

/// Time from process start to the runtime's first request for an event, for each Lambda
/// binary beside this one (a fake Runtime API on loopback answers nothing: the clock stops at
/// the request). Clients point at unreachable local endpoints: any network call at init would
/// show.
pub async fn coldstart(runs: usize) -> anyhow::Result<Vec<ColdStart>> {
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("no directory for this binary"))?;
    let mut rows = vec![];
    for name in [
        "registration-handler-lambda",
        "join-token-issuer-lambda",
        "heartbeat-recorder-lambda",
        "allocator-lambda",
        "staleness-sweeper-lambda",
    ] {
        let path = dir.join(name);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: build the workspace's binaries first (cargo build --release --bins)",
            path.display()
        );
        let size = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);
        let mut times = vec![];
        for _ in 0..runs {
            times.push(init_ms(&path, name).await?);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        rows.push(ColdStart {
            binary: name.into(),
            size_mb: size,
            init_ms_median: times[times.len() / 2],
            init_ms_max: *times.last().unwrap_or(&0.0),
        });
    }
    Ok(rows)
}

/// One start of the binary at `path`: milliseconds until it asks the fake Runtime API for an
/// event.
async fn init_ms(path: &Path, name: &str) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(path)
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("WORLDLAND_STORE", "dynamodb")
        .env("WORLDLAND_DYNAMODB_ENDPOINT", "http://127.0.0.1:9")
        .env("WORLDLAND_BUS", "sqs")
        .env("WORLDLAND_SQS_ENDPOINT", "http://127.0.0.1:9")
        .env("WORLDLAND_REDIS_URL", "redis://127.0.0.1:9")
        .env("WORLDLAND_CLUSTER", "simulated")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
    let took = started.elapsed();
    let (mut sock, _) = accepted.map_err(|_| anyhow::anyhow!("{name} never asked for an event"))??;
    let mut buf = [0u8; 256];
    let n = sock.read(&mut buf).await.unwrap_or(0);
    anyhow::ensure!(
        String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next"),
        "{name}: an unexpected first request"
    );
    let _ = child.kill().await;
    Ok(took.as_secs_f64() * 1000.0)
}

pub fn print_coldstart(rows: &[ColdStart]) {
    println!("worldland bench coldstart ({})", super::build_kind());
    println!();
    println!("{:<30} {:>10} {:>16} {:>14}", "binary", "size MiB", "init ms median", "init ms max");
    for r in rows {
        println!(
            "{:<30} {:>10.1} {:>16.1} {:>14.1}",
            r.binary, r.size_mb, r.init_ms_median, r.init_ms_max
        );
    }
    let worst = rows.iter().map(|r| r.init_ms_median).fold(0.0, f64::max);
    println!();
    println!("target: under 50 ms init — {}", if worst < 50.0 { "met" } else { "NOT met" });
}
