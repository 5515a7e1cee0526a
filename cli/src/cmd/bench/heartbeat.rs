//! `worldland bench heartbeat`: (a) the recorder's core on the embedded store, on one core, for
//! a fleet of N providers at 30 s intervals; (b) the whole heartbeat path through real Redis and
//! RabbitMQ next to a raw Redis-stream + RabbitMQ publish-confirm/consume round trip measured in
//! the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k256::ecdsa::SigningKey;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use redis::aio::ConnectionManager;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use worldland_adapters::bus::rabbit::RabbitBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::{Heartbeat, StreamEnvelope};
use worldland_core::signature::{sign_personal, SignaturePolicy};
use worldland_core::state::providers::seed_available;
use worldland_core::state::{ItemStore, Table};
use worldland_core::worker::{Failure, Handler};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::worker::run_consumer;
use worldland_runtime::{backends, Config};

const INTERVAL_S: f64 = 30.0;

/// Runs (a), and (b) unless `embedded_only`, and prints the figures (as JSON with `json`).
pub async fn run(providers: usize, through_brokers: usize, embedded_only: bool, json: bool) -> anyhow::Result<()> {
    let a = embedded(providers).await?;
    let b = if embedded_only {
        None
    } else {
        Some(through_redis_and_rabbitmq(through_brokers).await?)
    };
    if json {
        println!("{}", serde_json::json!({"embedded": a, "through_brokers": b}));
    } else {
        print(&a, b.as_ref());
    }
    Ok(())
}

/// Seeds `n` available providers sharing one wallet (signing keys are the expensive part of
/// set-up, not of what is measured), heartbeat marks already on their nodes.
async fn seed(store: &dyn ItemStore, n: usize, now: DateTime<Utc>) -> (SigningKey, Vec<String>) {
    let template = SimulatedProvider::new(0, now);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("bench-{i:07}");
        let mut reg = template.registration.clone();
        reg.provider_id = id.clone();
        reg.spec.hostname = format!("bench-node-{i:07}");
        seed_available(&reg, now, false)
            .apply_on(store, Table::Providers, &id)
            .await
            .expect("seeding the in-memory store");
        ids.push(id);
    }
    (template.key, ids)
}

fn heartbeat_body(key: &SigningKey, id: &str, at: DateTime<Utc>) -> Vec<u8> {
    let n = &id["bench-".len()..];
    let hb = Heartbeat {
        provider_id: id.into(),
        node_name: format!("bench-node-{n}"),
        status: "available".into(),
        gpu_usage: vec![50.0],
        cpu_usage: 10.0,
        memory_usage: 20.0,
        active_jobs: 0,
        timestamp: at,
    };
    let data = serde_json::to_string(&hb).expect("serialises");
    let env = StreamEnvelope {
        stream: "provider:heartbeat".into(),
        entry_id: "0-0".into(),
        signature: Some(sign_personal(key, data.as_bytes())),
        data,
        timestamp: None,
        received_at_ms: None,
    };
    serde_json::to_vec(&env).expect("serialises")
}

