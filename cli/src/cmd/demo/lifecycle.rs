//! The demo's lifecycle phase, on a virtual clock: providers join and heartbeat, a share die and
//! are detected offline, some come back, while customers rent GPUs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Duration as D, Utc};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec, Subscription};
use worldland_core::cluster::NodeInfo;
use worldland_core::messages::{topics, Heartbeat, ProviderState, StreamEnvelope};
use worldland_core::provider::ProviderRecord;
use worldland_core::signature::sign_personal;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::{Backends, Config};

mod summary;

pub use summary::*;

const HEARTBEAT_EVERY_S: i64 = 30;
const SWEEP_EVERY_S: i64 = 15;
const STALE_AFTER_S: i64 = 120;
/// What the demo's customers run: a small public image, as a real request names one.
const DEMO_IMAGE: &str = "docker.io/library/python:3.12-slim";
/// The virtual second the doomed providers fall silent (minute 7).
const DIE_AT: i64 = 420;
/// The virtual second every other one of them comes back (minute 12).
const RETURN_AT: i64 = 720;
/// The last virtual second (minute 15).
const END_AT: i64 = 900;
/// Steady state for the write rate: after the joins (minute 1) until the first deaths; it spans
/// one annotation refresh (every 5 minutes) per node.
const STEADY: (i64, i64) = (60, DIE_AT);
/// Customers send a request every 5 s from here on (minute 2).
const CUSTOMERS_FROM: i64 = 120;

/// Providers 0, 5, 10, … die at minute 7.
fn dies(n: usize) -> bool {
    n.is_multiple_of(5)
}

/// Every other one of those comes back at minute 12.
fn returns(n: usize) -> bool {
    n.is_multiple_of(10)
}

fn silent(n: usize, tick: i64) -> bool {
    dies(n) && tick >= DIE_AT && (tick < RETURN_AT || !returns(n))
}

/// Drives the heartbeat recorder's and the sweeper's cores on a virtual clock: fifteen minutes in
/// about a second. Providers 0, 5, 10, … die at minute 7; every other one of those comes back at
/// minute 12. The steady-state window (minutes 1–7) includes one annotation refresh per node.
pub async fn lifecycle(
    providers: &[SimulatedProvider],
    store: Arc<MemoryStore>,
    cluster: Arc<SimulatedCluster>,
    bus: Arc<MemoryBus>,
    replies: Arc<MemoryReplies>,
) -> anyhow::Result<LifecycleSummary> {
    let node_names = add_nodes(providers, &cluster, &replies);
    let mut run = Lifecycle::new(providers, store, cluster, bus.clone(), replies).await?;
    run.node_names = node_names;
    let mut events = bus.subscribe(&QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS)).await?;
    let start = Utc::now();
    for tick in 0..=END_AT {
        run.tick(tick, start + D::seconds(tick)).await?;
    }
    run.collect_job_events(events.as_mut()).await?;
    run.count_mining_commands();
    run.summary().await
}

/// Each approved provider's node, ready, as if it had joined under the name its answer assigned
/// (`kubeadm join --node-name`): provider index → node name.
fn add_nodes(providers: &[SimulatedProvider], cluster: &SimulatedCluster, replies: &MemoryReplies) -> BTreeMap<usize, String> {
    let mut names = BTreeMap::new();
    for (n, p) in providers.iter().enumerate() {
        let Some(name) = replies
            .answers_for(&p.provider_id)
            .into_iter()
            .find(|a| a.success)
            .and_then(|a| a.node_name)
        else {
            continue; // never approved: no node joins
        };
        let spec = &p.registration.spec;
        cluster.add_node(NodeInfo {
            name: name.clone(),
            resource_version: "1".into(),
            ready: true,
            cpu_millis: Some(i64::from(spec.cpu_cores) * 1000),
            memory_bytes: Some(spec.total_memory_mb as i64 * 1024 * 1024),
            gpus: Some(i64::from(spec.total_gpus)),
            ..Default::default()
        });
        names.insert(n, name);
    }
    names
}

/// The lifecycle's cores and what it has measured so far.
struct Lifecycle<'a> {
    providers: &'a [SimulatedProvider],
    store: Arc<MemoryStore>,
    cluster: Arc<SimulatedCluster>,
    replies: Arc<MemoryReplies>,
    recorder: heartbeat_recorder::Context,
    sweeper: staleness_sweeper::Context,
    alloc_ctx: allocator::Context,
    market: Market,
    rng: Lcg,
    /// Jobs the customer releases early, with the virtual second they do.
    open_jobs: Vec<(String, i64)>,
    revenue_micros: i64,
    last_beat: BTreeMap<usize, DateTime<Utc>>,
    /// The node each approved provider joined as (its answer's `node_name`).
    node_names: BTreeMap<usize, String>,
    /// Seconds from last heartbeat to offline, per provider that died and was detected.
    latencies: Vec<f64>,
    beats: u64,
    writes_at_steady_start: u64,
    writes_per_provider_minute: f64,
}

