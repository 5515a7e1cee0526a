//! `heartbeat-recorder` as a RabbitMQ consumer.

use std::sync::Arc;

use anyhow::Context as _;
use heartbeat_recorder::{Context, HeartbeatRecorder};
use worldland_shared::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let ctx = Context::from_config(&cfg, backends::store(&cfg).await, backends::cluster(&cfg).await?);
    backends::run_rabbit_worker(&cfg, bus, Arc::new(HeartbeatRecorder(ctx))).await?;
    Ok(())
}