/// Signs one heartbeat per provider on every core (set-up, not measured).
async fn sign_round(key: &SigningKey, ids: &[String], at: DateTime<Utc>) -> Vec<Vec<u8>> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunk = ids.len().div_ceil(cores).max(1);
    let mut tasks = vec![];
    for part in ids.chunks(chunk) {
        let (key, part) = (key.clone(), part.to_vec());
        tasks.push(tokio::task::spawn_blocking(move || {
            part.iter().map(|id| heartbeat_body(&key, id, at)).collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::with_capacity(ids.len());
    for t in tasks {
        out.extend(t.await.expect("signing task"));
    }
    out
}

fn recorder(store: Arc<dyn ItemStore>) -> heartbeat_recorder::HeartbeatRecorder {
    heartbeat_recorder::HeartbeatRecorder(heartbeat_recorder::Context {
        store,
        cluster: Arc::new(SimulatedCluster::new("https://bench:6443")),
        signatures: SignaturePolicy::Required,
        replay_window: chrono::Duration::minutes(5),
        annotate_interval: chrono::Duration::minutes(5),
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbeddedFigures {
    pub providers: usize,
    pub heartbeats: usize,
    pub per_second: f64,
    pub cpu_us_per_heartbeat: f64,
    pub needed_per_second: f64,
    pub core_share: f64,
}

/// (a): the recorder's core over the whole fleet, one heartbeat each, on this one task.
pub async fn embedded(providers: usize) -> anyhow::Result<EmbeddedFigures> {
    let now = Utc::now();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let (key, ids) = seed(store.as_ref(), providers, now).await;
    let at = now + chrono::Duration::seconds(30);
    let bodies = sign_round(&key, &ids, at).await;
    let rec = recorder(store);
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    for body in &bodies {
        if let Err(out) = rec.handle("provider.heartbeat.received", body, at).await {
            anyhow::bail!("a heartbeat was not recorded: {out:?}");
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64().max(f64::EPSILON);
    let per_second = bodies.len() as f64 / wall;
    let needed = providers as f64 / INTERVAL_S;
    Ok(EmbeddedFigures {
        providers,
        heartbeats: bodies.len(),
        per_second,
        cpu_us_per_heartbeat: cpu * 1e6 / bodies.len() as f64,
        needed_per_second: needed,
        core_share: needed * cpu / bodies.len() as f64,
    })
}

/// This process's CPU time (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PathFigures {
    pub heartbeats: usize,
    pub path_per_second: f64,
    pub raw_per_second: f64,
    pub ratio: f64,
}

async fn xadd_all(conn: &mut ConnectionManager, stream: &str, bodies: &[(String, String)]) -> anyhow::Result<()> {
    for chunk in bodies.chunks(100) {
        let mut p = redis::pipe();
        for (data, sig) in chunk {
            p.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(data)
                .arg("signature")
                .arg(sig)
                .ignore();
        }
        p.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// (b): XADD → bridge → RabbitMQ → recorder → store → ack, against the raw round trip.
pub async fn through_redis_and_rabbitmq(count: usize) -> anyhow::Result<PathFigures> {
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let prefix = format!("bench-{run_id}");
    let cfg = isolated_config(&prefix)?;
    let now = Utc::now();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let bodies = stream_bodies(store.as_ref(), count, now).await;
    let mut conn = backends::redis(&cfg).await?;
    let bus = Arc::new(backends::rabbit(&cfg).await?);

    let (path_secs, queue) = heartbeat_path(&cfg, store, &bus, &mut conn, &bodies, count).await?;
    let mut raw = RawRoundTrip::open(&cfg, &mut conn, &prefix, count).await?;
    let raw_secs = raw.measure(&cfg, &mut conn, &bodies, count).await?;

    // Clean up what this run created.
    raw.close().await;
    let _ = bus.delete_topology(&[queue]).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
    }
    let path = count as f64 / path_secs;
    let raw = count as f64 / raw_secs;
    Ok(PathFigures {
        heartbeats: count,
        path_per_second: path,
        raw_per_second: raw,
        ratio: path / raw,
    })
}

/// Streams, exchange, queues and consumer group of this run only, under `prefix`.
fn isolated_config(prefix: &str) -> anyhow::Result<Config> {
    Ok(Config::from_vars([
        ("WORLDLAND_STREAM_PREFIX".to_string(), format!("{prefix}:")),
        ("WORLDLAND_EXCHANGE".into(), prefix.to_string()),
        ("WORLDLAND_QUEUE_PREFIX".into(), format!("{prefix}.")),
        ("WORLDLAND_BRIDGE_GROUP".into(), format!("{prefix}-bridge")),
        ("WORLDLAND_BRIDGE_BLOCK_MS".into(), "100".into()),
    ])?)
}

/// Seeds `count` providers in `store` and signs one heartbeat each, as stream entry fields
/// (data, signature).
async fn stream_bodies(store: &dyn ItemStore, count: usize, now: DateTime<Utc>) -> Vec<(String, String)> {
    let (key, ids) = seed(store, count, now).await;
    let at = now + chrono::Duration::seconds(30);
    sign_round(&key, &ids, at)
        .await
        .into_iter()
        .map(|b| {
            let env: StreamEnvelope = serde_json::from_slice(&b).expect("just made");
            (env.data, env.signature.unwrap_or_default())
        })
        .collect()
}

/// The recorder, counting what it has handled and telling whoever waits.
struct Counting(
    heartbeat_recorder::HeartbeatRecorder,
    Arc<AtomicU64>,
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
        let _ = self.2.send(n);
        out
    }
}

/// The heartbeat path: the bridge and a counting recorder run while `bodies` are XADDed; the
/// seconds until the recorder has handled `count`, and the queue it consumed (to delete).
async fn heartbeat_path(
    cfg: &Config,
    store: Arc<dyn ItemStore>,
    bus: &Arc<RabbitBus>,
    conn: &mut ConnectionManager,
    bodies: &[(String, String)],
    count: usize,
) -> anyhow::Result<(f64, QueueSpec)> {
    let done = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
    let handler: Arc<dyn Handler> = Arc::new(Counting(recorder(store), done.clone(), done_tx));
    let queue = QueueSpec::new(cfg.queue(handler.name()), handler.bindings());
    bus.declare(&queue).await?;
    let (stop, _) = broadcast::channel(1);
    let consumer = tokio::spawn(run_consumer(
        bus.clone() as Arc<dyn Bus>,
        queue.clone(),
        handler,
        cfg.prefetch as usize,
        stop.subscribe(),
    ));
    let bridge = redis_bridge::RedisBridge::new(
        conn.clone(),
        backends::redis_blocking(cfg).await?,
        bus.clone(),
        redis_bridge::BridgeSettings::from_config(cfg),
    );
    bridge.ensure_groups().await?;
    let rx = stop.subscribe();
    let bridging = tokio::spawn(async move { bridge.run(rx).await });
    let t0 = Instant::now();
    xadd_all(conn, &cfg.streams().heartbeat(), bodies).await?;
    tokio::time::timeout(Duration::from_secs(600), done_rx.wait_for(|n| *n as usize >= count)).await??;
    let secs = t0.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = consumer.await;
    let _ = bridging.await;
    Ok((secs, queue))
}

/// The raw round trip's plumbing: a stream with its consumer group, a durable queue, a channel
/// publishing with confirms, and a consumer that acks what it gets.
struct RawRoundTrip {
    stream: String,
    queue: String,
    amqp: Connection,
    pub_ch: Channel,
    consuming: JoinHandle<usize>,
}

impl RawRoundTrip {
    async fn open(cfg: &Config, conn: &mut ConnectionManager, prefix: &str, count: usize) -> anyhow::Result<Self> {
        let stream = format!("{prefix}:raw");
        let queue = format!("{prefix}.raw");
        worldland_adapters::replies::ensure_group(conn, &stream, "raw", "0").await?;
        let amqp = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await?;
        let pub_ch = amqp.create_channel().await?;
        pub_ch.confirm_select(ConfirmSelectOptions::default()).await?;
        pub_ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let sub_ch = amqp.create_channel().await?;
        sub_ch.basic_qos(cfg.prefetch, Default::default()).await?;
        let mut consumer = sub_ch
            .basic_consume(
                queue.as_str().into(),
                "raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consuming = tokio::spawn(async move {
            let mut n = 0;
            while n < count {
                match consumer.next().await {
                    Some(Ok(d)) => {
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                        n += 1;
                    }
                    _ => break,
                }
            }
            n
        });
        Ok(Self {
            stream,
            queue,
            amqp,
            pub_ch,
            consuming,
        })
    }

    /// XADD `bodies`, then XREADGROUP → publish with confirm → XACK each, while the consumer
    /// consumes and acks: the seconds until it has all `count`.
    async fn measure(
        &mut self,
        cfg: &Config,
        conn: &mut ConnectionManager,
        bodies: &[(String, String)],
        count: usize,
    ) -> anyhow::Result<f64> {
        let mut reader = backends::redis_blocking(cfg).await?;
        let t0 = Instant::now();
        xadd_all(conn, &self.stream, bodies).await?;
        self.forward(&mut reader, conn, count).await?;
        let consumed = (&mut self.consuming).await?;
        anyhow::ensure!(consumed == count, "the raw consumer got {consumed} of {count}");
        Ok(t0.elapsed().as_secs_f64())
    }

    async fn forward(&self, reader: &mut ConnectionManager, conn: &mut ConnectionManager, count: usize) -> anyhow::Result<()> {
        let mut forwarded = 0;
        while forwarded < count {
            let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("raw")
                .arg("raw-1")
                .arg("COUNT")
                .arg(64)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">")
                .query_async(reader)
                .await?;
            for entry in reply.keys.iter().flat_map(|k| k.ids.iter()) {
                let data: Vec<u8> = entry.get("data").unwrap_or_default();
                self.pub_ch
                    .basic_publish(
                        "".into(),
                        self.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &data,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                redis::cmd("XACK")
                    .arg(&self.stream)
                    .arg("raw")
                    .arg(&entry.id)
                    .query_async::<()>(conn)
                    .await?;
                forwarded += 1;
            }
        }
        Ok(())
    }

    /// Deletes the queue and closes the connection.
    async fn close(self) {
        let _ = self
            .pub_ch
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.amqp.close(200, "bench done".into()).await;
    }
}

pub fn print(a: &EmbeddedFigures, b: Option<&PathFigures>) {
    println!("worldland bench heartbeat ({})", super::build_kind());
    println!();
    println!("(a) embedded store, one task, signature verified on every heartbeat");
    println!("  {:<44} {:>14}", "providers (one heartbeat each)", a.providers);
    println!("  {:<44} {:>14.0}", "heartbeats per second sustained", a.per_second);
    println!("  {:<44} {:>14.1}", "CPU µs per heartbeat", a.cpu_us_per_heartbeat);
    println!("  {:<44} {:>14.0}", "needed: providers / 30 s", a.needed_per_second);
    println!(
        "  {:<44} {:>13.1}%  {}",
        "share of one core for the fleet",
        a.core_share * 100.0,
        if a.core_share <= 1.0 {
            "(target: within one core — met)"
        } else {
            "(target: within one core — NOT met)"
        }
    );
    if let Some(b) = b {
        println!();
        println!("(b) through real Redis and RabbitMQ ({} heartbeats)", b.heartbeats);
        println!(
            "  {:<66} {:>8.0}",
            "heartbeat path: XADD → bridge → RabbitMQ → recorder, per s", b.path_per_second
        );
        println!(
            "  {:<66} {:>8.0}",
            "raw: XADD → XREADGROUP → publish-confirm → XACK → consume, per s", b.raw_per_second
        );
        println!(
            "  {:<66} {:>8.2}  {}",
            "ratio",
            b.ratio,
            if b.ratio >= 0.5 {
                "(target ≥ 0.5 — met)"
            } else {
                "(target ≥ 0.5 — NOT met)"
            }
        );
    }
}
