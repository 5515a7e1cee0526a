//! The allocator: a concurrency proof on dynalite and in memory (no GPU handed out twice, audit
//! clean, every request answered exactly once), duplicates and reordering, rentals before mining,
//! price caps and models, expiry and interruption on a paused clock, and bad requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec, Subscription};
use worldland_core::job::audit;
use worldland_core::ledger::{Ledger, ModelCounts};
use worldland_core::messages::jobs::{AllocateRequest, JobAllocated, JobRejected, JobReleased, ReleaseRequest, Workload};
use worldland_core::messages::{topics, MiningConfig};
use worldland_core::state::{ItemStore, Table, Value};
use worldland_core::worker::{Failure, Handler};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::{event_sink, seed_available, TestEnv};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// A provider with `gpus` of `model` at `price`, `mining` of them mining.
fn provider(n: usize, model: &str, gpus: u32, mining: u32, price: f64) -> SimulatedProvider {
    let mut p = SimulatedProvider::new(n, t0());
    let g = p.registration.spec.gpus[0].clone();
    p.registration.spec.gpus = (0..gpus)
        .map(|i| worldland_core::messages::Gpu {
            index: Some(i),
            name: model.into(),
            ..g.clone()
        })
        .collect();
    p.registration.spec.total_gpus = gpus;
    p.registration.spec.cpu_cores = 64;
    p.registration.spec.total_memory_mb = 512 * 1024;
    p.registration.capacity.gpu_count = Some(gpus);
    p.registration.capacity.cpu_cores = Some(48);
    p.registration.capacity.memory_mb = Some(256 * 1024);
    p.registration.capacity.gpu_price_per_hour = price;
    p.registration.mining_config = (mining > 0).then(|| MiningConfig {
        image: Some("miner".into()),
        gpu_count: mining,
        cpu_cores: None,
        memory_mb: None,
        wallet_address: None,
    });
    p
}

struct Fixture {
    store: Arc<dyn ItemStore>,
    bus: Arc<MemoryBus>,
    replies: Arc<MemoryReplies>,
    events: Box<dyn Subscription>,
}

impl Fixture {
    async fn new(store: Arc<dyn ItemStore>) -> Self {
        let bus = event_sink();
        let events = bus
            .subscribe(&QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS))
            .await
            .unwrap();
        Self {
            store,
            bus,
            replies: Arc::new(MemoryReplies::default()),
            events,
        }
    }

    fn ctx(&self) -> allocator::Context {
        allocator::Context::new(self.store.clone(), self.bus.clone(), self.replies.clone())
    }

    /// Every job event published so far: (routing key, body).
    async fn drain(&mut self) -> Vec<(String, serde_json::Value)> {
        let mut out = vec![];
        while let Ok(Some(d)) = tokio::time::timeout(std::time::Duration::from_millis(20), self.events.next()).await {
            out.push((d.routing_key.clone(), serde_json::from_slice(&d.body).unwrap()));
            d.ack().await.unwrap();
        }
        out
    }

    async fn ledger(&self, id: &str) -> Ledger {
        Ledger::from_item(&self.store.get(Table::Providers, id).await.unwrap().unwrap()).unwrap()
    }
}

fn alloc(job: &str, gpus: u32, model: Option<&str>, cap: Option<f64>) -> AllocateRequest {
    AllocateRequest {
        job_id: job.into(),
        customer_id: "cust-1".into(),
        gpu_model: model.map(str::to_string),
        gpus,
        cpu_cores: 4,
        memory_mb: 8192,
        max_price_per_gpu_hour: cap,
        duration_s: None,
        workload: Workload::of_image("docker.io/library/python:3.12-slim"),
    }
}

fn release(job: &str) -> ReleaseRequest {
    ReleaseRequest {
        job_id: job.into(),
        reason: "done".into(),
    }
}