impl<'a> Lifecycle<'a> {
    /// The cores wired by their own crates' constructors, on the embedded backends.
    async fn new(
        providers: &'a [SimulatedProvider],
        store: Arc<MemoryStore>,
        cluster: Arc<SimulatedCluster>,
        bus: Arc<MemoryBus>,
        replies: Arc<MemoryReplies>,
    ) -> anyhow::Result<Self> {
        let mut cfg = Config::defaults();
        cfg.stale_after_s = STALE_AFTER_S;
        let b = Backends::new(cfg, bus)
            .with_store(store.clone())
            .with_cluster(cluster.clone())
            .with_replies(replies.clone());
        let recorder = heartbeat_recorder::context(&b).await?;
        let sweeper = staleness_sweeper::context(&b).await?;
        let alloc_ctx = allocator::context(&b).await?;
        Ok(Self {
            providers,
            store,
            cluster,
            replies,
            recorder,
            sweeper,
            alloc_ctx,
            market: Market::default(),
            rng: Lcg(42),
            open_jobs: vec![],
            revenue_micros: 0,
            last_beat: BTreeMap::new(),
            node_names: BTreeMap::new(),
            latencies: vec![],
            beats: 0,
            writes_at_steady_start: 0,
            writes_per_provider_minute: 0.0,
        })
    }

    /// One virtual second.
    async fn tick(&mut self, tick: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.measure_write_rate(tick);
        if tick == RETURN_AT {
            self.measure_detection().await?;
        }
        self.heartbeats(tick, now).await?;
        if tick % SWEEP_EVERY_S == 0 {
            staleness_sweeper::sweep_once(&self.sweeper, now).await?;
        }
        // Customers: from minute 2, a request every 5 s; some jobs are released early, the rest
        // run out their duration (the sweeper closes them).
        if tick >= CUSTOMERS_FROM && tick % 5 == 0 && !self.providers.is_empty() {
            self.customer_request(tick, now).await;
        }
        self.release_due(tick, now).await;
        if tick % 60 == 0 {
            let (used, mining) = fleet_shares(&self.store).await?;
            self.market.utilisation_per_minute.push(used);
            self.market.mining_share_per_minute.push(mining);
        }
        Ok(())
    }

    /// Kubernetes writes per provider-minute over the steady-state window.
    fn measure_write_rate(&mut self, tick: i64) {
        if tick == STEADY.0 {
            self.writes_at_steady_start = self.cluster.writes();
        }
        if tick == STEADY.1 && !self.providers.is_empty() {
            let minutes = (STEADY.1 - STEADY.0) as f64 / 60.0;
            self.writes_per_provider_minute =
                (self.cluster.writes() - self.writes_at_steady_start) as f64 / self.providers.len() as f64 / minutes;
        }
    }

    /// The outage is over: how long did detection take for each provider that died?
    async fn measure_detection(&mut self) -> anyhow::Result<()> {
        for (n, p) in self.providers.iter().enumerate().filter(|(n, _)| dies(*n)) {
            let rec = ProviderRecord::load(self.store.as_ref(), &p.provider_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("provider vanished"))?;
            if let (ProviderState::Offline, Some(off), Some(last)) = (rec.state, rec.offline_at, self.last_beat.get(&n)) {
                self.latencies.push((off - *last).num_seconds() as f64);
            }
        }
        Ok(())
    }

    /// A signed heartbeat from each provider due this second and not silent.
    async fn heartbeats(&mut self, tick: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        for (n, p) in self.providers.iter().enumerate() {
            if (tick + n as i64) % HEARTBEAT_EVERY_S != 0 || silent(n, tick) {
                continue;
            }
            let Some(node_name) = self.node_names.get(&n) else {
                continue; // never approved, never joined
            };
            let hb = Heartbeat {
                provider_id: p.provider_id.clone(),
                node_name: node_name.clone(),
                status: "available".into(),
                gpu_usage: vec![0.0; p.registration.spec.total_gpus as usize],
                cpu_usage: 5.0,
                memory_usage: 20.0,
                active_jobs: 0,
                timestamp: now,
                seq: None,
            };
            let data = serde_json::to_string(&hb)?;
            let env = StreamEnvelope {
                stream: "provider:heartbeat".into(),
                entry_id: format!("{}-{n}", now.timestamp_millis()),
                signature: Some(sign_personal(&p.key, data.as_bytes())),
                data,
                timestamp: None,
                received_at_ms: None,
            };
            let _ = heartbeat_recorder::handle(&env, &self.recorder, now).await;
            self.last_beat.insert(n, now);
            self.beats += 1;
        }
        Ok(())
    }

