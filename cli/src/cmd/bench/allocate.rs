//! `worldland bench allocate`: allocate+release pairs on one core and under contention, on the
//! embedded store and on DynamoDB (dynalite) when an endpoint is given.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest, Workload};
use worldland_core::messages::topics;
use worldland_core::placement::seed_available;
use worldland_core::state::ItemStore;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::{backends, Backends, Config};

/// Every row (the DynamoDB ones only with an endpoint), printed as a table or as JSON.
pub async fn rows_for_allocate(pairs: usize, dynamodb_endpoint: Option<String>, dynamodb_pairs: usize, json: bool) -> anyhow::Result<()> {
    let mut rows = embedded_rows(pairs).await?;
    if let Some(ep) = dynamodb_endpoint {
        rows.extend(dynalite_rows(ep, dynamodb_pairs).await?);
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        print_allocate(&rows);
    }
    Ok(())
}

/// 8 allocators over 2 providers of 2 GPUs, any model.
fn contention(pairs_each: usize) -> Load<'static> {
    Load {
        allocators: 8,
        providers: 2,
        gpus_each: 2,
        pairs_each,
        model: None,
    }
}

/// One core (a runtime of one thread, one allocator), then contention, on the embedded store.
async fn embedded_rows(pairs: usize) -> anyhow::Result<Vec<AllocateFigures>> {
    // The same on one core: any model (the fleet read, reused for 100 ms), then naming the
    // model (the placement index, read afresh each time).
    let model = SimulatedProvider::new(0, Utc::now()).registration.spec.gpus[0].name.clone();
    let one_core = |scenario: &'static str, model: Option<String>| {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(allocate_pairs(
                    Arc::new(MemoryStore::new()),
                    "embedded",
                    scenario,
                    Load {
                        allocators: 1,
                        providers: 20,
                        gpus_each: 8,
                        pairs_each: pairs,
                        model: model.as_deref(),
                    },
                ))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    };
    let one = one_core("one core, 1 allocator", None)?;
    let one_named = one_core("one core, naming the model", Some(model))?;
    let contention = allocate_pairs(
        Arc::new(MemoryStore::new()),
        "embedded",
        "contention, 2 providers",
        contention(pairs / 8),
    )
    .await?;
    Ok(vec![one, one_named, contention])
}

/// Spread and contention on two fresh pairs of tables at `endpoint`, deleted afterwards.
async fn dynalite_rows(endpoint: String, dynamodb_pairs: usize) -> anyhow::Result<Vec<AllocateFigures>> {
    let mut rows = vec![];
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let cfg = Config::from_vars([
        ("WORLDLAND_DYNAMODB_ENDPOINT".to_string(), endpoint),
        ("WORLDLAND_PROVIDERS_TABLE".into(), format!("bench-{id}-providers")),
        ("WORLDLAND_JOBS_TABLE".into(), format!("bench-{id}-jobs")),
    ])?;
    let dynamo = backends::dynamo(&cfg).await;
    dynamo.ensure_tables().await?;
    let store: Arc<dyn ItemStore> = Arc::new(dynamo.clone());
    let spread = Load {
        allocators: 8,
        providers: 20,
        gpus_each: 8,
        pairs_each: dynamodb_pairs / 8,
        model: None,
    };
    rows.push(allocate_pairs(store.clone(), "dynalite", "spread, 20 providers", spread).await?);
    let dynamo2 = backends::dynamo(&Config::from_vars([
        (
            "WORLDLAND_DYNAMODB_ENDPOINT".to_string(),
            cfg.dynamodb_endpoint.clone().unwrap_or_default(),
        ),
        ("WORLDLAND_PROVIDERS_TABLE".into(), format!("bench-{id}-providers-2")),
        ("WORLDLAND_JOBS_TABLE".into(), format!("bench-{id}-jobs-2")),
    ])?)
    .await;
    dynamo2.ensure_tables().await?;
    rows.push(
        allocate_pairs(
            Arc::new(dynamo2.clone()),
            "dynalite",
            "contention, 2 providers",
            contention(dynamodb_pairs / 8),
        )
        .await?,
    );
    dynamo.delete_tables().await?;
    dynamo2.delete_tables().await?;
    Ok(rows)
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

/// What one row runs: `allocators` concurrent tasks, `pairs_each` pairs each, over `providers`
/// providers of `gpus_each` GPUs; the jobs name `model` or take any.
pub struct Load<'a> {
    pub allocators: usize,
    pub providers: usize,
    pub gpus_each: u32,
    pub pairs_each: usize,
    pub model: Option<&'a str>,
}

