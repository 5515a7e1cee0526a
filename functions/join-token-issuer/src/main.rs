//! `join-token-issuer` as a RabbitMQ consumer.

use std::sync::Arc;

use anyhow::Context as _;
use join_token_issuer::{Context, JoinTokenIssuer};
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
    backends::run_rabbit_worker(&cfg, bus, Arc::new(JoinTokenIssuer(ctx))).await?;
    Ok(())
}
