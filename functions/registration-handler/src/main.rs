//! `registration-handler` as a RabbitMQ consumer.

use std::sync::Arc;

use anyhow::Context as _;
use registration_handler::{Context, RegistrationHandler};
use worldland_shared::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let ctx = Context {
        store: backends::store(&cfg).await,
        bus: bus.clone(),
        replies: backends::replies(&cfg).await?,
        policy: cfg.validation_policy(),
        signatures: cfg.signature_policy,
    };
    backends::run_rabbit_worker(&cfg, bus, Arc::new(RegistrationHandler(ctx))).await?;
    Ok(())
}
