//! `worldland bench heartbeat`: (a) the recorder's core on the embedded store, on one core, for
//! a fleet of N providers at 30 s intervals; (b) the whole heartbeat path through real Redis and
//! RabbitMQ next to a raw Redis-stream + RabbitMQ publish-confirm/consume round trip measured in
//! the same run. Build with `--release` for figures worth quoting.

use std::path::Path;
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
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::broadcast;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::{Heartbeat, StreamEnvelope};
use worldland_core::signature::{sign_personal, SignaturePolicy};
use worldland_core::state::providers::seed_available;
use worldland_core::state::{ItemStore, Table};
use worldland_core::worker::{Handler, Outcome};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::worker::run_consumer;
use worldland_runtime::{backends, Config};

const INTERVAL_S: f64 = 30.0;

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
        let out = rec.handle("provider.heartbeat.received", body, at).await;
        anyhow::ensure!(out == Outcome::Done, "a heartbeat was not recorded: {out:?}");
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

async fn xadd_all(conn: &mut redis::aio::ConnectionManager, stream: &str, bodies: &[(String, String)]) -> anyhow::Result<()> {
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
    let cfg = Config::from_vars([
        ("WORLDLAND_STREAM_PREFIX".to_string(), format!("{prefix}:")),
        ("WORLDLAND_EXCHANGE".into(), prefix.clone()),
        ("WORLDLAND_QUEUE_PREFIX".into(), format!("{prefix}.")),
        ("WORLDLAND_BRIDGE_GROUP".into(), format!("{prefix}-bridge")),
        ("WORLDLAND_BRIDGE_BLOCK_MS".into(), "100".into()),
    ])?;
    let now = Utc::now();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let (key, ids) = seed(store.as_ref(), count, now).await;
    let at = now + chrono::Duration::seconds(30);
    let bodies: Vec<(String, String)> = sign_round(&key, &ids, at)
        .await
        .into_iter()
        .map(|b| {
            let env: StreamEnvelope = serde_json::from_slice(&b).expect("just made");
            (env.data, env.signature.unwrap_or_default())
        })
        .collect();
    let mut conn = backends::redis(&cfg).await?;
    let bus = Arc::new(backends::rabbit(&cfg).await?);

    // The heartbeat path.
    let done = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0u64);
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
        async fn handle(&self, key: &str, body: &[u8], now: DateTime<Utc>) -> Outcome {
            let out = self.0.handle(key, body, now).await;
            let n = self.1.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.2.send(n);
            out
        }
    }
    let handler: Arc<dyn Handler> = Arc::new(Counting(recorder(store.clone()), done.clone(), done_tx));
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
        backends::redis_blocking(&cfg).await?,
        bus.clone(),
        redis_bridge::BridgeSettings::from_config(&cfg),
    );
    bridge.ensure_groups().await?;
    let rx = stop.subscribe();
    let bridging = tokio::spawn(async move { bridge.run(rx).await });
    let t0 = Instant::now();
    xadd_all(&mut conn, &cfg.streams().heartbeat(), &bodies).await?;
    tokio::time::timeout(Duration::from_secs(600), done_rx.wait_for(|n| *n as usize >= count)).await??;
    let path_secs = t0.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = consumer.await;
    let _ = bridging.await;

    // The raw round trip: XREADGROUP → publish with confirm → XACK, and consume + ack.
    let raw_stream = format!("{prefix}:raw");
    let raw_queue = format!("{prefix}.raw");
    worldland_adapters::replies::ensure_group(&mut conn, &raw_stream, "raw", "0").await?;
    let amqp = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await?;
    let pub_ch = amqp.create_channel().await?;
    pub_ch.confirm_select(ConfirmSelectOptions::default()).await?;
    pub_ch
        .queue_declare(
            raw_queue.as_str().into(),
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
            raw_queue.as_str().into(),
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
    let mut reader = backends::redis_blocking(&cfg).await?;
    let t0 = Instant::now();
    xadd_all(&mut conn, &raw_stream, &bodies).await?;
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
            .arg(&raw_stream)
            .arg(">")
            .query_async(&mut reader)
            .await?;
        for entry in reply.keys.iter().flat_map(|k| k.ids.iter()) {
            let data: Vec<u8> = entry.get("data").unwrap_or_default();
            pub_ch
                .basic_publish(
                    "".into(),
                    raw_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &data,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            redis::cmd("XACK")
                .arg(&raw_stream)
                .arg("raw")
                .arg(&entry.id)
                .query_async::<()>(&mut conn)
                .await?;
            forwarded += 1;
        }
    }
    let consumed = consuming.await?;
    anyhow::ensure!(consumed == count, "the raw consumer got {consumed} of {count}");
    let raw_secs = t0.elapsed().as_secs_f64();

    // Clean up what this run created.
    let _ = pub_ch.queue_delete(raw_queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = amqp.close(200, "bench done".into()).await;
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

pub fn print(a: &EmbeddedFigures, b: Option<&PathFigures>) {
    println!(
        "worldland bench heartbeat ({})",
        if cfg!(debug_assertions) {
            "DEBUG build — use --release for real figures"
        } else {
            "release build"
        }
    );
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocateFigures {
    pub store: String,
    pub scenario: String,
    pub allocators: usize,
    pub providers: usize,
    pub gpus_per_provider: u32,
    pub pairs: usize,
    pub pairs_per_second: f64,
    pub retries_per_allocation: f64,
    pub audit_clean: bool,
}

/// N allocate+release pairs by `allocators` concurrent tasks over `providers` providers.
pub async fn allocate_pairs(
    store: Arc<dyn ItemStore>,
    store_name: &str,
    scenario: &str,
    allocators: usize,
    providers: usize,
    gpus_each: u32,
    pairs_each: usize,
) -> anyhow::Result<AllocateFigures> {
    use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest};
    use worldland_core::messages::topics;
    let now = Utc::now();
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    for n in 0..providers {
        let mut p = SimulatedProvider::new(n, now).registration;
        p.provider_id = format!("bench-{run}-p{n}");
        let g = p.spec.gpus[0].clone();
        p.spec.gpus = vec![g; gpus_each as usize];
        p.spec.total_gpus = gpus_each;
        p.capacity.gpu_count = Some(gpus_each);
        seed_available(&p, now, true)
            .apply_on(store.as_ref(), Table::Providers, &p.provider_id)
            .await?;
    }
    let bus = Arc::new(worldland_adapters::bus::memory::MemoryBus::new(5));
    let events = QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS);
    bus.declare(&events);
    // Drain the answers as they come, like a customer would.
    let mut sub = bus.subscribe(&events).await?;
    let draining = tokio::spawn(async move {
        while let Some(d) = sub.next().await {
            let _ = d.ack().await;
        }
    });
    let replies = Arc::new(worldland_adapters::replies::MemoryReplies::default());
    let failures0 = allocator::STATS.condition_failures.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut tasks = vec![];
    for t in 0..allocators {
        let ctx = allocator::Context::new(store.clone(), bus.clone(), replies.clone());
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..pairs_each {
                let job_id = format!("b{run}-{t}-{i}");
                let req = AllocateRequest {
                    job_id: job_id.clone(),
                    customer_id: "bench".into(),
                    gpu_model: None,
                    gpus: 1,
                    cpu_cores: 1,
                    memory_mb: 1024,
                    max_price_per_gpu_hour: None,
                    duration_s: None,
                };
                let a = allocator::allocate(&req, &ctx, now).await;
                let r = allocator::release(
                    &ReleaseRequest {
                        job_id,
                        reason: "bench".into(),
                    },
                    &ctx,
                    now,
                )
                .await;
                anyhow::ensure!(a == Outcome::Done && r == Outcome::Done, "allocate {a:?}, release {r:?}");
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    draining.abort();
    let failures = allocator::STATS.condition_failures.load(Ordering::Relaxed) - failures0;
    let pairs = allocators * pairs_each;
    let audit_clean = worldland_core::jobs::audit(store.as_ref()).await?.is_empty();
    Ok(AllocateFigures {
        store: store_name.into(),
        scenario: scenario.into(),
        allocators,
        providers,
        gpus_per_provider: gpus_each,
        pairs,
        pairs_per_second: pairs as f64 / secs,
        retries_per_allocation: failures as f64 / pairs as f64,
        audit_clean,
    })
}

pub fn print_allocate(rows: &[AllocateFigures]) {
    println!(
        "worldland bench allocate ({})",
        if cfg!(debug_assertions) {
            "DEBUG build — use --release for real figures"
        } else {
            "release build"
        }
    );
    println!();
    println!(
        "{:<10} {:<30} {:>10} {:>15} {:>8} {:>12} {:>14} {:>7}",
        "store", "scenario", "allocators", "providers×GPUs", "pairs", "pairs/s", "retries/alloc", "audit"
    );
    for r in rows {
        println!(
            "{:<10} {:<30} {:>10} {:>15} {:>8} {:>12.0} {:>14.3} {:>7}",
            r.store,
            r.scenario,
            r.allocators,
            format!("{}×{}", r.providers, r.gpus_per_provider),
            r.pairs,
            r.pairs_per_second,
            r.retries_per_allocation,
            if r.audit_clean { "clean" } else { "FAILED" }
        );
    }
    if let Some(one) = rows.iter().find(|r| r.scenario.starts_with("one core")) {
        println!();
        println!(
            "target on the embedded store: ≥ 20,000 allocate+release pairs per second on one core — {}",
            if one.pairs_per_second >= 20_000.0 { "met" } else { "NOT met" }
        );
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ColdStart {
    pub binary: String,
    pub size_mb: f64,
    pub init_ms_median: f64,
    pub init_ms_max: f64,
}

/// Time from process start to the runtime's first request for an event, for each Lambda
/// binary beside this one (a fake Runtime API on loopback answers nothing: the clock stops at
/// the request). Clients point at unreachable local endpoints: any network call at init would
/// show.
pub async fn coldstart(runs: usize) -> anyhow::Result<Vec<ColdStart>> {
    use tokio::io::AsyncReadExt;
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("no directory for this binary"))?;
    let mut rows = vec![];
    for name in [
        "registration-handler-lambda",
        "join-token-issuer-lambda",
        "heartbeat-recorder-lambda",
        "allocator-lambda",
        "staleness-sweeper-lambda",
    ] {
        let path = dir.join(name);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: build the workspace's binaries first (cargo build --release --bins)",
            path.display()
        );
        let size = std::fs::metadata(&path)?.len() as f64 / (1024.0 * 1024.0);
        let mut times = vec![];
        for _ in 0..runs {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let api = listener.local_addr()?;
            let started = Instant::now();
            let mut child = tokio::process::Command::new(&path)
                .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
                .env("AWS_REGION", "us-east-1")
                .env("WORLDLAND_STORE", "dynamodb")
                .env("WORLDLAND_DYNAMODB_ENDPOINT", "http://127.0.0.1:9")
                .env("WORLDLAND_BUS", "sqs")
                .env("WORLDLAND_SQS_ENDPOINT", "http://127.0.0.1:9")
                .env("WORLDLAND_REDIS_URL", "redis://127.0.0.1:9")
                .env("WORLDLAND_CLUSTER", "simulated")
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
            let took = started.elapsed();
            let (mut sock, _) = accepted.map_err(|_| anyhow::anyhow!("{name} never asked for an event"))??;
            let mut buf = [0u8; 256];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            anyhow::ensure!(
                String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next"),
                "{name}: an unexpected first request"
            );
            times.push(took.as_secs_f64() * 1000.0);
            let _ = child.kill().await;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        rows.push(ColdStart {
            binary: name.into(),
            size_mb: size,
            init_ms_median: times[times.len() / 2],
            init_ms_max: *times.last().unwrap_or(&0.0),
        });
    }
    Ok(rows)
}

pub fn print_coldstart(rows: &[ColdStart]) {
    println!(
        "worldland bench coldstart ({})",
        if cfg!(debug_assertions) {
            "DEBUG build — use --release for real figures"
        } else {
            "release build"
        }
    );
    println!();
    println!("{:<30} {:>10} {:>16} {:>14}", "binary", "size MiB", "init ms median", "init ms max");
    for r in rows {
        println!(
            "{:<30} {:>10.1} {:>16.1} {:>14.1}",
            r.binary, r.size_mb, r.init_ms_median, r.init_ms_max
        );
    }
    let worst = rows.iter().map(|r| r.init_ms_median).fold(0.0, f64::max);
    println!();
    println!("target: under 50 ms init — {}", if worst < 50.0 { "met" } else { "NOT met" });
}