/// 8 allocators × `per_task` requests against 20 providers, all at once.
async fn concurrency_proof(store: Arc<dyn ItemStore>, per_task: usize) {
    let now = t0();
    for n in 0..20 {
        let model = ["NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB"][n % 2];
        seed_available(
            store.as_ref(),
            &provider(n, model, 8, (n % 4) as u32, 0.5 + (n % 5) as f64 * 0.1).registration,
            now,
        )
        .await;
    }
    let mut fx = Fixture::new(store.clone()).await;
    let mut tasks = vec![];
    for t in 0..8 {
        let ctx = fx.ctx();
        tasks.push(tokio::spawn(async move {
            let mut held: Vec<String> = vec![];
            let (mut allocs, mut releases) = (0, 0);
            for i in 0..per_task {
                // Two in three requests allocate; one in three releases an earlier job.
                if i % 3 == 2 && !held.is_empty() {
                    let job = held.remove((i * 7) % held.len());
                    allocator::release(&release(&job), &ctx, now).await.unwrap();
                    releases += 1;
                } else {
                    let job = format!("job-{t}-{i}");
                    let model = [Some("RTX 4090"), Some("A100-SXM4-80GB"), None][i % 3];
                    let req = AllocateRequest {
                        gpus: 1 + (i % 4) as u32,
                        cpu_cores: 1 + (i % 6) as u32,
                        memory_mb: 1024 * (1 + (i % 8) as u64),
                        ..alloc(&job, 1, model, None)
                    };
                    allocator::allocate(&req, &ctx, now).await.unwrap();
                    held.push(job);
                    allocs += 1;
                }
            }
            (allocs, releases)
        }));
    }
    let (mut allocs, mut releases) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        allocs += a;
        releases += r;
    }
    // Every request answered exactly once.
    let events = fx.drain().await;
    let mut answers: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (key, body) in &events {
        *answers
            .entry((key.clone(), body["job_id"].as_str().unwrap().to_string()))
            .or_default() += 1;
    }
    assert!(answers.values().all(|n| *n == 1), "a request answered twice");
    let allocate_answers = answers.keys().filter(|(k, _)| k != topics::JOB_RELEASED).count();
    assert_eq!(allocate_answers, allocs, "every allocate answered");
    let released_ok = answers.keys().filter(|(k, _)| k == topics::JOB_RELEASED).count();
    let allocated_then_released = events.iter().filter(|(k, _)| k == topics::JOB_ALLOCATED).count();
    assert!(released_ok <= releases && allocated_then_released > 0);
    // Zero oversubscription, audit clean.
    let violations = audit(store.as_ref()).await.unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    for p in store.scan(Table::Providers).await.unwrap() {
        let l = Ledger::from_item(&p).unwrap();
        assert!(l.models.values().all(|c| c.free >= 0 && c.mining >= 0 && c.used <= c.total) && l.cpu_free >= 0 && l.mem_free >= 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_proof_in_memory() {
    concurrency_proof(Arc::new(MemoryStore::new()), 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_proof_on_dynalite() {
    let env = TestEnv::new(&[]);
    concurrency_proof(Arc::new(env.dynamo().await), 1000).await;
}

#[tokio::test]
async fn duplicates_and_reordering_change_nothing() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    seed_available(store.as_ref(), &provider(1, "NVIDIA GeForce RTX 4090", 4, 0, 1.0).registration, now).await;
    let mut fx = Fixture::new(store.clone()).await;
    let ctx = fx.ctx();
    let p = provider(1, "x", 1, 0, 1.0).provider_id;

    // Allocate twice: one allocation, one answer.
    allocator::allocate(&alloc("job-a", 2, None, None), &ctx, now).await.unwrap();
    let after_first = store.scan(Table::Providers).await.unwrap();
    allocator::allocate(&alloc("job-a", 2, None, None), &ctx, now).await.unwrap();
    assert_eq!(store.scan(Table::Providers).await.unwrap(), after_first);
    let ev = fx.drain().await;
    assert_eq!(ev.len(), 1);
    let a: JobAllocated = serde_json::from_value(ev[0].1.clone()).unwrap();
    assert_eq!((a.provider_id.as_str(), a.gpus, a.gpu_model.as_str()), (p.as_str(), 2, "RTX-4090"));
    assert_eq!(a.node_selector["worldland.io/gpu-model"], "RTX-4090");

    // Release twice: resources back once, one answer.
    let later = now + Duration::minutes(90);
    allocator::release(&release("job-a"), &ctx, later).await.unwrap();
    let after_release = store.scan(Table::Providers).await.unwrap();
    allocator::release(&release("job-a"), &ctx, later + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(store.scan(Table::Providers).await.unwrap(), after_release);
    let ev = fx.drain().await;
    assert_eq!(ev.len(), 1);
    let r: JobReleased = serde_json::from_value(ev[0].1.clone()).unwrap();
    assert_eq!((r.duration_ms, r.cost_micros), (90 * 60_000, 3_000_000), "2 GPUs × 1.0/h × 1.5 h");
    assert_eq!(
        fx.ledger(&p).await.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 4,
            used: 0,
            mining: 0
        }
    );

    // An allocate replayed after its release changes nothing.
    allocator::allocate(&alloc("job-a", 2, None, None), &ctx, later).await.unwrap();
    assert_eq!(store.scan(Table::Providers).await.unwrap(), after_release);
    assert!(fx.drain().await.is_empty());

    // Release before allocate: the late allocate is refused, nothing is taken.
    allocator::release(&release("job-b"), &ctx, now).await.unwrap();
    allocator::allocate(&alloc("job-b", 1, None, None), &ctx, now).await.unwrap();
    let ev = fx.drain().await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, topics::JOB_REJECTED);
    assert_eq!(ev[0].1["reason"], "cancelled");
    assert_eq!(fx.ledger(&p).await.models["RTX-4090"].free, 4);
    assert!(audit(store.as_ref()).await.unwrap().is_empty());
}

#[tokio::test]
async fn rentals_take_gpus_back_from_mining_and_mining_resumes() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let p = provider(2, "NVIDIA GeForce RTX 4090", 4, 2, 0.8);
    seed_available(store.as_ref(), &p.registration, now).await;
    let mut fx = Fixture::new(store.clone()).await;
    let ctx = fx.ctx();
    assert_eq!(
        fx.ledger(&p.provider_id).await.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 2,
            used: 0,
            mining: 2
        }
    );
    allocator::allocate(&alloc("job-m", 3, Some("RTX 4090"), None), &ctx, now)
        .await
        .unwrap();
    assert_eq!(
        fx.ledger(&p.provider_id).await.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 0,
            used: 3,
            mining: 1
        }
    );
    let cmds = fx.replies.commands_for(&p.provider_id);
    assert_eq!(cmds.len(), 1);
    assert_eq!(
        (cmds[0].kind.as_str(), cmds[0].gpus, cmds[0].job_id.as_str()),
        ("mining.stop", 1, "job-m")
    );
    let ev = fx.drain().await;
    assert_eq!(ev[0].1["mining_gpus_taken"], 1);
    allocator::release(&release("job-m"), &ctx, now + Duration::hours(1)).await.unwrap();
    assert_eq!(
        fx.ledger(&p.provider_id).await.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 2,
            used: 0,
            mining: 2
        }
    );
    let cmds = fx.replies.commands_for(&p.provider_id);
    assert_eq!((cmds[1].kind.as_str(), cmds[1].gpus), ("mining.resume", 1));
    assert!(audit(store.as_ref()).await.unwrap().is_empty());
}

