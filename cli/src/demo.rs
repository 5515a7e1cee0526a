//! `worldland demo`: the whole registration path in one process on the embedded default —
//! in-memory store, in-process bus, simulated cluster — with simulated providers that use real
//! signatures and sealed join commands, plus a few bad registrations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::broadcast;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::{topics, ProviderState, StreamEnvelope};
use worldland_core::signature::SignaturePolicy;
use worldland_core::state::providers::ProviderRecord;
use worldland_core::state::{ItemStore, Table};
use worldland_core::streams::StreamNames;
use worldland_core::validation::ValidationPolicy;
use worldland_core::worker::Handler;
use worldland_provider_sdk::client::join_from_response;
use worldland_provider_sdk::simulated::{signed_envelope, SimulatedProvider};
use worldland_runtime::worker::run_consumer;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub providers: usize,
    pub lifecycle: bool,
    pub show_progress: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageTimes {
    pub median_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub backend: &'static str,
    pub providers: usize,
    pub bad_registrations: usize,
    pub providers_per_state: BTreeMap<String, usize>,
    pub rejections_per_reason: BTreeMap<String, usize>,
    /// Approved providers whose sealed join command opened with their own key.
    pub sealed_joins_opened: usize,
    pub unanswered: Vec<String>,
    pub stage_times: BTreeMap<String, StageTimes>,
    pub lifecycle: Option<LifecycleSummary>,
    pub elapsed_ms: f64,
}

impl DemoSummary {
    pub fn ok(&self) -> bool {
        self.unanswered.is_empty() && self.sealed_joins_opened == self.providers && self.lifecycle.as_ref().is_none_or(LifecycleSummary::ok)
    }
}

/// The lifecycle phase, on a virtual clock: providers join and heartbeat, a share die and are
/// detected offline, some come back.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleSummary {
    pub virtual_minutes: i64,
    pub heartbeats: u64,
    pub providers_per_state: BTreeMap<String, usize>,
    pub died: usize,
    pub detected_offline: usize,
    pub came_back: usize,
    pub back_available: usize,
    pub offline_detection_latency_s: Seconds,
    /// The bound detection must meet: threshold + one sweep interval.
    pub detection_bound_s: i64,
    pub kubernetes_writes_per_provider_minute: f64,
    pub market: Market,
}

impl LifecycleSummary {
    pub fn ok(&self) -> bool {
        self.detected_offline == self.died
            && self.back_available == self.came_back
            && self.offline_detection_latency_s.max <= self.detection_bound_s as f64
            && self.market.audit_violations.is_empty()
    }
}

/// Customers renting while providers come and go.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Market {
    pub jobs_requested: usize,
    pub jobs_allocated: usize,
    pub rejected_per_reason: BTreeMap<String, usize>,
    pub jobs_closed_per_reason: BTreeMap<String, usize>,
    /// GPUs in use / GPUs offered by available providers, each minute.
    pub utilisation_per_minute: Vec<f64>,
    /// GPUs mining / GPUs offered by available providers, each minute.
    pub mining_share_per_minute: Vec<f64>,
    pub mining_stops: usize,
    pub mining_resumes: usize,
    /// Sum of closed jobs' costs, in WL (exact micro-units summed, then shown).
    pub revenue_wl: f64,
    pub audit_violations: Vec<String>,
}

/// A small deterministic generator: the same customers send the same requests every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

