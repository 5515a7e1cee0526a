//! `allocator` as a RabbitMQ consumer.

use std::sync::Arc;

use allocator::{Allocator, Context};
use anyhow::Context as _;
use worldland_shared::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let ctx = Context::new(backends::store(&cfg).await, bus.clone(), backends::replies(&cfg).await?);
    backends::run_rabbit_worker(&cfg, bus, Arc::new(Allocator(ctx))).await?;
    Ok(())
}
