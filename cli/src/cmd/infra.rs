//! `worldland infra init`: creates the DynamoDB tables and indexes, the bus's queues and
//! dead-letter queues, and the bridge's consumer groups. Idempotent.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use redis_bridge::{BridgeSettings, RedisBridge};
use worldland_core::bus::Bus;
use worldland_runtime::config::BusKind;
use worldland_runtime::{backends, Config};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: InfraCommand,
}

#[derive(Subcommand)]
enum InfraCommand {
    /// Create DynamoDB tables and indexes, the RabbitMQ exchange, queues and dead-letter queues,
    /// and the bridge's consumer groups. Idempotent.
    Init,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        InfraCommand::Init => init().await,
    }
}

async fn init() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    let store = backends::dynamo(&cfg).await;
    store.ensure_tables().await.context("creating DynamoDB tables")?;
    println!(
        "DynamoDB tables ready: {}, {} (index {})",
        cfg.providers_table, cfg.jobs_table, cfg.providers_state_index
    );
    let bus = declare_queues(&cfg).await?;
    let conn = backends::redis(&cfg).await?;
    let reader = backends::redis_blocking(&cfg).await?;
    let bridge = RedisBridge::new(conn, reader, bus, BridgeSettings::from_config(&cfg));
    bridge.ensure_groups().await?;
    println!("Redis consumer group ready: {}", cfg.bridge_group);
    Ok(())
}

/// Every worker's queue (and its dead-letter queue) on the configured bus.
async fn declare_queues(cfg: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match cfg.bus {
        BusKind::Rabbitmq => {
            let bus = backends::rabbit(cfg).await.context("connecting to RabbitMQ")?;
            for q in cfg.queues() {
                bus.declare(&q).await?;
                println!("RabbitMQ queue ready: {} (+ {})", q.name, q.dead_letter_name());
            }
            Arc::new(bus)
        }
        BusKind::Sqs => {
            let bus = backends::sqs(cfg).await;
            for q in cfg.queues() {
                bus.declare(&q).await?;
                println!("SQS queue ready: {} (+ {})", q.name, q.dead_letter_name());
            }
            Arc::new(bus)
        }
    })
}
