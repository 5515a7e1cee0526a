//! `worldland demo`: the whole registration path in one process on the embedded default —
//! in-memory store, in-process bus, simulated cluster — with simulated providers that use real
//! signatures and sealed join commands, plus a few bad registrations. Then, unless skipped, the
//! lifecycle phase on a virtual clock (see [`lifecycle`]).

mod lifecycle;
mod plane;
mod table;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use serde::Serialize;
use worldland_core::messages::StreamEnvelope;
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::simulated::{signed_envelope, SimulatedProvider};

use lifecycle::LifecycleSummary;
use plane::Plane;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 50)]
    providers: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Skip the lifecycle phase (heartbeats, offline, recovery).
    #[arg(long)]
    no_lifecycle: bool,
}

/// Runs the demo and prints its summary (a table, or JSON with `--json`); exits 1 unless every
/// check passed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // Logs go to stderr; by default only warnings (the simulated-cluster notice and each
    // refusal with its reason), so the table stays readable.
    super::init_logging_unless_set(if args.json { "error" } else { "warn" });
    let summary = demo(DemoOptions {
        providers: args.providers,
        lifecycle: !args.no_lifecycle,
        show_progress: !args.json,
        timeout: Duration::from_secs(args.timeout_s),
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        table::print_table(&summary);
    }
    if !summary.ok() {
        std::process::exit(1);
    }
    Ok(())
}

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
    /// Approved providers whose answer verified under the pinned broker key, whose sealed join
    /// opened with their own key and whose kubeadm argv was built from valid fields.
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
            received_at_ms: None,
        },
        "malformed_json",
    ));
    out
}

/// `n` simulated providers; every third one mines on half of its GPUs when they are not rented.
fn simulated_fleet(n: usize, now: DateTime<Utc>) -> Vec<SimulatedProvider> {
    (0..n)
        .map(|n| {
            let mut p = SimulatedProvider::new(n, now);
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
        .collect()
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} answered  {msg}").expect("template"));
    bar
}

/// The registration phase's results for the good providers.
#[derive(Default)]
pub(super) struct Registrations {
    per_state: BTreeMap<String, usize>,
    /// Milliseconds from publish to stored as pending, per approved provider.
    to_pending: Vec<f64>,
    /// Milliseconds from pending to approved, per approved provider.
    to_approved: Vec<f64>,
    /// Sealed join commands opened with the provider's own key.
    opened: usize,
    unanswered: Vec<String>,
}

/// The registration phase, then (with `opts.lifecycle`) the lifecycle phase, summarised.
pub async fn demo(opts: DemoOptions) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let mut plane = Plane::start().await?;
    let streams = StreamNames::default();
    let providers = simulated_fleet(opts.providers, Utc::now());
    let bad = providers.first().map(|p| bad_registrations(&streams, p)).unwrap_or_default();
    let progress = opts.show_progress.then(|| progress_bar(providers.len() + bad.len()));
    let published_at = plane.publish_registrations(&providers, &streams).await?;
    plane.await_answers(&providers, &bad, progress.as_ref(), opts.timeout).await?;
    if let Some(bar) = progress {
        bar.finish();
    }
    plane.stop_workers().await;

    let mut reg = plane.registration_results(&providers, &published_at).await?;
    let lifecycle = if opts.lifecycle {
        Some(
            lifecycle::lifecycle(
                &providers,
                plane.store.clone(),
                plane.cluster.clone(),
                plane.bus.clone(),
                plane.replies.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    let per_reason = plane.rejections(&bad, &mut reg.unanswered);
    Ok(DemoSummary {
        backend: "embedded: in-memory store, in-process bus, SIMULATED cluster",
        providers: providers.len(),
        bad_registrations: bad.len(),
        providers_per_state: reg.per_state,
        rejections_per_reason: per_reason,
        sealed_joins_opened: reg.opened,
        unanswered: reg.unanswered,
        stage_times: BTreeMap::from([
            (
                "1 received → pending (validated, signed, stored)".to_string(),
                stage(reg.to_pending),
            ),
            (
                "2 pending → approved (token, answer sealed and sent)".to_string(),
                stage(reg.to_approved),
            ),
        ]),
        lifecycle,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_approves_every_provider_and_rejects_each_bad_one_with_its_reason() {
        let s = demo(DemoOptions {
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