#[tokio::test]
async fn price_caps_models_and_capacity_give_their_reasons() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    seed_available(store.as_ref(), &provider(3, "NVIDIA GeForce RTX 4090", 2, 0, 2.0).registration, now).await;
    seed_available(store.as_ref(), &provider(4, "Tesla T4", 2, 0, 0.2).registration, now).await;
    let mut fx = Fixture::new(store.clone()).await;
    let ctx = fx.ctx();
    let cases = [
        (alloc("j1", 1, Some("NVIDIA GeForce RTX 4090"), Some(1.0)), Some("price_too_low")),
        (alloc("j2", 1, Some("H100"), None), Some("unknown_model")),
        (alloc("j3", 3, Some("RTX-4090"), None), Some("no_capacity")),
        (alloc("j4", 1, None, Some(1.0)), None),
        (alloc("j5", 2, Some("rtx 4090"), Some(2.0)), None),
    ];
    for (req, want) in cases {
        allocator::allocate(&req, &ctx, now).await.unwrap();
        let ev = fx.drain().await;
        match want {
            Some(reason) => {
                let r: JobRejected = serde_json::from_value(ev[0].1.clone()).unwrap();
                assert_eq!(r.reason, reason, "{}", req.job_id);
            }
            None => assert_eq!(ev[0].0, topics::JOB_ALLOCATED, "{}", req.job_id),
        }
    }
    // j4 (no model, cap 1.0) went to the cheap T4; j5 took both 4090s.
    assert_eq!(fx.ledger(&provider(4, "x", 1, 0, 1.0).provider_id).await.models["T4"].used, 1);
    assert_eq!(fx.ledger(&provider(3, "x", 1, 0, 1.0).provider_id).await.models["RTX-4090"].free, 0);
}

