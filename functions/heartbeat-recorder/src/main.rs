//! `heartbeat-recorder` as a RabbitMQ consumer.

use std::sync::Arc;

use anyhow::Context as _;
use heartbeat_recorder::{Context, HeartbeatRecorder};
use worldland_shared::bus::QueueSpec;
use worldland_shared::worker::{run_consumer, Handler};
use worldland_shared::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let ctx = Context::from_config(&cfg, backends::store(&cfg).await, backends::cluster(&cfg).await?);
    let handler: Arc<dyn Handler> = Arc::new(HeartbeatRecorder(ctx));
    let queue = QueueSpec::new(cfg.queue(handler.name()), handler.bindings());
    let shutdown = backends::shutdown_on_signal();
    run_consumer(bus, queue, handler, cfg.prefetch as usize, shutdown.subscribe()).await?;
    Ok(())
}
