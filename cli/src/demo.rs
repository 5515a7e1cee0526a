//! `worldland demo`: the whole registration path in one process on the embedded default —
//! in-memory store, in-process bus, simulated cluster — with simulated providers that use real
//! signatures and sealed join commands, plus a few bad registrations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::broadcast;
use worldland_provider_sdk::client::join_from_response;
use worldland_provider_sdk::simulated::{signed_envelope, SimulatedProvider};
use worldland_shared::bus::memory::MemoryBus;
use worldland_shared::bus::{Bus, QueueSpec};
use worldland_shared::cluster::simulated::SimulatedCluster;
use worldland_shared::messages::{topics, ProviderState, StreamEnvelope};
use worldland_shared::replies::MemoryReplies;
use worldland_shared::signature::SignaturePolicy;
use worldland_shared::state::memory::MemoryStore;
use worldland_shared::state::providers::ProviderRecord;
use worldland_shared::state::{ItemStore, Table};
use worldland_shared::streams::StreamNames;
use worldland_shared::validation::ValidationPolicy;
use worldland_shared::worker::{run_consumer, Handler};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub providers: usize,
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
    pub elapsed_ms: f64,
}

impl DemoSummary {
    pub fn ok(&self) -> bool {
        self.unanswered.is_empty() && self.sealed_joins_opened == self.providers
    }
}

fn stage(mut v: Vec<f64>) -> StageTimes {
    if v.is_empty() {
        return StageTimes { median_ms: 0.0, p95_ms: 0.0, max_ms: 0.0 };
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    StageTimes { median_ms: at(0.5), p95_ms: at(0.95), max_ms: at(1.0) }
}

/// Hostile and broken registrations, each with the reason the broker must give.
fn bad_registrations(streams: &StreamNames, first: &SimulatedProvider) -> Vec<(StreamEnvelope, &'static str)> {
    let now = Utc::now();
    let stream = streams.registration();
    let mut out = vec![];
    let mut add = |n: usize, f: &dyn Fn(&mut worldland_shared::messages::Registration), reason: &'static str| {
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
    add(5, &|r| r.timestamp = Some(Utc::now() - chrono::Duration::hours(2)), "timestamp_outside_window");
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
    out.push((StreamEnvelope { stream: stream.clone(), entry_id: "2000009-9".into(), data: "{not json".into(), signature: None, timestamp: None }, "malformed_json"));
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
    let providers: Vec<SimulatedProvider> = (0..opts.providers).map(|n| SimulatedProvider::new(n, now)).collect();
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
        bus.publish(topics::REGISTRATION_RECEIVED, &env.message_id(), &serde_json::to_vec(&env)?).await?;
    }
    // Bad ones go after the good ones, so the wallet thief meets an existing provider.
    let expected_rejections = bad.len();
    let deadline = Instant::now() + opts.timeout;
    while store.scan(Table::Providers).await?.len() < providers.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (env, _) in &bad {
        bus.publish(topics::REGISTRATION_RECEIVED, &env.message_id(), &serde_json::to_vec(env)?).await?;
    }

    // Wait until every good provider has an answer and every bad one is dead-lettered.
    loop {
        let answered = providers.iter().filter(|p| !replies.answers_for(&p.provider_id).is_empty()).count();
        let rejected = bus.dead_letters().len();
        if let Some(bar) = &progress {
            bar.set_position((answered + rejected.min(expected_rejections)) as u64);
            bar.set_message(format!("{rejected} rejected"));
        }
        if (answered == providers.len() && rejected >= expected_rejections) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
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
            ("2 pending → approved (token, answer sealed and sent)".to_string(), stage(to_approved)),
        ]),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

pub fn print_table(s: &DemoSummary) {
    println!("\nWorldLand demo — {}", s.backend);
    println!("{} providers, {} bad registrations, {:.0} ms\n", s.providers, s.bad_registrations, s.elapsed_ms);
    println!("{:<28} {:>8}", "providers per state", "count");
    for (state, n) in &s.providers_per_state {
        println!("  {state:<26} {n:>8}");
    }
    println!("\n{:<28} {:>8}", "rejections per reason", "count");
    for (reason, n) in &s.rejections_per_reason {
        println!("  {reason:<26} {n:>8}");
    }
    println!("\nsealed join commands opened by their provider: {}/{}", s.sealed_joins_opened, s.providers);
    println!("\n{:<56} {:>9} {:>9} {:>9}", "stage", "median ms", "p95 ms", "max ms");
    for (name, t) in &s.stage_times {
        println!("  {name:<54} {:>9.2} {:>9.2} {:>9.2}", t.median_ms, t.p95_ms, t.max_ms);
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
        let s = run(DemoOptions { providers: 12, show_progress: false, timeout: Duration::from_secs(30) }).await.unwrap();
        assert!(s.ok(), "{s:?}");
        assert_eq!(s.providers_per_state.get("approved"), Some(&12));
        assert_eq!(s.rejections_per_reason.values().sum::<usize>(), s.bad_registrations);
        for reason in ["invalid_hostname", "non_public_ip", "price_above_ceiling", "gpu_count_mismatch", "timestamp_outside_window", "signature_mismatch", "wallet_mismatch", "malformed_json"] {
            assert_eq!(s.rejections_per_reason.get(reason), Some(&1), "{reason}: {s:?}");
        }
    }
}