#[tokio::test(start_paused = true)]
async fn durations_expire_and_offline_providers_interrupt_their_jobs() {
    let base = tokio::time::Instant::now();
    let clock = move || t0() + Duration::from_std(tokio::time::Instant::now() - base).unwrap();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let p = provider(5, "NVIDIA GeForce RTX 4090", 4, 1, 1.2);
    seed_available(store.as_ref(), &p.registration, clock()).await;
    let mut fx = Fixture::new(store.clone()).await;
    let ctx = fx.ctx();
    let cluster = Arc::new(worldland_adapters::cluster::simulated::SimulatedCluster::new("https://x:6443"));
    let sweeper = staleness_sweeper::Context {
        store: store.clone(),
        cluster,
        bus: fx.bus.clone(),
        replies: fx.replies.clone(),
        stale_after: Duration::seconds(120),
        guard: staleness_sweeper::StallGuard::default(),
        fleet: Default::default(),
        node_health: Default::default(),
    };

    // A 100-second job on 2 GPUs.
    let timed = AllocateRequest {
        duration_s: Some(100),
        ..alloc("job-timed", 2, None, None)
    };
    allocator::allocate(&timed, &ctx, clock()).await.unwrap();
    allocator::allocate(&alloc("job-long", 2, None, None), &ctx, clock()).await.unwrap();
    fx.drain().await;
    tokio::time::sleep(std::time::Duration::from_secs(90)).await;
    assert_eq!(staleness_sweeper::sweep_once(&sweeper, clock()).await.unwrap().jobs_closed, 0);
    tokio::time::sleep(std::time::Duration::from_secs(15)).await;
    assert_eq!(staleness_sweeper::sweep_once(&sweeper, clock()).await.unwrap().jobs_closed, 1);
    let ev = fx.drain().await;
    let r: JobReleased = serde_json::from_value(ev[0].1.clone()).unwrap();
    assert_eq!(
        (r.job_id.as_str(), r.reason.as_str(), r.duration_ms, r.cost_micros),
        ("job-timed", "expired", 100_000, 66_667),
        "2 × 1.2/h × 100 s, billed to its end, not to the sweep"
    );

    // The provider stops heartbeating (its last one at t0): offline, and job-long is interrupted,
    // billed up to that last heartbeat.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    let report = staleness_sweeper::sweep_once(&sweeper, clock()).await.unwrap();
    assert_eq!((report.marked_offline, report.jobs_closed), (1, 1));
    let ev = fx.drain().await;
    let r: JobReleased = serde_json::from_value(ev[0].1.clone()).unwrap();
    assert_eq!(
        (r.job_id.as_str(), r.reason.as_str(), r.duration_ms, r.cost_micros),
        ("job-long", "interrupted", 0, 0)
    );
    let l = fx.ledger(&p.provider_id).await;
    assert_eq!(
        l.models["RTX-4090"],
        ModelCounts {
            total: 4,
            free: 3,
            used: 0,
            mining: 1
        }
    );
    assert!(audit(store.as_ref()).await.unwrap().is_empty());
    let job = store.get(Table::Jobs, "job-long").await.unwrap().unwrap();
    assert_eq!(job.get("end_reason"), Some(&Value::from("interrupted")));
}

