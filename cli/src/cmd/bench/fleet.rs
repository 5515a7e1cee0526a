//! `worldland bench fleet`: the scale of the rest of the plane for a large fleet on the embedded
//! store — memory per provider, one sweep with a share of the fleet stale (and what it reads),
//! one placement over the fleet — and what the same traffic costs on DynamoDB on demand.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::counting::{CountingStore, Counts};
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::QueueSpec;
use worldland_core::cluster::NodeInfo;
use worldland_core::messages::jobs::{AllocateRequest, Workload};
use worldland_core::messages::topics;
use worldland_core::placement::seed_available;
use worldland_core::state::units::billed_size;
use worldland_core::state::{ItemStore, Table};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::{Backends, Config};

/// The sweeper's threshold in the bench (the default `WORLDLAND_STALE_AFTER_S`).
const STALE_AFTER_S: i64 = 120;

#[derive(Debug, Serialize)]
pub struct FleetFigures {
    pub providers: usize,
    pub stale: usize,
    pub seed_s: f64,
    pub rss_bytes_per_provider: f64,
    pub item_bytes: usize,
    pub first_sweep: SweepFigures,
    pub steady_sweep: SweepFigures,
    /// One placement naming its model, through the placement index.
    pub placement_ms: f64,
    pub placement_index_items: u64,
    /// One placement of any model, over the whole available fleet.
    pub any_model_placement_ms: f64,
    pub any_model_placement_index_items: u64,
    pub cost: super::cost::Cost,
}

