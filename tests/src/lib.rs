//! Shared set-up for the tests that cross functions: every test gets its own streams, queues,
//! exchange and tables (a random prefix) and removes them when it ends, even on a panic.

pub mod faulty_cluster;
pub mod faulty_store;
pub mod kube_mock;
pub mod kubelet;
pub mod lambda_api;
pub mod ledger_fixture;
pub mod lost_answer_proxy;
pub mod notifying_store;
pub mod private_dynalite;
pub mod private_rabbit;
pub mod private_redis;
pub mod real_cluster;
pub mod scheduling;
pub mod stall_proxy;

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use worldland_adapters::bus::rabbit::RabbitBus;
use worldland_adapters::state::dynamo::DynamoStore;
use worldland_core::bus::QueueSpec;
use worldland_runtime::{backends, Config};

/// Where scripts/test started dynalite.
pub fn dynamodb_endpoint() -> String {
    std::env::var("WORLDLAND_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4567".into())
}

pub struct TestEnv {
    pub id: String,
    pub cfg: Config,
    queues: std::sync::Mutex<Vec<QueueSpec>>,
}

impl TestEnv {
    pub fn new(overrides: &[(&str, &str)]) -> Self {
        let id = format!("wltest-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut vars: BTreeMap<String, String> = BTreeMap::from([
            ("WORLDLAND_STREAM_PREFIX".into(), format!("{id}:")),
            ("WORLDLAND_EXCHANGE".into(), id.clone()),
            ("WORLDLAND_QUEUE_PREFIX".into(), format!("{id}.")),
            ("WORLDLAND_PROVIDERS_TABLE".into(), format!("{id}-providers")),
            ("WORLDLAND_JOBS_TABLE".into(), format!("{id}-jobs")),
            ("WORLDLAND_DYNAMODB_ENDPOINT".into(), dynamodb_endpoint()),
            ("WORLDLAND_BRIDGE_GROUP".into(), format!("{id}-bridge")),
            ("WORLDLAND_BRIDGE_BLOCK_MS".into(), "100".into()),
            ("WORLDLAND_STORE".into(), "dynamodb".into()),
            ("WORLDLAND_CLUSTER".into(), "simulated".into()),
        ]);
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let cfg = Config::from_vars(vars).expect("test config");
        Self {
            id,
            cfg,
            queues: Default::default(),
        }
    }

    pub async fn redis(&self) -> ConnectionManager {
        backends::redis(&self.cfg)
            .await
            .expect("Redis on 127.0.0.1:6379 (scripts/test starts it)")
    }

    /// The next `n` entries of `stream` after `last` (which it advances), each read blocking up
    /// to 8 s and bounded at 10 s: for awaiting what another task writes.
    pub async fn next_entries(&self, stream: &str, last: &mut String, n: usize) -> Vec<redis::streams::StreamId> {
        let mut reader = self.redis_blocking().await;
        let mut out = vec![];
        while out.len() < n {
            let reply: redis::streams::StreamReadReply = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(8000)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(&*last)
                    .query_async(&mut reader),
            )
            .await
            .expect("entries within 10 s")
            .expect("XREAD");
            assert!(!reply.keys.is_empty(), "no entry on {stream} within 8 s");
            for e in reply.keys.into_iter().flat_map(|k| k.ids) {
                *last = e.id.clone();
                out.push(e);
            }
        }
        out
    }

    /// The id of the last entry of `stream`, or "0" when it has none.
    pub async fn last_entry_id(&self, stream: &str) -> String {
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis().await)
            .await
            .expect("XREVRANGE");
        last.ids.first().map_or_else(|| "0".to_string(), |e| e.id.clone())
    }

    /// A connection of its own for blocking reads.
    pub async fn redis_blocking(&self) -> ConnectionManager {
        backends::redis_blocking(&self.cfg).await.expect("Redis on 127.0.0.1:6379")
    }

    pub async fn dynamo(&self) -> DynamoStore {
        let store = backends::dynamo(&self.cfg).await;
        store.ensure_tables().await.expect("dynalite (scripts/test starts it)");
        store
    }

    pub async fn rabbit(&self) -> RabbitBus {
        backends::rabbit(&self.cfg)
            .await
            .expect("RabbitMQ on 127.0.0.1:5672 (scripts/test starts it)")
    }

    /// Remembers a queue so it is deleted at the end.
    pub fn queue(&self, worker: &str, bindings: &[&str]) -> QueueSpec {
        let q = QueueSpec::new(self.cfg.queue(worker), bindings);
        self.queues.lock().unwrap().push(q.clone());
        q
    }

    async fn cleanup(cfg: Config, id: String, queues: Vec<QueueSpec>) {
        if let Ok(mut conn) = backends::redis(&cfg).await {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{id}:*"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
            }
        }
        if let Ok(bus) = backends::rabbit(&cfg).await {
            let _ = bus.delete_topology(&queues).await;
        }
        let _ = backends::dynamo(&cfg).await.delete_tables().await;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let (cfg, id, queues) = (self.cfg.clone(), self.id.clone(), self.queues.lock().unwrap().clone());
        // Drop cannot await; clean up on a thread of its own so it also runs after a panic.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(Self::cleanup(cfg, id, queues));
        })
        .join();
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now, for a private service.
pub fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a spare port on 127.0.0.1")
}