#[tokio::test]
async fn bad_job_messages_are_refused_with_a_reason() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    seed_available(store.as_ref(), &provider(6, "NVIDIA GeForce RTX 4090", 4, 0, 1.0).registration, now).await;
    let mut fx = Fixture::new(store.clone()).await;
    let handler = allocator::Allocator(fx.ctx());
    let good = json!({"job_id": "job-x", "customer_id": "c", "gpus": 1, "cpu_cores": 1, "memory_mb": 1024, "image": "python:3.12-slim"});
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(&str, &str, Vec<u8>, &str, bool)> = vec![
        (
            "zero GPUs",
            topics::JOB_ALLOCATE,
            with(&|v| v["gpus"] = json!(0)),
            "invalid_request",
            true,
        ),
        (
            "negative GPUs",
            topics::JOB_ALLOCATE,
            with(&|v| v["gpus"] = json!(-1)),
            "malformed_json",
            false,
        ),
        (
            "absurd GPUs",
            topics::JOB_ALLOCATE,
            with(&|v| v["gpus"] = json!(100_000)),
            "invalid_request",
            true,
        ),
        (
            "zero CPU",
            topics::JOB_ALLOCATE,
            with(&|v| v["cpu_cores"] = json!(0)),
            "invalid_request",
            true,
        ),
        (
            "absurd memory",
            topics::JOB_ALLOCATE,
            with(&|v| v["memory_mb"] = json!(1u64 << 40)),
            "invalid_request",
            true,
        ),
        (
            "zero memory",
            topics::JOB_ALLOCATE,
            with(&|v| v["memory_mb"] = json!(0)),
            "invalid_request",
            true,
        ),
        (
            "negative price cap",
            topics::JOB_ALLOCATE,
            with(&|v| v["max_price_per_gpu_hour"] = json!(-1.0)),
            "invalid_request",
            true,
        ),
        (
            "zero duration",
            topics::JOB_ALLOCATE,
            with(&|v| v["duration_s"] = json!(0)),
            "invalid_request",
            true,
        ),
        (
            "gpus as a string",
            topics::JOB_ALLOCATE,
            with(&|v| v["gpus"] = json!("two")),
            "malformed_json",
            false,
        ),
        (
            "missing job_id",
            topics::JOB_ALLOCATE,
            with(&|v| drop(v.as_object_mut().unwrap().remove("job_id"))),
            "malformed_json",
            false,
        ),
        (
            "job_id with a dot",
            topics::JOB_ALLOCATE,
            with(&|v| v["job_id"] = json!("job.x")),
            "invalid_request",
            false,
        ),
        (
            "empty customer",
            topics::JOB_ALLOCATE,
            with(&|v| v["customer_id"] = json!("")),
            "invalid_request",
            true,
        ),
        (
            "oversize",
            topics::JOB_ALLOCATE,
            with(&|v| v["customer_id"] = json!("x".repeat(70 * 1024))),
            "entry_too_large",
            false,
        ),
        ("not JSON", topics::JOB_ALLOCATE, b"{nope".to_vec(), "malformed_json", false),
        (
            "release without job_id",
            topics::JOB_RELEASE,
            br#"{"reason":"x"}"#.to_vec(),
            "malformed_json",
            false,
        ),
        (
            "release of a bad id",
            topics::JOB_RELEASE,
            br#"{"job_id":"../etc"}"#.to_vec(),
            "invalid_request",
            false,
        ),
    ];
    let before = (store.scan(Table::Providers).await.unwrap(), store.scan(Table::Jobs).await.unwrap());
    for (name, key, body, reason, answered) in cases {
        match handler.handle(key, &body, now).await {
            Err(Failure::Refuse(r)) => assert_eq!(r.reason.code(), reason, "{name}: {}", r.message),
            other => panic!("{name}: expected {reason}, got {other:?}"),
        }
        let ev = fx.drain().await;
        assert_eq!(!ev.is_empty(), answered, "{name}: answered {ev:?}");
        if answered {
            assert_eq!(
                (ev[0].0.as_str(), ev[0].1["reason"].as_str()),
                (topics::JOB_REJECTED, Some(reason)),
                "{name}"
            );
        }
        assert_eq!(
            (store.scan(Table::Providers).await.unwrap(), store.scan(Table::Jobs).await.unwrap()),
            before,
            "{name}: state changed"
        );
    }
}

/// Seeds `n` providers (ids from `first`), `model_of(i)` GPUs at `price_of(i)`; the lowest price
/// per model label.
async fn seed_priced(
    store: &dyn ItemStore,
    first: usize,
    n: usize,
    model_of: impl Fn(usize) -> &'static str,
    price_of: impl Fn(usize) -> f64,
) {
    for i in first..first + n {
        seed_available(store, &provider(i, model_of(i), 2, 0, price_of(i)).registration, t0()).await;
    }
}

async fn allocated(fx: &mut Fixture, req: &AllocateRequest) -> JobAllocated {
    allocator::allocate(req, &fx.ctx(), t0()).await.unwrap();
    let ev = fx.drain().await;
    assert_eq!(ev[0].0, topics::JOB_ALLOCATED, "{}: {:?}", req.job_id, ev[0].1);
    serde_json::from_value(ev[0].1.clone()).unwrap()
}