#[derive(Debug, Serialize)]
pub struct SweepFigures {
    pub ms: f64,
    pub marked_offline: usize,
    pub index_items: u64,
    /// Index items read per stale provider (target ≤ 1.1 in steady state).
    pub index_reads_per_stale: f64,
    pub gets: u64,
    pub writes: u64,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Which heartbeat each provider last sent: a `stale_share` went quiet long ago (stale at the
/// first sweep), as many more a little later (stale only at the second), the rest just now.
fn last_heartbeat(n: usize, every: usize, t: DateTime<Utc>) -> DateTime<Utc> {
    match n % every {
        0 => t - Duration::seconds(10 * STALE_AFTER_S),
        1 => t - Duration::seconds(STALE_AFTER_S - 30),
        _ => t,
    }
}

/// Seeds `providers` available providers (one template registration, ids and node names of their
/// own), their Ready nodes for the stale ones, and returns the seconds it took.
async fn seed(store: &dyn ItemStore, cluster: &SimulatedCluster, providers: usize, every: usize, t: DateTime<Utc>) -> anyhow::Result<f64> {
    let template = SimulatedProvider::new(0, t).registration;
    let started = Instant::now();
    for n in 0..providers {
        let mut p = template.clone();
        p.provider_id = format!("fleet-{n:07}");
        // Prices spread over a thousand steps, not in id order, as in a market.
        p.capacity.gpu_price_per_hour = 0.5 + (n * 7919 % 1000) as f64 / 1000.0;
        let hb = last_heartbeat(n, every, t);
        seed_available(&p, hb, true).apply(store, &p.provider_id).await?;
        if n % every < 2 {
            cluster.add_node(NodeInfo {
                name: worldland_core::validation::node_name(&p.provider_id, &p.spec.hostname),
                resource_version: "1".into(),
                ready: true,
                ..Default::default()
            });
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn sweep(ctx: &staleness_sweeper::Context, counting: &CountingStore, at: DateTime<Utc>) -> anyhow::Result<SweepFigures> {
    counting.take();
    let started = Instant::now();
    let report = staleness_sweeper::sweep_once(ctx, at).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let Counts {
        index_items, gets, writes, ..
    } = counting.take();
    Ok(SweepFigures {
        ms,
        marked_offline: report.marked_offline,
        index_items,
        index_reads_per_stale: index_items as f64 / report.examined.max(1) as f64,
        gets,
        writes,
    })
}

/// The GPU model of the bench's providers.
fn template_model(t: DateTime<Utc>) -> String {
    SimulatedProvider::new(0, t).registration.spec.gpus[0].name.clone()
}

/// One allocation (1 GPU) naming `model` or not: its milliseconds and the index items it read.
async fn placement(
    alloc: &allocator::Context,
    counting: &CountingStore,
    job: &str,
    model: Option<String>,
    t: DateTime<Utc>,
) -> anyhow::Result<(f64, u64)> {
    let req = AllocateRequest {
        job_id: job.into(),
        customer_id: "bench".into(),
        gpu_model: model,
        gpus: 1,
        cpu_cores: 1,
        memory_mb: 1024,
        max_price_per_gpu_hour: None,
        duration_s: None,
        workload: Workload::of_image("docker.io/library/python:3.12-slim"),
    };
    counting.take();
    let started = Instant::now();
    allocator::allocate(&req, alloc, t + Duration::seconds(61))
        .await
        .map_err(|e| anyhow::anyhow!("placement over the fleet failed: {e:?}"))?;
    Ok((started.elapsed().as_secs_f64() * 1e3, counting.take().index_items))
}

pub async fn fleet(providers: usize, stale_share: f64) -> anyhow::Result<FleetFigures> {
    let every = ((1.0 / stale_share.clamp(1e-6, 0.5)).round() as usize).max(2);
    let t = Utc::now();
    let rss0 = rss_bytes();
    let memory = Arc::new(MemoryStore::new());
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let seed_s = seed(memory.as_ref(), &cluster, providers, every, t).await?;
    let rss1 = rss_bytes();
    let item_bytes = memory.get(Table::Providers, "fleet-0000002").await?.map_or(0, |i| billed_size(&i));

    let counting = Arc::new(CountingStore::new(memory.clone()));
    let bus = Arc::new(MemoryBus::new(5));
    bus.declare(&QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS));
    let replies = Arc::new(MemoryReplies::default());
    let mut cfg = Config::defaults();
    cfg.stale_after_s = STALE_AFTER_S;
    let b = Backends::new(cfg, bus)
        .with_store(counting.clone())
        .with_cluster(cluster.clone())
        .with_replies(replies);
    let ctx = staleness_sweeper::context(&b).await?;
    // The first sweep counts the fleet for the guard; the second, a minute later, reuses it.
    let first_sweep = sweep(&ctx, &counting, t).await?;
    let steady_sweep = sweep(&ctx, &counting, t + Duration::seconds(60)).await?;

    let alloc = allocator::context(&b).await?;
    let model = template_model(t);
    let (placement_ms, placement_index_items) = placement(&alloc, &counting, "fleet-job-1", Some(model), t).await?;
    let (any_model_placement_ms, any_model_placement_index_items) = placement(&alloc, &counting, "fleet-job-2", None, t).await?;
    let cost = super::cost::Cost::estimate(item_bytes, providers, placement_index_items, any_model_placement_index_items);
    Ok(FleetFigures {
        providers,
        stale: providers / every,
        seed_s,
        rss_bytes_per_provider: rss1.saturating_sub(rss0) as f64 / providers.max(1) as f64,
        item_bytes,
        first_sweep,
        steady_sweep,
        placement_ms,
        placement_index_items,
        any_model_placement_ms,
        any_model_placement_index_items,
        cost,
    })
}

pub fn print_fleet(f: &FleetFigures) {
    println!(
        "fleet of {} providers on the embedded store (seeded in {:.1} s)",
        f.providers, f.seed_s
    );
    println!(
        "  memory: {:.0} bytes per provider (RSS growth; a provider item is ~{} bytes as DynamoDB bills it)",
        f.rss_bytes_per_provider, f.item_bytes
    );
    for (name, s) in [
        ("first sweep (counts the fleet)", &f.first_sweep),
        ("steady sweep (fleet count reused)", &f.steady_sweep),
    ] {
        println!(
            "  {name}: {:.1} ms, {} marked offline, {} index items read ({:.3} per stale), {} point reads, {} writes",
            s.ms, s.marked_offline, s.index_items, s.index_reads_per_stale, s.gets, s.writes
        );
    }
    println!(
        "  placement naming its model (placement index, cheapest first): {:.2} ms, {} index items read",
        f.placement_ms, f.placement_index_items
    );
    println!(
        "  placement of any model (the whole available fleet): {:.1} ms, {} index items read",
        f.any_model_placement_ms, f.any_model_placement_index_items
    );
    super::cost::print_cost(&f.cost);
}
