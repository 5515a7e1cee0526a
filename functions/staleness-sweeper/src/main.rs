//! `staleness-sweeper` as a container: a loop on the configured interval.

use std::sync::Arc;

use staleness_sweeper::{from_config, run};
use worldland_runtime::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let ctx = Arc::new(from_config(&cfg, Arc::new(backends::rabbit(&cfg).await?)).await?);
    let shutdown = backends::shutdown_on_signal();
    backends::serve_health(&cfg, &shutdown).await?;
    worldland_runtime::metrics::set_ready(true);
    run(
        ctx,
        std::time::Duration::from_secs(cfg.sweep_interval_s),
        Arc::new(chrono::Utc::now),
        shutdown.subscribe(),
    )
    .await;
    Ok(())
}