    /// One customer's request from the deterministic generator; one in three is released early.
    async fn customer_request(&mut self, tick: i64, now: DateTime<Utc>) {
        let n = self.market.jobs_requested;
        self.market.jobs_requested += 1;
        let models = [
            "NVIDIA GeForce RTX 4090",
            "NVIDIA A100-SXM4-80GB",
            "Tesla T4",
            "NVIDIA H100 80GB HBM3",
        ];
        let rng = &mut self.rng;
        let req = worldland_core::messages::jobs::AllocateRequest {
            job_id: format!("demo-job-{n:05}"),
            customer_id: format!("customer-{}", rng.next(7)),
            gpu_model: (rng.next(3) > 0).then(|| models[rng.next(models.len() as u64) as usize].to_string()),
            gpus: 1 + rng.next(4) as u32,
            cpu_cores: 1 + rng.next(8) as u32,
            memory_mb: 1024 * (1 + rng.next(16)),
            max_price_per_gpu_hour: (rng.next(6) == 0).then_some(0.3),
            duration_s: Some(120 + rng.next(360)),
            workload: worldland_core::messages::jobs::Workload::of_image(DEMO_IMAGE),
        };
        let _ = allocator::allocate(&req, &self.alloc_ctx, now).await;
        if self.rng.next(3) == 0 {
            self.open_jobs.push((req.job_id.clone(), tick + 30 + self.rng.next(90) as i64));
        }
    }

    /// The customers release the jobs whose time has come.
    async fn release_due(&mut self, tick: i64, now: DateTime<Utc>) {
        let (due, rest): (Vec<_>, Vec<_>) = self.open_jobs.drain(..).partition(|(_, at)| *at <= tick);
        self.open_jobs = rest;
        for (job_id, _) in due {
            let r = worldland_core::messages::jobs::ReleaseRequest {
                job_id,
                reason: "customer released".into(),
            };
            let _ = allocator::release(&r, &self.alloc_ctx, now).await;
        }
    }

    /// Allocations, rejections and closures with their costs, from the job events published.
    async fn collect_job_events(&mut self, events: &mut dyn Subscription) -> anyhow::Result<()> {
        let market = &mut self.market;
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(1), events.next()).await {
            let v: serde_json::Value = serde_json::from_slice(&d.body)?;
            match d.routing_key.as_str() {
                topics::JOB_ALLOCATED => market.jobs_allocated += 1,
                topics::JOB_REJECTED => {
                    *market
                        .rejected_per_reason
                        .entry(v["reason"].as_str().unwrap_or("?").to_string())
                        .or_insert(0) += 1
                }
                topics::JOB_RELEASED => {
                    *market
                        .jobs_closed_per_reason
                        .entry(v["reason"].as_str().unwrap_or("?").to_string())
                        .or_insert(0) += 1;
                    self.revenue_micros += v["cost_micros"].as_i64().unwrap_or(0);
                }
                _ => {}
            }
            d.ack().await?;
        }
        market.revenue_wl = self.revenue_micros as f64 / 1e6;
        Ok(())
    }

    /// Mining stops and resumes the broker sent the providers.
    fn count_mining_commands(&mut self) {
        for p in self.providers {
            for c in self.replies.commands_for(&p.provider_id) {
                match c.kind.as_str() {
                    worldland_core::messages::jobs::MINING_STOP => self.market.mining_stops += 1,
                    _ => self.market.mining_resumes += 1,
                }
            }
        }
    }

    /// The audit and the final states, with everything measured.
    async fn summary(mut self) -> anyhow::Result<LifecycleSummary> {
        self.market.audit_violations = worldland_core::job::audit(self.store.as_ref()).await?;
        let mut per_state = BTreeMap::new();
        let mut back_available = 0;
        for (n, p) in self.providers.iter().enumerate() {
            let rec = ProviderRecord::load(self.store.as_ref(), &p.provider_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("provider vanished"))?;
            *per_state.entry(rec.state.to_string()).or_insert(0) += 1;
            if returns(n) && rec.state == ProviderState::Available {
                back_available += 1;
            }
        }
        let count = |f: fn(usize) -> bool| (0..self.providers.len()).filter(|n| f(*n)).count();
        Ok(LifecycleSummary {
            virtual_minutes: END_AT / 60,
            heartbeats: self.beats,
            providers_per_state: per_state,
            died: count(dies),
            detected_offline: self.latencies.len(),
            came_back: count(returns),
            back_available,
            offline_detection_latency_s: seconds(self.latencies),
            detection_bound_s: STALE_AFTER_S + SWEEP_EVERY_S,
            kubernetes_writes_per_provider_minute: self.writes_per_provider_minute,
            market: self.market,
        })
    }
}
