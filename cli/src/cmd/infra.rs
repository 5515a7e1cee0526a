//! `worldland infra init`: creates the DynamoDB tables and indexes, the bus's queues and
//! dead-letter queues, the bridge's consumer groups, and the broker's signing key file when the
//! configured one is absent (printing its public key). Idempotent.

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
    /// the bridge's consumer groups, and the broker key file (WORLDLAND_BROKER_KEY_FILE) when
    /// absent. Idempotent.
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
        "DynamoDB tables ready: {}, {} (indexes {}, {})",
        cfg.providers_table, cfg.jobs_table, cfg.providers_state_index, cfg.providers_placement_index
    );
    let bus = declare_queues(&cfg).await?;
    let conn = backends::redis(&cfg).await?;
    let reader = backends::redis_blocking(&cfg).await?;
    let bridge = RedisBridge::new(conn, reader, bus, BridgeSettings::from_config(&cfg));
    bridge.ensure_groups().await?;
    println!("Redis consumer group ready: {}", cfg.bridge_group);
    broker_key(&cfg)
}

/// Creates the configured broker key file when it is absent; prints the public key agents pin.
fn broker_key(cfg: &Config) -> anyhow::Result<()> {
    let Some(path) = &cfg.broker_key_file else {
        println!("WORLDLAND_BROKER_KEY_FILE unset: the workers that answer providers need one (`worldland keys --file PATH`)");
        return Ok(());
    };
    let (public, made) = if path.exists() {
        (backends::load_broker_key(path)?.public(), "ready")
    } else {
        (super::keys::create_key_file(path)?, "created (mode 0600)")
    };
    println!("broker key {made}: {}", path.display());
    println!("broker public key (agents pin it with --broker-key): {public}");
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