/// The allocate+release pairs of `load`.
pub async fn allocate_pairs(
    store: Arc<dyn ItemStore>,
    store_name: &str,
    scenario: &str,
    load: Load<'_>,
) -> anyhow::Result<AllocateFigures> {
    let Load {
        allocators,
        providers,
        gpus_each,
        pairs_each,
        model,
    } = load;
    let now = Utc::now();
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    seed_providers(store.as_ref(), run, providers, gpus_each, now).await?;
    let bus = Arc::new(MemoryBus::new(5));
    let draining = drain_job_events(&bus).await?;
    let replies = Arc::new(MemoryReplies::default());
    let t0 = Instant::now();
    let b = Backends::new(Config::defaults(), bus.clone())
        .with_store(store.clone())
        .with_replies(replies);
    let mut tasks = vec![];
    for t in 0..allocators {
        let ctx = allocator::context(&b).await?;
        let model = model.map(str::to_string);
        tasks.push(tokio::spawn(allocate_and_release(
            ctx,
            format!("b{run}-{t}"),
            pairs_each,
            model,
            now,
        )));
    }
    // Each allocator counts its own lost races; the run's are their sum.
    let mut failures = 0;
    for t in tasks {
        failures += t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    draining.abort();
    let pairs = allocators * pairs_each;
    let audit_clean = worldland_core::job::audit(store.as_ref()).await?.is_empty();
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

/// `providers` available providers of `gpus_each` GPUs of one model.
async fn seed_providers(store: &dyn ItemStore, run: &str, providers: usize, gpus_each: u32, now: DateTime<Utc>) -> anyhow::Result<()> {
    for n in 0..providers {
        let mut p = SimulatedProvider::new(n, now).registration;
        p.provider_id = format!("bench-{run}-p{n}");
        let g = p.spec.gpus[0].clone();
        p.spec.gpus = vec![g; gpus_each as usize];
        p.spec.total_gpus = gpus_each;
        p.capacity.gpu_count = Some(gpus_each);
        seed_available(&p, now, true).apply(store, &p.provider_id).await?;
    }
    Ok(())
}

/// Drains the answers as they come, like a customer would.
async fn drain_job_events(bus: &MemoryBus) -> anyhow::Result<JoinHandle<()>> {
    let events = QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS);
    bus.declare(&events);
    let mut sub = bus.subscribe(&events).await?;
    Ok(tokio::spawn(async move {
        while let Some(d) = sub.next().await {
            let _ = d.ack().await;
        }
    }))
}

/// One allocator's loop: `pairs` one-GPU jobs, each allocated then released; its lost races.
async fn allocate_and_release(
    ctx: allocator::Context,
    job_prefix: String,
    pairs: usize,
    model: Option<String>,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    for i in 0..pairs {
        let job_id = format!("{job_prefix}-{i}");
        let req = AllocateRequest {
            job_id: job_id.clone(),
            customer_id: "bench".into(),
            gpu_model: model.clone(),
            gpus: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            max_price_per_gpu_hour: None,
            duration_s: None,
            workload: Workload::of_image("docker.io/library/python:3.12-slim"),
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
        anyhow::ensure!(a.is_ok() && r.is_ok(), "allocate {a:?}, release {r:?}");
    }
    Ok(ctx.stats.condition_failures.load(Ordering::Relaxed))
}

pub fn print_allocate(rows: &[AllocateFigures]) {
    println!("worldland bench allocate ({})", super::build_kind());
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
