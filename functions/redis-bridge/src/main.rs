//! `redis-bridge`: the long-running Redis-to-bus bridge, as a container.

use anyhow::Context;
use redis_bridge::{BridgeSettings, RedisBridge};
use worldland_runtime::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    let conn = backends::redis(&cfg).await.context("connecting to Redis")?;
    let bus = backends::bus(&cfg).await.context("connecting to the bus")?;
    let shutdown = backends::shutdown_on_signal();
    backends::serve_health(&cfg, &shutdown).await?;
    worldland_runtime::metrics::set_ready(true);
    let reader = backends::redis_blocking(&cfg).await.context("connecting to Redis")?;
    RedisBridge::new(conn, reader, bus, BridgeSettings::from_config(&cfg))
        .run(shutdown.subscribe())
        .await?;
    Ok(())
}
