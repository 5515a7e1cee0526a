//! `registration-handler` as a RabbitMQ consumer (the container deployment).

use std::sync::Arc;

use anyhow::Context as _;
use worldland_runtime::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let handler = Arc::new(registration_handler::from_config(&cfg, bus.clone()).await?);
    backends::run_rabbit_worker(&cfg, bus, handler).await?;
    Ok(())
}
