//! Fault injection across the whole plane, every worker a real process (issue 11).
//!
//! A private redis-server (AOF, `--appendfsync always`), a private RabbitMQ node and a private
//! dynalite (`--path`, persistent) on spare ports, each stopped by the PID this test started —
//! never the shared services. The six worker binaries from `target/<profile>` run against them
//! (`WORLDLAND_STORE=dynamodb`, `WORLDLAND_CLUSTER=simulated`, signatures required, one broker
//! key file). While simulated agents register (SDK client functions: XADD the signed
//! registration, wait for the broker-signed answer, open the sealed join) and heartbeat, and
//! customers publish `job.allocate` / `job.release` on the bus as the CLI does, the test kills -9
//! and restarts RabbitMQ, Redis and the workers, and restarts dynalite on the same data.
//!
//! For the whole scenario the workers reach dynalite through a [`LostAnswerProxy`] that loses the
//! answer of one write in [`LOSE_EVERY`] after it applied (issue 22): the worker's SDK sees a
//! retryable 500 and sends the write again, and the store must read that replay as its own write
//! (`state::replay`), never as someone else's. The test's own seeding, polling and checks read
//! dynalite directly. The run fails if the proxy lost no answer.
//!
//! **Expected state.** With `WORLDLAND_CLUSTER=simulated` every worker process has its own
//! in-memory cluster, so no node ever joins across processes: a registering provider ends
//! `approved`, its answer a success carrying exactly one sealed token whose id is the one the
//! store holds (`token_id`), and its response stream holds that answer (a crash between the
//! issuer's answer and its approval repeats the same answer: counted as a duplicate); its heartbeats are
//! refused `node_not_found` (the heartbeat-recorder's dead letters). Jobs run against
//! providers seeded `available` directly in the store. Afterwards: every registration answered
//! with one token (repeats of one answer counted); every agent provider `approved` with that token; every job
//! `allocated`, `released` or `rejected` (none `pending`, none missing); no pending entries of the
//! bridge group; the worker queues empty; `job::audit` clean. The figures (providers, jobs,
//! faults, lost, stuck, duplicates), the answers the proxy lost (by operation and table) and the
//! dead letters (per `.dlq` queue and `provider:deadletter`, by reason) are printed.
//! `WORLDLAND_FAULTS_LOG_DIR` keeps the workers' logs (`WORLDLAND_FAULTS_RUST_LOG` sets their
//! filter).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use worldland_core::answers::BrokerKey;
use worldland_core::bus::Bus;
use worldland_core::job::JobState;
use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest};
use worldland_core::messages::{topics, Heartbeat, ProviderResponse, ProviderState};
use worldland_core::provider::ProviderRecord;
use worldland_core::signature::sign_personal;
use worldland_core::state::{ItemStore, Table};
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::client::{join_from_response, publish_registration, wait_for_response};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::{backends, Config};
use worldland_tests::lost_answer_proxy::LostAnswerProxy;
use worldland_tests::private_dynalite::{port_open, stop, wait_port, PrivateDynalite};
use worldland_tests::private_rabbit::PrivateRabbit;
use worldland_tests::private_redis::server_binary;

const AGENTS: usize = 20;
const SEEDED: usize = 8;
/// Customers allocating at once, each `JOBS / CUSTOMERS` jobs one after another.
const CUSTOMERS: usize = 3;
const JOBS: usize = 45;
/// The whole scenario (agents, customers, faults) must settle within this.
const SCENARIO: Duration = Duration::from_secs(100);
const SETTLE: Duration = Duration::from_secs(40);
/// The proxy loses the answer of every 20th write that applied: 5 %.
const LOSE_EVERY: u64 = 20;

const CONSUMERS: [&str; 4] = ["registration-handler", "join-token-issuer", "heartbeat-recorder", "allocator"];
const SERVICES: [&str; 2] = ["redis-bridge", "staleness-sweeper"];

// ---------- private redis-server with AOF, restartable on the same port and data ----------

struct AofRedis {
    port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl AofRedis {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("wl-faults-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut me = Self {
            port: worldland_tests::spare_port(),
            dir,
            child: None,
        };
        me.launch();
        me
    }

