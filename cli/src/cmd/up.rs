//! `worldland up`: every worker in one process against the configured backends, until a signal.
//! Each worker is built by its own crate's constructor from one shared [`Backends`], exactly as
//! its container and its Lambda build it.

use std::sync::Arc;

use anyhow::Context as _;
use worldland_core::bus::Bus;
use worldland_runtime::readiness::Readiness;
use worldland_runtime::worker::{run_worker, Worker};
use worldland_runtime::{backends, Backends, Config};

pub async fn run() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    up(cfg).await
}

async fn up(cfg: Config) -> anyhow::Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    // One store, one set of replies and one cluster client, shared by every worker.
    let b = Backends::new(cfg.clone(), bus.clone());
    let shutdown = worldland_redis::shutdown_on_signal();
    let readiness = Readiness::default();
    backends::serve_health(&cfg, readiness.clone(), &shutdown).await?;
    let workers: Vec<Worker> = vec![
        registration_handler::worker(b.clone()).await?,
        join_token_issuer::worker(b.clone()).await?,
        heartbeat_recorder::worker(b.clone()).await?,
        allocator::worker(b.clone()).await?,
        staleness_sweeper::worker(b.clone()).await?,
        csr_approver::worker(b.clone()).await?,
        redis_bridge::worker(b.clone()).await?,
    ];
    let mut tasks = vec![];
    for w in workers {
        let (bus, cfg, ready, rx) = (bus.clone(), cfg.clone(), readiness.part(), shutdown.subscribe());
        let name = w.name();
        tasks.push(tokio::spawn(async move {
            run_worker(w, bus, &cfg, ready, rx)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