/// `target/<profile>/`, where cargo put the workspace's binaries (a test runs from its `deps/`).
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// Wraps a handler and counts the messages it has finished, so tests can await "handled n".
pub struct Counted {
    inner: Arc<dyn worldland_core::worker::Handler>,
    done: tokio::sync::watch::Sender<usize>,
}

impl Counted {
    pub fn new(inner: Arc<dyn worldland_core::worker::Handler>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            done: tokio::sync::watch::channel(0).0,
        })
    }

    /// Waits until at least `n` messages were handled.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) {
        let mut rx = self.done.subscribe();
        let r = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        assert!(
            r.is_ok(),
            "{} handled {} messages, expected {n}",
            self.inner.name(),
            *self.done.borrow()
        );
    }
}

#[async_trait::async_trait]
impl worldland_core::worker::Handler for Counted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn bindings(&self) -> &'static [&'static str] {
        self.inner.bindings()
    }
    async fn handle(&self, key: &str, body: &[u8], now: chrono::DateTime<chrono::Utc>) -> Result<(), worldland_core::worker::Failure> {
        let out = self.inner.handle(key, body, now).await;
        self.done.send_modify(|c| *c += 1);
        out
    }
}

/// A handler's result as tests compare it: done, refused with its rejection, or retried with the
/// whole error chain as text.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Rejected(worldland_core::refusal::Rejection),
    Retry(String),
}

impl From<Result<(), worldland_core::worker::Failure>> for Outcome {
    fn from(r: Result<(), worldland_core::worker::Failure>) -> Self {
        use worldland_core::worker::Failure;
        match r {
            Ok(()) => Self::Done,
            Err(Failure::Refuse(r)) => Self::Rejected(r),
            Err(retry @ Failure::Retry(_)) => Self::Retry(worldland_runtime::policy::report(&retry)),
        }
    }
}

/// An in-process bus with the issuer's queue declared, so `provider.validated` has a taker.
pub fn validated_sink() -> Arc<worldland_adapters::bus::memory::MemoryBus> {
    let bus = Arc::new(worldland_adapters::bus::memory::MemoryBus::new(5));
    bus.declare(&QueueSpec::new("issuer", join_token_issuer::BINDINGS));
    bus
}

/// The wiring a lifecycle test needs on the embedded backends.
pub mod lifecycle {
    use std::sync::Arc;

