//! The heartbeat path under load: bridges and counting recorders, each on a thread of its own,
//! while the heartbeats are XADDed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use tokio::sync::broadcast;
use worldland_adapters::bus::rabbit::RabbitBus;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::state::ItemStore;
use worldland_core::worker::{Failure, Handler};
use worldland_runtime::worker::run_consumer;
use worldland_runtime::{backends, Config};

use super::cpu::{cpu_time, join_thread, on_own_thread};
use super::{recorder, xadd_all};

/// The recorder, counting what it has handled and telling whoever waits once the count reaches
/// the target (telling on every heartbeat would wake the waiting thread each time: CPU charged to
/// the recorder's thread that a real recorder does not spend).
struct Counting(
    heartbeat_recorder::HeartbeatRecorder,
    Arc<AtomicU64>,
    u64,
    tokio::sync::watch::Sender<u64>,
);

#[async_trait::async_trait]
impl Handler for Counting {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn bindings(&self) -> &'static [&'static str] {
        self.0.bindings()
    }
    async fn handle(&self, key: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Failure> {
        let out = self.0.handle(key, body, now).await;
        let n = self.1.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.2 {
            let _ = self.3.send(n);
        }
        out
    }
}

/// What the heartbeat path took: seconds until the recorder had handled them all, the CPU time
/// of the bridge's and the recorder's threads and of the process, and the queue (to delete).
pub(super) struct PathRun {
    pub(super) secs: f64,
    pub(super) bridge_cpu: Duration,
    pub(super) recorder_cpu: Duration,
    pub(super) process_cpu: Duration,
    pub(super) queue: QueueSpec,
}

/// The heartbeat path: `parallel` bridges and as many counting recorders run, each on a thread
/// of its own, while `bodies` are XADDed.
pub(super) async fn heartbeat_path(
    cfg: &Config,
    store: Arc<dyn ItemStore>,
    bus: &Arc<RabbitBus>,
    conn: &mut ConnectionManager,
    bodies: &[(String, String)],
    parallel: usize,
) -> anyhow::Result<PathRun> {
    let count = bodies.len();
    let done = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let handler: Arc<dyn Handler> = Arc::new(Counting(recorder(store).await?, done.clone(), count as u64, done_tx));
    let queue = QueueSpec::new(cfg.queue(handler.name()), handler.bindings());
    bus.declare(&queue).await?;
    let (stop, _) = broadcast::channel(1);

    let mut recorders = vec![];
    for _ in 0..parallel {
        let (consumer_bus, consumer_queue, prefetch, rx) = (bus.clone(), queue.clone(), cfg.prefetch as usize, stop.subscribe());
        let handler = handler.clone();
        recorders.push(on_own_thread("bench-recorder", move || async move {
            run_consumer(
                consumer_bus as Arc<dyn Bus>,
                consumer_queue,
                handler,
                prefetch,
                worldland_runtime::readiness::ReadyPart::unobserved(),
                rx,
            )
            .await?;
            Ok(())
        }));
    }
    // Each bridge makes its own connections (Redis and RabbitMQ) on its thread; one consumer
    // group, a consumer name each.
    let mut bridges = vec![];
    for b in 0..parallel {
        let mut bridge_cfg = cfg.clone();
        bridge_cfg.consumer_name = Some(format!("bench-bridge-{b}"));
        let rx = stop.subscribe();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let bridging = on_own_thread("bench-bridge", move || async move {
            let bridge = redis_bridge::RedisBridge::new(
                backends::redis(&bridge_cfg).await?,
                backends::redis_blocking(&bridge_cfg).await?,
                Arc::new(backends::rabbit(&bridge_cfg).await?),
                redis_bridge::BridgeSettings::from_config(&bridge_cfg),
            );
            bridge.ensure_groups().await?;
            let _ = ready_tx.send(());
            bridge.run(rx).await?;
            Ok(())
        });
        if ready_rx.await.is_err() {
            // The bridge thread gave up before it was ready: its error says why.
            let _ = stop.send(());
            join_thread(bridging).await?;
            anyhow::bail!("a bridge stopped before it was ready");
        }
        bridges.push(bridging);
    }

    let cpu0 = cpu_time();
    let t0 = Instant::now();
    xadd_all(conn, &cfg.streams().heartbeat(), bodies).await?;
    tokio::time::timeout(Duration::from_secs(600), done_rx.wait_for(|n| *n as usize >= count)).await??;
    let secs = t0.elapsed().as_secs_f64();
    let process_cpu = cpu_time().saturating_sub(cpu0);
    let _ = stop.send(());
    let (mut recorder_cpu, mut bridge_cpu) = (Duration::ZERO, Duration::ZERO);
    for r in recorders {
        recorder_cpu += join_thread(r).await?.1;
    }
    for b in bridges {
        bridge_cpu += join_thread(b).await?.1;
    }
    Ok(PathRun {
        secs,
        bridge_cpu,
        recorder_cpu,
        process_cpu,
        queue,
    })
}
