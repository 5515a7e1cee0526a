//! `join-token-issuer` as a RabbitMQ consumer.

use std::sync::Arc;

use anyhow::Context as _;
use join_token_issuer::{Context, JoinTokenIssuer};
use worldland_shared::bus::QueueSpec;
use worldland_shared::worker::{run_consumer, Handler};
use worldland_shared::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let ctx = Context {
        store: backends::store(&cfg).await,
        cluster: backends::cluster(&cfg).await?,
        replies: backends::replies(&cfg).await?,
        token_ttl: chrono::Duration::seconds(cfg.token_ttl_s),
        api_endpoint: cfg.api_endpoint.clone(),
    };
    let handler: Arc<dyn Handler> = Arc::new(JoinTokenIssuer(ctx));
    let queue = QueueSpec::new(cfg.queue(handler.name()), handler.bindings());
    let shutdown = backends::shutdown_on_signal();
    run_consumer(bus, queue, handler, cfg.prefetch as usize, shutdown.subscribe()).await?;
    Ok(())
}