    use crate::Outcome;
    use chrono::{DateTime, Utc};
    use worldland_adapters::cluster::simulated::SimulatedCluster;
    use worldland_adapters::replies::MemoryReplies;
    use worldland_core::cluster::{Cluster, NodeInfo};
    use worldland_core::messages::{Heartbeat, ProviderValidated, Registration, StreamEnvelope};
    use worldland_core::signature::{sign_personal, SignaturePolicy};
    use worldland_core::state::ItemStore;
    use worldland_core::validation::ValidationPolicy;
    use worldland_provider_sdk::simulated::{signed_envelope, SimulatedProvider};

    /// A provider shaped like the fixture node `gpu-server-01`: 4 × RTX 4090, 32 cores, 128 GiB.
    pub fn fixture_shaped_provider(n: usize, now: DateTime<Utc>) -> SimulatedProvider {
        let mut p = SimulatedProvider::new(n, now);
        let reg: &mut Registration = &mut p.registration;
        reg.spec.hostname = "gpu-server-01".into();
        let gpu = reg.spec.gpus[0].clone();
        reg.spec.gpus = (0..4)
            .map(|i| worldland_core::messages::Gpu {
                index: Some(i),
                name: "NVIDIA GeForce RTX 4090".into(),
                memory_mb: 24564,
                ..gpu.clone()
            })
            .collect();
        reg.spec.total_gpus = 4;
        reg.spec.cpu_cores = 32;
        reg.spec.total_memory_mb = 131_072;
        reg.capacity.gpu_count = Some(4);
        reg.capacity.cpu_cores = Some(25);
        reg.capacity.memory_mb = Some(104_857);
        p
    }

    /// The node a provider's machine would register, matching its spec.
    pub fn node_for(p: &SimulatedProvider, ready: bool) -> NodeInfo {
        let spec = &p.registration.spec;
        NodeInfo {
            name: worldland_core::validation::node_name(&p.provider_id, &spec.hostname),
            resource_version: "1".into(),
            ready,
            cpu_millis: Some(i64::from(spec.cpu_cores) * 1000),
            memory_bytes: Some(spec.total_memory_mb as i64 * 1024 * 1024),
            gpus: Some(i64::from(spec.total_gpus)),
            ..Default::default()
        }
    }

    /// Registers and approves `p` through the real handler and issuer.
    pub async fn approve(p: &SimulatedProvider, store: Arc<dyn ItemStore>, cluster: Arc<dyn Cluster>, now: DateTime<Utc>) {
        let replies = Arc::new(MemoryReplies::default());
        let reg_ctx = registration_handler::Context {
            store: store.clone(),
            bus: crate::validated_sink(),
            replies: replies.clone(),
            policy: ValidationPolicy::default(),
            signatures: SignaturePolicy::Required,
        };
        let entry = format!("{}-0", now.timestamp_millis());
        let env = signed_envelope(&p.registration, &p.key, "provider:registration", &entry);
        assert_eq!(
            Outcome::from(registration_handler::handle(&env, &reg_ctx, now).await),
            Outcome::Done
        );
        let issuer = join_token_issuer::Context {
            store,
            cluster,
            replies,
            token_ttl: chrono::Duration::hours(1),
            max_pending_per_wallet: 3,
            api_endpoint: None,
        };
        let msg = ProviderValidated {
            provider_id: p.provider_id.clone(),
            registration_id: entry,
            enc_pubkey: p.registration.enc_pubkey.clone(),
        };
        assert_eq!(Outcome::from(join_token_issuer::handle(&msg, &issuer, now).await), Outcome::Done);
    }

    /// The recorder as configured by default (required signatures, 5-minute windows).
    pub fn recorder(store: Arc<dyn ItemStore>, cluster: Arc<dyn Cluster>) -> heartbeat_recorder::Context {
        heartbeat_recorder::Context {
            store,
            cluster,
            signatures: SignaturePolicy::Required,
            replay_window: chrono::Duration::minutes(5),
            annotate_interval: chrono::Duration::minutes(5),
            min_heartbeat_interval: chrono::Duration::seconds(10),
            active_jobs_label_interval: chrono::Duration::seconds(60),
            recent: Default::default(),
            node_health: Default::default(),
        }
    }