/// A job naming its model reads the placement index: that model's providers (and the mixed
/// ones), cheapest first, only until nothing cheaper can be left. Among 3,000 providers of two
/// models at spread prices it finds the cheapest in a few pages; reading the available fleet, as
/// before, touched all 3,000. A provider offering two models is found for either.
#[tokio::test]
async fn placement_reads_the_cheapest_of_the_model_not_the_fleet() {
    use worldland_adapters::state::counting::CountingStore;
    let memory: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let counting = Arc::new(CountingStore::new(memory.clone()));
    let models = ["NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB"];
    let price = |i: usize| 1.0 + (i * 7919 % 1000) as f64 / 100.0;
    seed_priced(memory.as_ref(), 0, 3000, |i| models[i % 2], price).await;
    let cheapest_a100 = (0..3000).filter(|i| i % 2 == 1).map(price).fold(f64::MAX, f64::min);
    let mut fx = Fixture::new(counting.clone()).await;

    counting.take();
    let a = allocated(&mut fx, &alloc("by-index", 1, Some("A100-SXM4-80GB"), None)).await;
    let read = counting.take().index_items;
    assert_eq!(a.price_per_gpu_hour_micros, (cheapest_a100 * 1e6).round() as i64);
    assert!(
        read <= 2 * worldland_core::placement::index::PAGE as u64,
        "read {read} index items of 3,000"
    );

    // A provider with one 4090 and one A100, cheaper than all: found for an A100, but not for
    // two of them.
    let mut mixed = provider(5000, models[0], 2, 0, 0.5);
    mixed.registration.spec.gpus[1].name = models[1].into();
    seed_available(memory.as_ref(), &mixed.registration, t0()).await;
    let m = allocated(&mut fx, &alloc("mixed-one", 1, Some("A100-SXM4-80GB"), None)).await;
    assert_eq!(m.provider_id, mixed.provider_id);
    let two = allocated(&mut fx, &alloc("mixed-two", 2, Some("A100-SXM4-80GB"), None)).await;
    assert_ne!(two.provider_id, mixed.provider_id);
}

/// Where many providers share the cheapest price, placement stops after its read budget: the
/// price stays the cheapest, and the read stays bounded however large the crowd.
#[tokio::test]
async fn a_crowd_at_one_price_is_read_only_up_to_the_budget() {
    use worldland_adapters::state::counting::CountingStore;
    let memory: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let counting = Arc::new(CountingStore::new(memory.clone()));
    seed_priced(memory.as_ref(), 0, 2500, |_| "Tesla T4", |_| 0.3).await;
    seed_priced(memory.as_ref(), 2500, 10, |_| "Tesla T4", |_| 0.9).await;
    let mut fx = Fixture::new(counting.clone()).await;
    counting.take();
    let a = allocated(&mut fx, &alloc("crowd", 1, Some("T4"), None)).await;
    let read = counting.take().index_items as usize;
    assert_eq!(a.price_per_gpu_hour_micros, 300_000);
    assert!(
        read <= worldland_core::placement::index::READ_BUDGET + worldland_core::placement::index::PAGE,
        "read {read} of 2,510"
    );
}

/// Attack: registrations cost nothing to send, so a flood of cheap ones that never join (mixed
/// models, the lowest price there is) must not sit in front of every placement. The placement
/// index holds available providers only: the job reads the real offers alone. (Filed at
/// registration, as first written, the flood made every job read all 5,000.) An offline provider
/// leaves the index the same way.
#[tokio::test]
async fn registrations_that_never_join_are_not_read_by_placement() {
    use worldland_adapters::state::counting::CountingStore;
    use worldland_core::provider::{mark_offline_if_stale, register_pending};
    let memory: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let counting = Arc::new(CountingStore::new(memory.clone()));
    seed_priced(memory.as_ref(), 0, 5, |_| "Tesla T4", |_| 1.0).await;
    for i in 100..5100 {
        let mut flood = provider(i, "Tesla T4", 2, 0, 0.000_000_4);
        flood.registration.spec.gpus[1].name = "NVIDIA A100-SXM4-80GB".into();
        register_pending(&flood.registration, "1-0", t0())
            .apply(memory.as_ref(), &flood.provider_id)
            .await
            .unwrap();
    }
    // A cheaper real one goes offline: it leaves the index.
    seed_priced(memory.as_ref(), 6000, 1, |_| "Tesla T4", |_| 0.1).await;
    let gone = provider(6000, "x", 1, 0, 0.1).provider_id;
    mark_offline_if_stale(t0() + Duration::seconds(1), t0())
        .apply(memory.as_ref(), &gone)
        .await
        .unwrap();

    let mut fx = Fixture::new(counting.clone()).await;
    counting.take();
    let a = allocated(&mut fx, &alloc("past-the-flood", 1, Some("T4"), None)).await;
    let read = counting.take().index_items;
    assert_eq!(a.price_per_gpu_hour_micros, 1_000_000);
    assert!(read <= 10, "read {read} index items behind a flood of 5,000 registrations");
}