    fn launch(&mut self) {
        let child = std::process::Command::new(server_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
            // After a restart the log holds the first start's line too: count them.
            let ready = log.matches("Ready to accept connections").count();
            if ready >= self.starts() && port_open(self.port) {
                return;
            }
            if let Ok(Some(s)) = self.child.as_mut().unwrap().try_wait() {
                panic!("private redis-server exited ({s}):\n{log}");
            }
            assert!(std::time::Instant::now() < deadline, "private redis-server not ready:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn starts(&self) -> usize {
        std::fs::read_to_string(self.dir.join("redis.log"))
            .unwrap_or_default()
            .matches("Server initialized")
            .count()
            .max(1)
    }

    fn kill9(&mut self) {
        stop(&mut self.child);
        wait_port(self.port, false, Duration::from_secs(10), "redis after kill -9");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for AofRedis {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------- workers as processes ----------

struct Workers {
    vars: Vec<(String, String)>,
    procs: BTreeMap<&'static str, (Child, u16)>,
    log_dir: PathBuf,
    /// Restarts of a worker that had exited on its own (not killed by the test).
    crashes: Vec<String>,
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

impl Workers {
    async fn spawn(&mut self, name: &'static str) {
        let port = worldland_tests::spare_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{name}.log")))
            .unwrap();
        let mut cmd = Command::new(worldland_tests::bin_dir().join(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("WORLDLAND_FAULTS_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("WORLDLAND_HEALTH_ADDR", format!("127.0.0.1:{port}"));
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e} (cargo build --workspace --bins)"));
        self.procs.insert(name, (child, port));
        // Bounded: ready means consuming (consumers) or running (services).
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let (child, port) = self.procs.get_mut(name).unwrap();
            if let Ok(Some(s)) = child.try_wait() {
                panic!("{name} exited with {s} while starting; see {}", self.log_dir.display());
            }
            if http_status(*port, "/readyz").await == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} not ready within 45 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill9(&mut self, name: &'static str) {
        if let Some((mut c, _)) = self.procs.remove(name) {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Restarts every worker that exited on its own (as Kubernetes would).
    async fn supervise(&mut self) {
        let names: Vec<&'static str> = self.procs.keys().copied().collect();
        for name in names {
            let exited = matches!(self.procs.get_mut(name).unwrap().0.try_wait(), Ok(Some(_)));
            if exited {
                self.crashes.push(name.to_string());
                self.procs.remove(name);
                self.spawn(name).await;
            }
        }
    }
}

// ---------- agents and customers ----------

#[derive(Default)]
struct Figures {
    faults: AtomicUsize,
    agent_retries: AtomicUsize,
    publish_retries: AtomicUsize,
}

/// XRANGE of a whole stream as (id, field → value).
async fn xrange(conn: &mut ConnectionManager, stream: &str) -> redis::RedisResult<Vec<(String, BTreeMap<String, String>)>> {
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(conn).await?;
    Ok(raw
        .into_iter()
        .map(|(id, kv)| {
            let map = kv
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            (id, map)
        })
        .collect())
}

/// An agent: registers (idempotently: after a failed XADD it looks for its own entry before
/// writing again), waits for the signed answer across Redis restarts, opens the token, then
/// heartbeats. Returns the token id it received.
async fn agent(
    p: SimulatedProvider,
    redis_url: String,
    streams: StreamNames,
    broker: worldland_core::answers::BrokerPublicKey,
    figures: Arc<Figures>,
    deadline: Instant,
) -> Result<String, String> {
    let mut conn = worldland_redis::connect(&redis_url, false).await.map_err(|e| e.to_string())?;
    let entry = loop {
        match publish_registration(&mut conn, &streams, &p.registration, &p.key).await {
            Ok(id) => break id,
            Err(e) => {
                figures.agent_retries.fetch_add(1, Ordering::Relaxed);
                if Instant::now() > deadline {
                    return Err(format!("{}: registration never written: {e}", p.provider_id));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                // Did the XADD land before the connection died?
                if let Ok(entries) = xrange(&mut conn, &streams.registration()).await {
                    let mine = format!("\"provider_id\":\"{}\"", p.provider_id);
                    if let Some((id, _)) = entries.iter().find(|(_, f)| f.get("data").is_some_and(|d| d.contains(&mine))) {
                        break id.clone();
                    }
                }
            }
        }
    };
    let resp: ProviderResponse = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{}: no answer to registration {entry}", p.provider_id));
        }
        let mut reader = match worldland_redis::connect(&redis_url, true).await {
            Ok(r) => r,
            Err(_) => {
                figures.agent_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        match wait_for_response(&mut reader, &streams, &p.provider_id, &entry, &broker, left).await {
            Ok(r) => break r,
            Err(worldland_provider_sdk::Error::Timeout(_)) => return Err(format!("{}: no answer to registration {entry}", p.provider_id)),
            Err(_) => {
                figures.agent_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    eprintln!("[faults] {} answered", p.provider_id);
    let join = join_from_response(&resp, &p.enc_secret).map_err(|e| format!("{}: answer {resp:?}: {e}", p.provider_id))?;
    let token_id = join.join_token.split('.').next().unwrap_or_default().to_string();
    let node_name = worldland_core::validation::node_name(&p.provider_id, &p.registration.spec.hostname);
    for _ in 0..6 {
        let hb = Heartbeat {
            provider_id: p.provider_id.clone(),
            node_name: node_name.clone(),
            status: "available".into(),
            gpu_usage: vec![10.0],
            cpu_usage: 20.0,
            memory_usage: 30.0,
            active_jobs: 0,
            timestamp: chrono::Utc::now(),
            seq: None,
        };
        let data = serde_json::to_string(&hb).unwrap();
        let sig = sign_personal(&p.key, data.as_bytes());
        // A heartbeat lost to an outage is simply lost (the next one follows).
        let r: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(streams.heartbeat())
            .arg("*")
            .arg("data")
            .arg(&data)
            .arg("signature")
            .arg(&sig)
            .query_async(&mut conn)
            .await;
        eprintln!("[faults] {} heartbeat {:?}", p.provider_id, r.as_ref().map(|_| ()));
        if r.is_err() {
            figures.agent_retries.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    Ok(token_id)
}

async fn publish_retrying(bus: &dyn Bus, key: &str, id: &str, body: &[u8], figures: &Figures, deadline: Instant) -> Result<(), String> {
    loop {
        match bus.publish(key, id, body).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                figures.publish_retries.fetch_add(1, Ordering::Relaxed);
                if Instant::now() > deadline {
                    return Err(format!("publishing {key} {id}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

async fn job_state(store: &dyn ItemStore, id: &str) -> Option<String> {
    let item = store.get(Table::Jobs, id).await.ok()??;
    JobState::of(&item).map(|s| s.as_str().to_string())
}

/// Polls until the job is in one of `done` or the deadline passes; its last state.
async fn await_job(store: &dyn ItemStore, id: &str, done: &[&str], deadline: Instant) -> Option<String> {
    loop {
        let s = job_state(store, id).await;
        if s.as_deref().is_some_and(|s| done.contains(&s)) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The customers, at once; the ids of the jobs they published.
async fn customers(cfg: Config, figures: Arc<Figures>, deadline: Instant) -> Result<Vec<String>, String> {
    let all = (0..CUSTOMERS).map(|c| customer(c, cfg.clone(), figures.clone(), deadline));
    let mut ids = vec![];
    for r in futures::future::join_all(all).await {
        ids.extend(r?);
    }
    Ok(ids)
}

/// A customer: allocates its jobs one after another and releases every other allocated one.
async fn customer(c: usize, cfg: Config, figures: Arc<Figures>, deadline: Instant) -> Result<Vec<String>, String> {
    let store = backends::dynamo(&cfg).await;
    let bus = backends::rabbit(&cfg).await.map_err(|e| format!("customer bus: {e}"))?;
    let mut ids = vec![];
    let per = JOBS / CUSTOMERS;
    for j in c * per..(c + 1) * per {
        let job_id = format!("job-fault-{j:03}");
        let req = AllocateRequest {
            job_id: job_id.clone(),
            customer_id: format!("cust-{c}"),
            gpu_model: None,
            gpus: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            max_price_per_gpu_hour: None,
            duration_s: None,
            workload: worldland_core::messages::jobs::Workload::of_image("docker.io/library/python:3.12-slim"),
        };
        publish_retrying(
            &bus,
            topics::JOB_ALLOCATE,
            &format!("cli/{job_id}"),
            &serde_json::to_vec(&req).unwrap(),
            &figures,
            deadline,
        )
        .await?;
        ids.push(job_id.clone());
        eprintln!("[faults] published {job_id}");
        let settled = [JobState::Allocated, JobState::Rejected, JobState::Released, JobState::Cancelled].map(JobState::as_str);
        let s = await_job(&store, &job_id, &settled, Instant::now() + Duration::from_secs(30)).await;
        if s.as_deref() == Some("allocated") && j % 2 == 0 {
            let rel = ReleaseRequest {
                job_id: job_id.clone(),
                reason: "released".into(),
            };
            publish_retrying(
                &bus,
                topics::JOB_RELEASE,
                &format!("cli/release/{job_id}"),
                &serde_json::to_vec(&rel).unwrap(),
                &figures,
                deadline,
            )
            .await?;
            await_job(&store, &job_id, &["released"], Instant::now() + Duration::from_secs(30)).await;
        }
        // Spread the jobs over the faults.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Ok(ids)
}

/// The reasons on a dead-letter queue's messages (`x-worldland-reason`, or the broker's own
/// `delivery limit` when it dead-lettered a message itself), read off with basic.get.
async fn dead_letter_reasons(amqp_url: &str, queue: &str) -> BTreeMap<String, usize> {
    use lapin::options::BasicGetOptions;
    let mut reasons = BTreeMap::new();
    let Ok(conn) = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await else {
        return reasons;
    };
    let Ok(ch) = conn.create_channel().await else { return reasons };
    while let Ok(Ok(Some(m))) =
        tokio::time::timeout(Duration::from_secs(5), ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })).await
    {
        let reason = worldland_tests::dead_letter_reason(&m.properties).unwrap_or_else(|| "delivery limit (no reason header)".into());
        *reasons.entry(reason).or_default() += 1;
    }
    let _ = conn.close(200, "read".into()).await;
    reasons
}

// ---------- the test ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plane_survives_kill_9_of_every_backend_and_worker() {
    let started = Instant::now();
    let mut redis_srv = tokio::task::block_in_place(AofRedis::start);
    let mut rabbit = tokio::task::block_in_place(PrivateRabbit::start);
    let mut dynalite = tokio::task::block_in_place(PrivateDynalite::start);
    // The workers reach dynalite only through the proxy; the test's own reads and checks go
    // straight to it.
    let proxy = LostAnswerProxy::start(&dynalite.addr(), LOSE_EVERY).await;
    eprintln!("[faults] backends up in {:?}", started.elapsed());

    let id = format!("wlfault-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key_file = rabbit.dir().join("broker.key");
    let broker_key = BrokerKey::generate();
    std::fs::write(&key_file, broker_key.to_file_text()).unwrap();
    let vars: Vec<(String, String)> = [
        ("WORLDLAND_REDIS_URL", redis_srv.url()),
        ("WORLDLAND_AMQP_URL", rabbit.amqp_url()),
        ("WORLDLAND_STORE", "dynamodb".into()),
        ("WORLDLAND_DYNAMODB_ENDPOINT", proxy.endpoint()),
        ("WORLDLAND_CLUSTER", "simulated".into()),
        ("WORLDLAND_BUS", "rabbitmq".into()),
        ("WORLDLAND_SIGNATURE_POLICY", "required".into()),
        ("WORLDLAND_EXCHANGE", id.clone()),
        ("WORLDLAND_QUEUE_PREFIX", format!("{id}.")),
        ("WORLDLAND_STREAM_PREFIX", format!("{id}:")),
        ("WORLDLAND_PROVIDERS_TABLE", format!("{id}-providers")),
        ("WORLDLAND_JOBS_TABLE", format!("{id}-jobs")),
        ("WORLDLAND_BRIDGE_GROUP", format!("{id}-bridge")),
        ("WORLDLAND_CONSUMER_NAME", "bridge-1".into()),
        ("WORLDLAND_BRIDGE_BLOCK_MS", "100".into()),
        ("WORLDLAND_RECLAIM_IDLE_MS", "1500".into()),
        ("WORLDLAND_BROKER_KEY_FILE", key_file.display().to_string()),
        ("WORLDLAND_STALE_AFTER_S", "600".into()),
        ("WORLDLAND_SWEEP_INTERVAL_S", "2".into()),
        ("WORLDLAND_REDIS_CONNECT_TIMEOUT_MS", "1000".into()),
        ("WORLDLAND_AMQP_CONNECT_TIMEOUT_MS", "2000".into()),
        ("WORLDLAND_AMQP_OPERATION_TIMEOUT_MS", "3000".into()),
        ("WORLDLAND_AWS_OPERATION_TIMEOUT_MS", "5000".into()),
        ("WORLDLAND_AWS_ATTEMPT_TIMEOUT_MS", "2000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let direct = vars.iter().cloned().map(|(k, v)| match k.as_str() {
        "WORLDLAND_DYNAMODB_ENDPOINT" => (k, dynalite.endpoint()),
        _ => (k, v),
    });
    let cfg = Config::from_vars(direct).expect("config");
    let store = backends::dynamo(&cfg).await;
    store.ensure_tables().await.expect("tables on the private dynalite");
    // What `worldland infra init` declares: the queue the allocator's answers land on.
    let events = worldland_core::bus::QueueSpec::new(
        cfg.queue(worldland_core::messages::topics::JOB_EVENTS_QUEUE),
        worldland_core::messages::topics::JOB_EVENTS,
    );
    backends::rabbit(&cfg)
        .await
        .expect("the private RabbitMQ")
        .declare(&events)
        .await
        .expect("the job-events queue");

    // Worker logs live with the private node (removed with it) unless WORLDLAND_FAULTS_LOG_DIR
    // names a place to keep them.
    let log_dir = std::env::var_os("WORLDLAND_FAULTS_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| rabbit.dir().join("workers"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut workers = Workers {
        vars,
        procs: BTreeMap::new(),
        log_dir: log_dir.clone(),
        crashes: vec![],
    };
    for w in CONSUMERS.into_iter().chain(SERVICES) {
        workers.spawn(w).await;
    }
    // The queues were declared seconds ago: have the node save their Raft terms as a broker up for
    // minutes would have (see PrivateRabbit::sync_metadata), so kill -9 tests our code, not that.
    tokio::task::block_in_place(|| rabbit.sync_metadata());
    eprintln!("[faults] workers up at {:?}", started.elapsed());

    // Providers for the jobs: seeded available directly in the store.
    let now = chrono::Utc::now();
    for n in 0..SEEDED {
        let p = SimulatedProvider::new(1000 + n, now);
        worldland_tests::seed_available(&store, &p.registration, now).await;
    }

    let figures = Arc::new(Figures::default());
    let deadline = Instant::now() + SCENARIO;
    let streams = cfg.streams();
    let agents: Vec<SimulatedProvider> = (0..AGENTS).map(|n| SimulatedProvider::new(n, now)).collect();
    let agent_ids: Vec<String> = agents.iter().map(|p| p.provider_id.clone()).collect();
    let mut agent_tasks = vec![];
    for (i, p) in agents.into_iter().enumerate() {
        let (url, streams, broker, figures) = (redis_srv.url(), streams.clone(), broker_key.public(), figures.clone());
        agent_tasks.push(tokio::spawn(async move {
            // A schedule, not a wait: the registrations are spread over the faults (about 20 s
            // of them) so that each fault meets some in flight.
            tokio::time::sleep(Duration::from_millis(1_000 * i as u64)).await;
            agent(p, url, streams, broker, figures, deadline).await
        }));
    }
    let customer_task = tokio::spawn(customers(cfg.clone(), figures.clone(), deadline));

    // The faults, one after another, while agents and customers run.
    let pause = Duration::from_millis(1500);
    tokio::time::sleep(pause).await;
    let faults: [&str; 7] = ["rabbitmq", "workers", "redis", "dynalite", "bridge+issuer", "rabbitmq", "redis"];
    for f in faults {
        eprintln!("[faults] {:>6.1?} kill -9 {f}", started.elapsed());
        match f {
            "rabbitmq" => tokio::task::block_in_place(|| rabbit.restart()),
            "redis" => tokio::task::block_in_place(|| {
                redis_srv.kill9();
                redis_srv.launch();
            }),
            "dynalite" => tokio::task::block_in_place(|| dynalite.restart()),
            "workers" => {
                for w in CONSUMERS.into_iter().chain(SERVICES) {
                    workers.kill9(w).await;
                }
                for w in CONSUMERS.into_iter().chain(SERVICES) {
                    workers.spawn(w).await;
                }
            }
            "bridge+issuer" => {
                for w in ["redis-bridge", "join-token-issuer"] {
                    workers.kill9(w).await;
                    workers.spawn(w).await;
                }
            }
            _ => unreachable!(),
        }
        figures.faults.fetch_add(1, Ordering::Relaxed);
        workers.supervise().await;
        tokio::time::sleep(pause).await;
    }
    eprintln!("[faults] faults done at {:?}", started.elapsed());

    // Keep supervising until agents and customers are done (bounded by their deadline).
    let mut answered: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    for (p, t) in agent_ids.iter().zip(agent_tasks) {
        let mut t = t;
        let r = loop {
            tokio::select! {
                r = &mut t => break r.unwrap_or_else(|e| Err(format!("agent task: {e}"))),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if Instant::now() > deadline + Duration::from_secs(15) {
                        t.abort();
                        break Err(format!("{p}: agent hung past its deadline (an unbounded wait)"));
                    }
                    workers.supervise().await
                }
            }
        };
        answered.insert(p.clone(), r);
    }
    let mut customer_task = customer_task;
    let job_ids = loop {
        tokio::select! {
            r = &mut customer_task => break r.expect("customer task"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if Instant::now() > deadline + Duration::from_secs(15) {
                    customer_task.abort();
                    break Err("customer hung past its deadline (an unbounded wait)".to_string());
                }
                workers.supervise().await
            }
        }
    };
    eprintln!("[faults] agents and customers done at {:?}", started.elapsed());

    // Settle: no pending bridge entries and empty worker queues, polled with a deadline.
    let mut conn = backends::redis(&cfg).await.expect("private redis");
    let work_queues: Vec<String> = CONSUMERS.iter().map(|w| cfg.queue(w)).collect();
    let settle_deadline = Instant::now() + SETTLE;
    let (mut pending, mut queues);
    loop {
        workers.supervise().await;
        pending = BTreeMap::new();
        for s in [streams.registration(), streams.heartbeat(), streams.command_ack()] {
            let r: redis::RedisResult<redis::Value> = redis::cmd("XPENDING").arg(&s).arg(&cfg.bridge_group).query_async(&mut conn).await;
            let n = match r {
                Ok(redis::Value::Array(v)) => match v.first() {
                    Some(redis::Value::Int(n)) => *n,
                    _ => 0,
                },
                _ => 0,
            };
            pending.insert(s, n);
        }
        queues = tokio::task::block_in_place(|| rabbit.queue_counts()).unwrap_or_default();
        let busy = queues.iter().any(|(q, n)| work_queues.contains(q) && *n > 0);
        if (pending.values().all(|n| *n == 0) && !busy) || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // ---------- the checks ----------
    let mut failures: Vec<String> = vec![];
    let (mut lost, mut stuck, mut duplicates) = (0usize, 0usize, 0usize);
    for pid in &agent_ids {
        let answers: Vec<ProviderResponse> = xrange(&mut conn, &streams.response(pid))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, f)| f.get("data").and_then(|d| serde_json::from_str::<ProviderResponse>(d).ok()))
            .collect();
        let rec = ProviderRecord::load(&store, pid).await.ok().flatten();
        match answered.get(pid) {
            Some(Ok(token)) => {
                // The issuer answers first and approves second: a crash (or a lost Redis reply)
                // in between answers again — with the same sealed token, never another one
                // (README, "every handler is idempotent"). Those repeats are counted, not failed.
                let key = |a: &ProviderResponse| (a.success, a.sealed_join.clone(), a.join_token.clone(), a.node_name.clone());
                let same = answers.first().map(key);
                if answers.is_empty() || answers.iter().any(|a| Some(key(a)) != same) {
                    failures.push(format!(
                        "{pid}: {} answers on its response stream, want one (or repeats of it): {answers:?}",
                        answers.len()
                    ));
                }
                duplicates += answers.len().saturating_sub(1);
                match &rec {
                    Some(r) if r.state == ProviderState::Approved && r.token_id.as_deref() == Some(token.as_str()) => {}
                    Some(r) => failures.push(format!("{pid}: state {} token {:?}, agent got token {token}", r.state, r.token_id)),
                    None => failures.push(format!("{pid}: no provider item")),
                }
            }
            Some(Err(e)) => {
                if rec.is_none() {
                    lost += 1;
                } else {
                    stuck += 1;
                }
                failures.push(format!("{e}; store: {:?}", rec.map(|r| (r.state, r.token_id))));
            }
            None => unreachable!(),
        }
    }
    let job_ids = match job_ids {
        Ok(ids) => ids,
        Err(e) => {
            failures.push(format!("customer: {e}"));
            vec![]
        }
    };
    let mut job_states: BTreeMap<String, usize> = BTreeMap::new();
    for j in &job_ids {
        let s = job_state(&store, j).await;
        *job_states.entry(s.clone().unwrap_or_else(|| "missing".into())).or_default() += 1;
        match s.as_deref() {
            Some("allocated" | "released" | "rejected") => {}
            None => {
                lost += 1;
                failures.push(format!("job {j}: no job item (job.allocate lost)"));
            }
            Some(other) => {
                stuck += 1;
                failures.push(format!("job {j}: {other}"));
            }
        }
    }
    if job_ids.len() != JOBS && failures.iter().all(|f| !f.starts_with("customer")) {
        failures.push(format!("only {} of {JOBS} jobs published", job_ids.len()));
    }
    for (s, n) in &pending {
        if *n > 0 {
            stuck += *n as usize;
            failures.push(format!("{s}: {n} entries pending in {}", cfg.bridge_group));
        }
    }
    for (q, n) in &queues {
        if work_queues.contains(q) && *n > 0 {
            stuck += *n as usize;
            failures.push(format!("queue {q}: {n} messages left"));
        }
    }
    // Without a lost answer the run would not have tested what it claims to.
    if proxy.lost_total() == 0 {
        failures.push(format!(
            "the proxy lost no answer ({} writes applied through it)",
            proxy.applied_writes()
        ));
    }
    match worldland_core::job::audit(&store).await {
        Ok(v) if v.is_empty() => {}
        Ok(v) => failures.extend(v.into_iter().map(|v| format!("audit: {v}"))),
        Err(e) => failures.push(format!("audit failed: {e}")),
    }

    // ---------- the figures and the dead letters ----------
    let mut dead_by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for (_, f) in xrange(&mut conn, &streams.dead_letter()).await.unwrap_or_default() {
        let reason = f
            .get("reason")
            .cloned()
            .unwrap_or_else(|| format!("{:?}", f.keys().collect::<Vec<_>>()));
        *dead_by_reason.entry(reason).or_default() += 1;
    }
    eprintln!(
        "[faults] figures: providers {} registering + {SEEDED} seeded; jobs {} {:?}; faults {}; lost {lost}; stuck {stuck}; duplicates {duplicates}; worker crashes restarted {:?}; agent retries {}; publish retries {}; wall {:?}",
        AGENTS,
        job_ids.len(),
        job_states,
        figures.faults.load(Ordering::Relaxed),
        workers.crashes,
        figures.agent_retries.load(Ordering::Relaxed),
        figures.publish_retries.load(Ordering::Relaxed),
        started.elapsed()
    );
    eprintln!(
        "[faults] answers lost after the write applied (1 in {LOSE_EVERY}): {} of {} writes, by operation {:?}, by table {:?}; {} requests on {} connections",
        proxy.lost_total(),
        proxy.applied_writes(),
        proxy.lost(),
        proxy.lost_by_table(),
        proxy.requests(),
        proxy.connections()
    );
    eprintln!("[faults] queues: {queues:?}");
    for (q, n) in queues.iter().filter(|(q, n)| q.ends_with(".dlq") && *n > 0) {
        eprintln!(
            "[faults] DLQ {q}: {n}, by reason {:?}",
            dead_letter_reasons(&rabbit.amqp_url(), q).await
        );
    }
    eprintln!("[faults] provider:deadletter by reason: {dead_by_reason:?}");
    eprintln!("[faults] pending: {pending:?}");
    if !failures.is_empty() {
        let detail = tokio::task::block_in_place(|| {
            rabbit.ctl(
                &[
                    "list_queues",
                    "-q",
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                ],
                30,
            )
        });
        eprintln!("[faults] queues (ready, unacked, consumers):\n{}", detail.unwrap_or_else(|e| e));
        eprintln!("[faults] worker logs in {} (kept: the test failed)", log_dir.display());
        for w in CONSUMERS.into_iter().chain(SERVICES) {
            let text = std::fs::read_to_string(log_dir.join(format!("{w}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
            eprintln!("--- {w}: {} warn/error lines, last ones:", lines.len());
            for l in &lines[lines.len().saturating_sub(8)..] {
                eprintln!("{l}");
            }
        }
    }
    drop(workers);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