    /// Provider `n`, approved, its Ready node in a simulated cluster, and its first heartbeat at
    /// `now` recorded: an available provider.
    pub async fn available_provider(n: usize, now: DateTime<Utc>) -> (Arc<dyn ItemStore>, Arc<SimulatedCluster>, SimulatedProvider) {
        let store: Arc<dyn ItemStore> = Arc::new(worldland_adapters::state::memory::MemoryStore::new());
        let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
        let p = fixture_shaped_provider(n, now);
        approve(&p, store.clone(), cluster.clone(), now).await;
        cluster.add_node(node_for(&p, true));
        let first = Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, now, 0), &recorder(store.clone(), cluster.clone()), now).await);
        assert_eq!(first, Outcome::Done);
        (store, cluster, p)
    }

    /// A heartbeat from `p` at `at`, signed by its wallet, as the bridge forwards it.
    pub fn heartbeat(p: &SimulatedProvider, at: DateTime<Utc>, active_jobs: u32) -> StreamEnvelope {
        sequenced_heartbeat(p, at, active_jobs, None)
    }

    /// [`heartbeat`] carrying sequence number `seq` (signed with the rest), as new agents send.
    pub fn sequenced_heartbeat(p: &SimulatedProvider, at: DateTime<Utc>, active_jobs: u32, seq: Option<u64>) -> StreamEnvelope {
        let hb = Heartbeat {
            provider_id: p.provider_id.clone(),
            node_name: worldland_core::validation::node_name(&p.provider_id, &p.registration.spec.hostname),
            status: "available".into(),
            gpu_usage: vec![12.5],
            cpu_usage: 40.0,
            memory_usage: 50.0,
            active_jobs,
            timestamp: at,
            seq,
        };
        let data = serde_json::to_string(&hb).unwrap();
        StreamEnvelope {
            stream: "provider:heartbeat".into(),
            entry_id: format!("{}-0", at.timestamp_millis()),
            signature: Some(sign_personal(&p.key, data.as_bytes())),
            data,
            timestamp: None,
            received_at_ms: None,
        }
    }
}

/// An in-process bus where job events have a queue to land on.
pub fn event_sink() -> Arc<worldland_adapters::bus::memory::MemoryBus> {
    let bus = Arc::new(worldland_adapters::bus::memory::MemoryBus::new(5));
    bus.declare(&QueueSpec::new(
        worldland_core::messages::topics::JOB_EVENTS_QUEUE,
        worldland_core::messages::topics::JOB_EVENTS,
    ));
    bus
}

/// A sweeper on the given store and cluster, its events going to in-process sinks.
pub fn sweeper(
    store: Arc<dyn worldland_core::state::ItemStore>,
    cluster: Arc<dyn worldland_core::cluster::Cluster>,
    stale_after: chrono::Duration,
) -> staleness_sweeper::Context {
    staleness_sweeper::Context {
        store,
        cluster,
        bus: event_sink(),
        replies: Arc::new(worldland_adapters::replies::MemoryReplies::default()),
        stale_after,
        guard: staleness_sweeper::StallGuard::default(),
        fleet: Default::default(),
        node_health: Default::default(),
    }
}

/// Seeds an available provider with its ledger set up from `reg` (as the recorder would).
pub async fn seed_available(
    store: &dyn worldland_core::state::ItemStore,
    reg: &worldland_core::messages::Registration,
    now: chrono::DateTime<chrono::Utc>,
) {
    let seeded = worldland_core::placement::seed_available(reg, now, true);
    assert!(
        seeded.apply(store, &reg.provider_id).await.expect("seeding a provider"),
        "seeded twice"
    );
}

/// The `x-worldland-reason` header of a dead-lettered RabbitMQ message, if it has one.
pub fn dead_letter_reason(props: &lapin::BasicProperties) -> Option<String> {
    match props.headers().as_ref()?.inner().get("x-worldland-reason")? {
        lapin::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}
