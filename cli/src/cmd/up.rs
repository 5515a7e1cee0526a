//! `worldland up`: every worker in one process against the configured backends, until a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use redis_bridge::{BridgeSettings, RedisBridge};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use worldland_adapters::bus::rabbit::RabbitBus;
use worldland_adapters::replies::RedisReplies;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::cluster::Cluster;
use worldland_core::state::ItemStore;
use worldland_core::worker::Handler;
use worldland_runtime::worker::run_consumer;
use worldland_runtime::{backends, Config};

pub async fn run() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    up(cfg).await
}

/// The backends every worker shares.
struct Backends {
    bus: Arc<RabbitBus>,
    store: Arc<dyn ItemStore>,
    replies: Arc<RedisReplies>,
    cluster: Arc<dyn Cluster>,
}

async fn up(cfg: Config) -> anyhow::Result<()> {
    let b = Backends {
        bus: Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?),
        store: backends::store(&cfg).await,
        replies: backends::replies(&cfg).await?,
        cluster: backends::cluster(&cfg).await?,
    };
    let shutdown = backends::shutdown_on_signal();
    backends::serve_health(&cfg, &shutdown).await?;
    let mut tasks = vec![];
    for h in handlers(&cfg, &b) {
        let queue = QueueSpec::new(cfg.queue(h.name()), h.bindings());
        let bus: Arc<dyn Bus> = b.bus.clone();
        tasks.push(tokio::spawn(run_consumer(
            bus,
            queue,
            h,
            cfg.prefetch as usize,
            shutdown.subscribe(),
        )));
    }
    let sweeping = spawn_sweeper(&cfg, &b, &shutdown);
    let bridge = RedisBridge::new(
        backends::redis(&cfg).await?,
        backends::redis_blocking(&cfg).await?,
        b.bus.clone(),
        BridgeSettings::from_config(&cfg),
    );
    let rx = shutdown.subscribe();
    let bridge_task = tokio::spawn(async move { bridge.run(rx).await });
    for t in tasks {
        t.await??;
    }
    bridge_task.await??;
    sweeping.await?;
    Ok(())
}

/// The queue consumers: registration, join tokens, heartbeats, allocation.
fn handlers(cfg: &Config, b: &Backends) -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(registration_handler::RegistrationHandler(registration_handler::Context {
            store: b.store.clone(),
            bus: b.bus.clone(),
            replies: b.replies.clone(),
            policy: cfg.validation_policy(),
            signatures: cfg.signature_policy,
        })),
        Arc::new(join_token_issuer::JoinTokenIssuer(join_token_issuer::Context {
            store: b.store.clone(),
            cluster: b.cluster.clone(),
            replies: b.replies.clone(),
            token_ttl: chrono::Duration::seconds(cfg.token_ttl_s),
            api_endpoint: cfg.api_endpoint.clone(),
        })),
        Arc::new(heartbeat_recorder::HeartbeatRecorder(heartbeat_recorder::Context::from_config(
            cfg,
            b.store.clone(),
            b.cluster.clone(),
        ))),
        Arc::new(allocator::Allocator(allocator::Context::new(
            b.store.clone(),
            b.bus.clone(),
            b.replies.clone(),
        ))),
    ]
}

/// The staleness sweeper on its interval, until shutdown.
fn spawn_sweeper(cfg: &Config, b: &Backends, shutdown: &broadcast::Sender<()>) -> JoinHandle<()> {
    let sweeper = Arc::new(staleness_sweeper::Context {
        store: b.store.clone(),
        cluster: b.cluster.clone(),
        bus: b.bus.clone(),
        replies: b.replies.clone(),
        stale_after: chrono::Duration::seconds(cfg.stale_after_s),
        guard: staleness_sweeper::StallGuard::from_config(cfg),
        fleet: Default::default(),
    });
    tokio::spawn(staleness_sweeper::run(
        sweeper,
        Duration::from_secs(cfg.sweep_interval_s),
        Arc::new(chrono::Utc::now),
        shutdown.subscribe(),
    ))
}
