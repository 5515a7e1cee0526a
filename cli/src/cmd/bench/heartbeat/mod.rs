//! `worldland bench heartbeat`: (a) the recorder's core on the embedded store, on one core, for
//! a fleet of N providers at 30 s intervals; (b) the whole heartbeat path through real Redis and
//! RabbitMQ next to a raw Redis-stream + RabbitMQ round trip measured in the same run, pipelined
//! as the bridge is (XREADGROUP batches of the bridge's size, every entry of a batch published
//! before the confirms are awaited together, one XACK per batch). In (b) the bridge and the
//! recorder each run on a thread of their own, whose CPU time per heartbeat is reported, so the
//! cores a fleet needs can be read off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k256::ecdsa::SigningKey;
use redis::aio::ConnectionManager;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::messages::{Heartbeat, StreamEnvelope};
use worldland_core::placement::seed_available;
use worldland_core::signature::sign_personal;
use worldland_core::state::ItemStore;
use worldland_core::worker::Handler;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::{backends, Backends, Config};

mod cpu;
mod path;
mod print;
mod raw;
mod units;

use cpu::cpu_time;
use path::heartbeat_path;
pub use print::print;
use raw::RawRoundTrip;

const INTERVAL_S: f64 = 30.0;

/// Runs (a) unless `brokers_only`, and (b) unless `embedded_only`, and prints the figures (as
/// JSON with `json`).
pub async fn run(providers: usize, through_brokers: usize, embedded_only: bool, brokers_only: bool, json: bool) -> anyhow::Result<()> {
    let a = if brokers_only { None } else { Some(embedded(providers).await?) };
    let b = if embedded_only {
        None
    } else {
        Some(through_redis_and_rabbitmq(through_brokers).await?)
    };
    if json {
        println!("{}", serde_json::json!({"embedded": a, "through_brokers": b}));
    } else {
        print(a.as_ref(), b.as_ref());
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
            .apply(store, &id)
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
        // The node name the broker assigned at seeding: the host part and the id's suffix.
        node_name: worldland_core::validation::node_name(id, &format!("bench-node-{n}")),
        status: "available".into(),
        gpu_usage: vec![50.0],
        cpu_usage: 10.0,
        memory_usage: 20.0,
        active_jobs: 0,
        timestamp: at,
        seq: None,
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

/// The recorder as its crate wires it (default settings), on `store` and a simulated cluster.
async fn recorder(store: Arc<dyn ItemStore>) -> anyhow::Result<heartbeat_recorder::HeartbeatRecorder> {
    // The recorder publishes nothing: the bus is only there to complete the backends.
    let b = Backends::new(Config::defaults(), Arc::new(MemoryBus::new(1)))
        .with_store(store)
        .with_cluster(Arc::new(SimulatedCluster::new("https://bench:6443")));
    Ok(heartbeat_recorder::HeartbeatRecorder(heartbeat_recorder::context(&b).await?))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbeddedFigures {
    pub providers: usize,
    pub heartbeats: usize,
    pub per_second: f64,
    pub cpu_us_per_heartbeat: f64,
    pub needed_per_second: f64,
    pub core_share: f64,
    /// What each recorded heartbeat costs in DynamoDB write units, and what a flood costs.
    pub write_units: units::WriteUnitFigures,
}

/// (a): the recorder's core over the whole fleet, one heartbeat each, on this one task.
pub async fn embedded(providers: usize) -> anyhow::Result<EmbeddedFigures> {
    let now = Utc::now();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let (key, ids) = seed(store.as_ref(), providers, now).await;
    let at = now + chrono::Duration::seconds(30);
    let bodies = sign_round(&key, &ids, at).await;
    let rec = recorder(store).await?;
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
        write_units: units::write_unit_figures().await?,
    })
}

/// Heartbeats per second a million providers send (one each 30 s).
const MILLION_PER_SECOND: f64 = 1e6 / INTERVAL_S;

#[derive(Debug, Clone, serde::Serialize)]
pub struct PathFigures {
    pub heartbeats: usize,
    /// The bridge's XREADGROUP batch, which the raw round trip uses too.
    pub batch: usize,
    pub path_per_second: f64,
    /// The pipelined raw round trip at the bridge's batch size.
    pub raw_per_second: f64,
    pub ratio: f64,
    /// CPU µs per heartbeat of the bridge's thread (its Redis connections driven there).
    pub bridge_cpu_us_per_heartbeat: f64,
    /// CPU µs per heartbeat of the recorder's thread (consumer, handler, acks).
    pub recorder_cpu_us_per_heartbeat: f64,
    /// CPU µs per heartbeat of this whole process while the path ran: the bridge, the recorder,
    /// the AMQP client's I/O threads and the XADD writer (not Redis or RabbitMQ themselves).
    pub process_cpu_us_per_heartbeat: f64,
    /// Cores the bridge needs for a million providers (1e6 / 30 s heartbeats per second).
    pub bridge_cores_per_million: f64,
    /// Cores the recorder needs for a million providers.
    pub recorder_cores_per_million: f64,
    /// The same path with 2 and 4 bridges and recorders in parallel.
    pub parallel: Vec<ParallelFigures>,
}

pub(super) async fn xadd_all(conn: &mut ConnectionManager, stream: &str, bodies: &[(String, String)]) -> anyhow::Result<()> {
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

/// (b): XADD → bridge → RabbitMQ → recorder → store → ack, against the raw round trip; then the
/// same path with 2 and 4 bridges and recorders in parallel.
pub async fn through_redis_and_rabbitmq(count: usize) -> anyhow::Result<PathFigures> {
    let mut figures = one_path_run(count, 1, true).await?;
    for parallel in [2, 4] {
        let more = one_path_run(count, parallel, false).await?;
        figures.parallel.push(ParallelFigures {
            bridges_and_recorders: parallel,
            path_per_second: more.path_per_second,
        });
    }
    Ok(figures)
}

/// One run of the path with `parallel` bridges and recorders on fresh streams and queues, with
/// the raw round trip when `with_raw`.
async fn one_path_run(count: usize, parallel: usize, with_raw: bool) -> anyhow::Result<PathFigures> {
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let prefix = format!("bench-{run_id}");
    let cfg = isolated_config(&prefix)?;
    let now = Utc::now();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let bodies = stream_bodies(store.as_ref(), count, now).await;
    let mut conn = backends::redis(&cfg).await?;
    let bus = Arc::new(backends::rabbit(&cfg).await?);

    let path = heartbeat_path(&cfg, store, &bus, &mut conn, &bodies, parallel).await?;
    let queue = path.queue.clone();
    let mut raw_secs = f64::NAN;
    if with_raw {
        let mut raw = RawRoundTrip::open(&cfg, &mut conn, &prefix, count).await?;
        raw_secs = raw.measure(&cfg, &mut conn, &bodies, count, cfg.bridge_batch).await?;
        raw.close().await;
    }

    // Clean up what this run created.
    let _ = bus.delete_topology(&[queue]).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
    }
    let per_hb = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    let (bridge_us, recorder_us) = (per_hb(path.bridge_cpu), per_hb(path.recorder_cpu));
    let path_rate = count as f64 / path.secs;
    let raw = count as f64 / raw_secs;
    Ok(PathFigures {
        heartbeats: count,
        batch: cfg.bridge_batch,
        path_per_second: path_rate,
        raw_per_second: raw,
        ratio: path_rate / raw,
        bridge_cpu_us_per_heartbeat: bridge_us,
        recorder_cpu_us_per_heartbeat: recorder_us,
        process_cpu_us_per_heartbeat: per_hb(path.process_cpu),
        bridge_cores_per_million: bridge_us * 1e-6 * MILLION_PER_SECOND,
        recorder_cores_per_million: recorder_us * 1e-6 * MILLION_PER_SECOND,
        parallel: vec![],
    })
}

/// The path's throughput with several bridges and recorders at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParallelFigures {
    pub bridges_and_recorders: usize,
    pub path_per_second: f64,
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