async fn fleet_shares(store: &MemoryStore) -> anyhow::Result<(f64, f64)> {
    let (mut total, mut used, mut mining) = (0i64, 0i64, 0i64);
    for item in store.query_by_state(Table::Providers, "available", None).await? {
        if let Some(l) = worldland_core::ledger::Ledger::from_item(&item) {
            for c in l.models.values() {
                total += c.total;
                used += c.used;
                mining += c.mining;
            }
        }
    }
    let share = |n: i64| {
        if total == 0 {
            0.0
        } else {
            (n as f64 / total as f64 * 1000.0).round() / 1000.0
        }
    };
    Ok((share(used), share(mining)))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Seconds {
    pub median: f64,
    pub max: f64,
}

fn seconds(v: Vec<f64>) -> Seconds {
    let t = stage(v);
    Seconds {
        median: t.median_ms,
        max: t.max_ms,
    }
}

fn stage(mut v: Vec<f64>) -> StageTimes {
    if v.is_empty() {
        return StageTimes {
            median_ms: 0.0,
            p95_ms: 0.0,
            max_ms: 0.0,
        };
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    StageTimes {
        median_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: at(1.0),
    }
}

/// Hostile and broken registrations, each with the reason the broker must give.
fn bad_registrations(streams: &StreamNames, first: &SimulatedProvider) -> Vec<(StreamEnvelope, &'static str)> {
    let now = Utc::now();
    let stream = streams.registration();
    let mut out = vec![];
    let mut add = |n: usize, f: &dyn Fn(&mut worldland_core::messages::Registration), reason: &'static str| {
        let p = SimulatedProvider::new(90_000 + n, now);
        let mut reg = p.registration.clone();
        reg.provider_id = format!("bad-provider-{n}");
        f(&mut reg);
        out.push((signed_envelope(&reg, &p.key, &stream, &format!("{}-9", 2_000_000 + n)), reason));
    };
    add(1, &|r| r.spec.hostname = "bad_host!".into(), "invalid_hostname");
    add(2, &|r| r.spec.public_ip = "192.168.1.20".into(), "non_public_ip");
    add(3, &|r| r.capacity.gpu_price_per_hour = 5_000.0, "price_above_ceiling");
    add(4, &|r| r.spec.total_gpus = 9, "gpu_count_mismatch");
    add(
        5,
        &|r| r.timestamp = Some(Utc::now() - chrono::Duration::hours(2)),
        "timestamp_outside_window",
    );
    // A signature by another key.
    let p = SimulatedProvider::new(90_006, now);
    let mut reg = p.registration.clone();
    reg.provider_id = "bad-provider-6".into();
    let other = SimulatedProvider::new(90_007, now);
    out.push((signed_envelope(&reg, &other.key, &stream, "2000006-9"), "signature_mismatch"));
    // Someone else's wallet claiming the first provider's id.
    let thief = SimulatedProvider::new(90_008, now);
    let mut reg = thief.registration.clone();
    reg.provider_id = first.provider_id.clone();
    out.push((signed_envelope(&reg, &thief.key, &stream, "2000008-9"), "wallet_mismatch"));
    // Not JSON at all.
    out.push((
        StreamEnvelope {
            stream: stream.clone(),
            entry_id: "2000009-9".into(),
            data: "{not json".into(),
            signature: None,
            timestamp: None,
        },
        "malformed_json",
    ));
    out
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new(5));
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let replies = Arc::new(MemoryReplies::default());
    let streams = StreamNames::default();
    let policy = ValidationPolicy::default();

    let registration: Arc<dyn Handler> = Arc::new(registration_handler::RegistrationHandler(registration_handler::Context {
        store: store.clone(),
        bus: bus.clone(),
        replies: replies.clone(),
        policy,
        signatures: SignaturePolicy::Required,
    }));
    let issuer: Arc<dyn Handler> = Arc::new(join_token_issuer::JoinTokenIssuer(join_token_issuer::Context {
        store: store.clone(),
        cluster: cluster.clone(),
        replies: replies.clone(),
        token_ttl: chrono::Duration::hours(1),
        api_endpoint: None,
    }));
    let (stop, _) = broadcast::channel(1);
    let mut workers = vec![];
    for h in [registration, issuer] {
        let queue = QueueSpec::new(format!("worldland.{}", h.name()), h.bindings());
        bus.declare(&queue);
        workers.push(tokio::spawn(run_consumer(bus.clone(), queue, h, 16, stop.subscribe())));
    }

    // The agents' side: the bridge would forward each stream entry onto the bus like this.
    let now = Utc::now();
    let providers: Vec<SimulatedProvider> = (0..opts.providers)
        .map(|n| {
            let mut p = SimulatedProvider::new(n, now);
            // Every third provider mines on half of its GPUs when they are not rented.
            if n % 3 == 0 && p.registration.spec.total_gpus >= 2 {
                let gpus = p.registration.spec.total_gpus / 2;
                p.registration.mining_config = Some(worldland_core::messages::MiningConfig {
                    image: Some("miner:latest".into()),
                    gpu_count: gpus,
                    cpu_cores: None,
                    memory_mb: None,
                    wallet_address: None,
                });
            }
            p
        })
        .collect();
    let bad = providers.first().map(|p| bad_registrations(&streams, p)).unwrap_or_default();
    let progress = opts.show_progress.then(|| {
        let bar = indicatif::ProgressBar::new((providers.len() + bad.len()) as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} answered  {msg}").expect("template"));
        bar
    });
    let mut published_at = BTreeMap::new();
    for (n, p) in providers.iter().enumerate() {
        let env = p.envelope(&streams.registration(), &format!("{}-0", 1_000_000 + n));
        published_at.insert(p.provider_id.clone(), Utc::now());
        bus.publish(topics::REGISTRATION_RECEIVED, &env.message_id(), &serde_json::to_vec(&env)?)
            .await?;
    }
    // Every good provider answered (so stored) before the bad ones go out: the wallet thief must
    // meet an existing provider. Answers and dead letters are awaited as they happen.
    let expected_rejections = bad.len();
    let mut answers = replies.watch();
    let mut parked = bus.watch_dead_letters();
    let show = |answered: usize, rejected: usize| {
        if let Some(bar) = &progress {
            bar.set_position((answered + rejected.min(expected_rejections)) as u64);
            bar.set_message(format!("{rejected} rejected"));
        }
    };
    let answered = || providers.iter().filter(|p| !replies.answers_for(&p.provider_id).is_empty()).count();
    let waited = tokio::time::timeout(opts.timeout, async {
        while answered() < providers.len() {
            show(answered(), 0);
            if answers.changed().await.is_err() {
                break;
            }
        }
        for (env, _) in &bad {
            bus.publish(topics::REGISTRATION_RECEIVED, &env.message_id(), &serde_json::to_vec(env)?)
                .await?;
        }
        while bus.dead_letters().len() < expected_rejections {
            show(answered(), bus.dead_letters().len());
            if parked.changed().await.is_err() {
                break;
            }
        }
        show(answered(), bus.dead_letters().len());
        Ok::<_, anyhow::Error>(())
    })
    .await;
    if let Ok(result) = waited {
        result?;
    }
    if let Some(bar) = progress {
        bar.finish();
    }
    let _ = stop.send(());
    for w in workers {
        let _ = w.await;
    }

    let mut per_state = BTreeMap::new();
    let (mut to_pending, mut to_approved, mut opened) = (vec![], vec![], 0);
    let mut unanswered = vec![];
    for p in &providers {
        let rec = ProviderRecord::load(store.as_ref(), &p.provider_id).await?;
        let state = rec.as_ref().map(|r| r.state.to_string()).unwrap_or_else(|| "missing".into());
        *per_state.entry(state).or_insert(0) += 1;
        let answer = replies.answers_for(&p.provider_id).into_iter().find(|a| a.success);
        match (&rec, answer) {
            (Some(rec), Some(answer)) if rec.state == ProviderState::Approved => {
                if join_from_response(&answer, &p.enc_secret).is_ok() {
                    opened += 1;
                }
                let published = published_at[&p.provider_id];
                to_pending.push((rec.registered_at - published).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                if let Some(approved) = rec.approved_at {
                    to_approved.push((approved - rec.registered_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
            }
            _ => unanswered.push(p.provider_id.clone()),
        }
    }
    let lifecycle = if opts.lifecycle {
        Some(lifecycle(&providers, store.clone(), cluster.clone(), bus.clone(), replies.clone()).await?)
    } else {
        None
    };
    let mut per_reason = BTreeMap::new();
    for d in bus.dead_letters() {
        *per_reason.entry(d.reason).or_insert(0) += 1;
    }
    for (env, reason) in &bad {
        if !bus.dead_letters().iter().any(|d| d.reason == *reason) {
            unanswered.push(format!("{} (expected {reason})", env.entry_id));
        }
    }
    Ok(DemoSummary {
        backend: "embedded: in-memory store, in-process bus, SIMULATED cluster",
        providers: providers.len(),
        bad_registrations: bad.len(),
        providers_per_state: per_state,
        rejections_per_reason: per_reason,
        sealed_joins_opened: opened,
        unanswered,
        stage_times: BTreeMap::from([
            ("1 received → pending (validated, signed, stored)".to_string(), stage(to_pending)),
            (
                "2 pending → approved (token, answer sealed and sent)".to_string(),
                stage(to_approved),
            ),
        ]),
        lifecycle,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

const HEARTBEAT_EVERY_S: i64 = 30;
const SWEEP_EVERY_S: i64 = 15;
const STALE_AFTER_S: i64 = 120;

/// Drives the heartbeat recorder's and the sweeper's cores on a virtual clock: fifteen minutes in
/// about a second. Providers 0, 5, 10, … die at minute 7; every other one of those comes back at
/// minute 12. The steady-state window (minutes 1–7) includes one annotation refresh per node.
async fn lifecycle(
    providers: &[SimulatedProvider],
    store: Arc<MemoryStore>,
    cluster: Arc<SimulatedCluster>,
    bus: Arc<MemoryBus>,
    replies: Arc<MemoryReplies>,
) -> anyhow::Result<LifecycleSummary> {
    use chrono::Duration as D;
    use worldland_core::cluster::NodeInfo;
    use worldland_core::messages::Heartbeat;
    use worldland_core::signature::sign_personal;

    for p in providers {
        let spec = &p.registration.spec;
        cluster.add_node(NodeInfo {
            name: worldland_core::validation::node_name(&spec.hostname),
            resource_version: "1".into(),
            ready: true,
            cpu_millis: Some(i64::from(spec.cpu_cores) * 1000),
            memory_bytes: Some(spec.total_memory_mb as i64 * 1024 * 1024),
            gpus: Some(i64::from(spec.total_gpus)),
            ..Default::default()
        });
    }
    let recorder = heartbeat_recorder::Context {
        store: store.clone(),
        cluster: cluster.clone(),
        signatures: SignaturePolicy::Required,
        replay_window: D::minutes(5),
        annotate_interval: D::minutes(5),
    };
    let sweeper = staleness_sweeper::Context {
        store: store.clone(),
        cluster: cluster.clone(),
        bus: bus.clone(),
        replies: replies.clone(),
        stale_after: D::seconds(STALE_AFTER_S),
    };
    let alloc_ctx = allocator::Context::new(store.clone(), bus.clone(), replies.clone());
    let mut events = bus.subscribe(&QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS)).await?;
    let mut market = Market::default();
    let mut rng = Lcg(42);
    let mut open_jobs: Vec<(String, i64)> = vec![];
    let mut revenue_micros = 0i64;
    let (die_at, return_at, end_at) = (420, 720, 900);
    let dies = |n: usize| n.is_multiple_of(5);
    let returns = |n: usize| n.is_multiple_of(10);
    let silent = |n: usize, tick: i64| dies(n) && tick >= die_at && (tick < return_at || !returns(n));
    // Steady state for the write rate: after the joins (minute 1) until the first deaths; it
    // spans one annotation refresh (every 5 minutes) per node.
    let steady = (60, die_at);
    let start = Utc::now();
    let mut last_beat: BTreeMap<usize, chrono::DateTime<Utc>> = BTreeMap::new();
    let mut latencies = vec![];
    let (mut beats, mut writes_at_steady_start, mut writes_per_provider_minute) = (0u64, 0u64, 0.0);
    for tick in 0..=end_at {
        let now = start + D::seconds(tick);
        if tick == steady.0 {
            writes_at_steady_start = cluster.writes();
        }
        if tick == steady.1 && !providers.is_empty() {
            let minutes = (steady.1 - steady.0) as f64 / 60.0;
            writes_per_provider_minute = (cluster.writes() - writes_at_steady_start) as f64 / providers.len() as f64 / minutes;
        }
        if tick == return_at {
            // The outage is over: how long did detection take for each provider that died?
            for (n, p) in providers.iter().enumerate().filter(|(n, _)| dies(*n)) {
                let rec = ProviderRecord::load(store.as_ref(), &p.provider_id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("provider vanished"))?;
                if let (ProviderState::Offline, Some(off), Some(last)) = (rec.state, rec.offline_at, last_beat.get(&n)) {
                    latencies.push((off - *last).num_seconds() as f64);
                }
            }
        }
        for (n, p) in providers.iter().enumerate() {
            if (tick + n as i64) % HEARTBEAT_EVERY_S != 0 || silent(n, tick) {
                continue;
            }
            let hb = Heartbeat {
                provider_id: p.provider_id.clone(),
                node_name: worldland_core::validation::node_name(&p.registration.spec.hostname),
                status: "available".into(),
                gpu_usage: vec![0.0; p.registration.spec.total_gpus as usize],
                cpu_usage: 5.0,
                memory_usage: 20.0,
                active_jobs: 0,
                timestamp: now,
            };
            let data = serde_json::to_string(&hb)?;
            let env = StreamEnvelope {
                stream: "provider:heartbeat".into(),
                entry_id: format!("{}-{n}", now.timestamp_millis()),
                signature: Some(sign_personal(&p.key, data.as_bytes())),
                data,
                timestamp: None,
            };
            let _ = heartbeat_recorder::handle(&env, &recorder, now).await;
            last_beat.insert(n, now);
            beats += 1;
        }
        if tick % SWEEP_EVERY_S == 0 {
            staleness_sweeper::sweep_once(&sweeper, now).await?;
        }
        // Customers: from minute 2, a request every 5 s; some jobs are released early, the rest
        // run out their duration (the sweeper closes them).
        if tick >= 120 && tick % 5 == 0 && !providers.is_empty() {
            let n = market.jobs_requested;
            market.jobs_requested += 1;
            let models = [
                "NVIDIA GeForce RTX 4090",
                "NVIDIA A100-SXM4-80GB",
                "Tesla T4",
                "NVIDIA H100 80GB HBM3",
            ];
            let req = worldland_core::messages::jobs::AllocateRequest {
                job_id: format!("demo-job-{n:05}"),
                customer_id: format!("customer-{}", rng.next(7)),
                gpu_model: (rng.next(3) > 0).then(|| models[rng.next(models.len() as u64) as usize].to_string()),
                gpus: 1 + rng.next(4) as u32,
                cpu_cores: 1 + rng.next(8) as u32,
                memory_mb: 1024 * (1 + rng.next(16)),
                max_price_per_gpu_hour: (rng.next(6) == 0).then_some(0.3),
                duration_s: Some(120 + rng.next(360)),
            };
            let _ = allocator::allocate(&req, &alloc_ctx, now).await;
            if rng.next(3) == 0 {
                open_jobs.push((req.job_id.clone(), tick + 30 + rng.next(90) as i64));
            }
        }
        let (due, rest): (Vec<_>, Vec<_>) = open_jobs.drain(..).partition(|(_, at)| *at <= tick);
        open_jobs = rest;
        for (job_id, _) in due {
            let r = worldland_core::messages::jobs::ReleaseRequest {
                job_id,
                reason: "customer released".into(),
            };
            let _ = allocator::release(&r, &alloc_ctx, now).await;
        }
        if tick % 60 == 0 {
            let (used, mining) = fleet_shares(&store).await?;
            market.utilisation_per_minute.push(used);
            market.mining_share_per_minute.push(mining);
        }
    }
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
                revenue_micros += v["cost_micros"].as_i64().unwrap_or(0);
            }
            _ => {}
        }
        d.ack().await?;
    }
    market.revenue_wl = revenue_micros as f64 / 1e6;
    for p in providers {
        for c in replies.commands_for(&p.provider_id) {
            match c.kind.as_str() {
                worldland_core::messages::jobs::MINING_STOP => market.mining_stops += 1,
                _ => market.mining_resumes += 1,
            }
        }
    }
    market.audit_violations = worldland_core::jobs::audit(store.as_ref()).await?;
    let mut per_state = BTreeMap::new();
    let mut back_available = 0;
    for (n, p) in providers.iter().enumerate() {
        let rec = ProviderRecord::load(store.as_ref(), &p.provider_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("provider vanished"))?;
        *per_state.entry(rec.state.to_string()).or_insert(0) += 1;
        if returns(n) && rec.state == ProviderState::Available {
            back_available += 1;
        }
    }
    Ok(LifecycleSummary {
        virtual_minutes: end_at / 60,
        heartbeats: beats,
        providers_per_state: per_state,
        died: (0..providers.len()).filter(|n| dies(*n)).count(),
        detected_offline: latencies.len(),
        came_back: (0..providers.len()).filter(|n| returns(*n)).count(),
        back_available,
        offline_detection_latency_s: seconds(latencies),
        detection_bound_s: STALE_AFTER_S + SWEEP_EVERY_S,
        kubernetes_writes_per_provider_minute: writes_per_provider_minute,
        market,
    })
}

pub fn print_table(s: &DemoSummary) {
    println!("\nWorldLand demo — {}", s.backend);
    println!(
        "{} providers, {} bad registrations, {:.0} ms\n",
        s.providers, s.bad_registrations, s.elapsed_ms
    );
    println!("{:<28} {:>8}", "providers per state", "count");
    for (state, n) in &s.providers_per_state {
        println!("  {state:<26} {n:>8}");
    }
    println!("\n{:<28} {:>8}", "rejections per reason", "count");
    for (reason, n) in &s.rejections_per_reason {
        println!("  {reason:<26} {n:>8}");
    }
    println!(
        "\nsealed join commands opened by their provider: {}/{}",
        s.sealed_joins_opened, s.providers
    );
    println!("\n{:<56} {:>9} {:>9} {:>9}", "stage", "median ms", "p95 ms", "max ms");
    for (name, t) in &s.stage_times {
        println!("  {name:<54} {:>9.2} {:>9.2} {:>9.2}", t.median_ms, t.p95_ms, t.max_ms);
    }
    if let Some(l) = &s.lifecycle {
        println!(
            "\nLifecycle, {} virtual minutes on a virtual clock ({} heartbeats)",
            l.virtual_minutes, l.heartbeats
        );
        println!("{:<28} {:>8}", "providers per state", "count");
        for (state, n) in &l.providers_per_state {
            println!("  {state:<26} {n:>8}");
        }
        println!(
            "  died at minute 7: {}, detected offline: {}, came back at minute 12: {}, available again: {}",
            l.died, l.detected_offline, l.came_back, l.back_available
        );
        let t = &l.offline_detection_latency_s;
        println!(
            "  offline-detection latency: median {:.0} s, max {:.0} s (bound: threshold + one sweep = {} s)",
            t.median, t.max, l.detection_bound_s
        );
        println!(
            "  Kubernetes writes per provider per minute (steady state): {:.3}",
            l.kubernetes_writes_per_provider_minute
        );
        let m = &l.market;
        println!(
            "\nCustomers, from minute 2: {} jobs requested, {} allocated",
            m.jobs_requested, m.jobs_allocated
        );
        println!("  rejected per reason: {:?}", m.rejected_per_reason);
        println!("  closed per reason:   {:?}", m.jobs_closed_per_reason);
        let pct = |v: &[f64]| v.iter().map(|x| format!("{:.0}%", x * 100.0)).collect::<Vec<_>>().join(" ");
        println!("  GPU utilisation per minute: {}", pct(&m.utilisation_per_minute));
        println!("  mining share per minute:    {}", pct(&m.mining_share_per_minute));
        println!(
            "  rentals that took GPUs from mining: {}, mining resumed: {}",
            m.mining_stops, m.mining_resumes
        );
        println!("  revenue: {:.6} WL", m.revenue_wl);
        if m.audit_violations.is_empty() {
            println!("  audit: clean");
        } else {
            println!("  AUDIT VIOLATIONS: {:#?}", m.audit_violations);
        }
    }
    if !s.unanswered.is_empty() {
        println!("\nNEITHER APPROVED NOR REJECTED: {:?}", s.unanswered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_approves_every_provider_and_rejects_each_bad_one_with_its_reason() {
        let s = run(DemoOptions {
            providers: 12,
            lifecycle: true,
            show_progress: false,
            timeout: Duration::from_secs(30),
        })
        .await
        .unwrap();
        assert!(s.ok(), "{s:?}");
        assert_eq!(s.providers_per_state.get("approved"), Some(&12));
        assert_eq!(s.rejections_per_reason.values().sum::<usize>(), s.bad_registrations);
        for reason in [
            "invalid_hostname",
            "non_public_ip",
            "price_above_ceiling",
            "gpu_count_mismatch",
            "timestamp_outside_window",
            "signature_mismatch",
            "wallet_mismatch",
            "malformed_json",
        ] {
            assert_eq!(s.rejections_per_reason.get(reason), Some(&1), "{reason}: {s:?}");
        }
        let l = s.lifecycle.unwrap();
        assert_eq!((l.died, l.detected_offline, l.came_back, l.back_available), (3, 3, 2, 2));
        assert!(
            l.offline_detection_latency_s.max <= 135.0 && l.offline_detection_latency_s.median > 120.0,
            "{l:?}"
        );
        assert_eq!(l.providers_per_state.get("available"), Some(&11));
        assert_eq!(l.providers_per_state.get("offline"), Some(&1));
        // One annotation refresh per node in six minutes, nothing else.
        assert!(
            l.kubernetes_writes_per_provider_minute > 0.1 && l.kubernetes_writes_per_provider_minute < 0.25,
            "{l:?}"
        );
    }
}
