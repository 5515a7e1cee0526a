//! Staleness sweeper: on a schedule, finds joined/available providers whose last heartbeat is
//! older than the threshold — through the state index, never a table scan — and marks each
//! offline with a conditional write that still requires staleness at write time (a heartbeat
//! landing in between wins). Offline nodes get `worldland.io/status=offline` and the
//! `worldland.io/offline:NoSchedule` taint. Approved providers whose token ran out without a join
//! become `expired`. Several sweepers may run at once: only one write per provider succeeds, and
//! only its writer touches the node.
//!
//! A stall guard stands between the index and the offline writes: when more than a configured
//! share of the joined/available fleet would go offline in one sweep, or no heartbeat at all
//! arrived for a whole stale period, the heartbeat pipeline is stalled (bridge stuck, Redis or the
//! bus down), not the fleet: the sweep marks nobody, interrupts nothing, logs it and raises
//! `worldland_sweeper_guard_active`. Approvals and jobs still expire. Node marks follow the stored
//! state: after marking a node the sweeper re-reads its provider and undoes the marks if it came
//! back, and a slow reconcile pass repairs any node whose marks disagree with its provider.
//!
//! Heartbeats prove the agent runs, not the node: a node-health pass ([`node_health`]) also marks
//! offline a provider whose node has been NotReady, or whose kubelet stopped renewing its Lease,
//! for longer than the threshold, under a guard of its own.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::broadcast;
use worldland_core::bus::{self, Bus, Message};
use worldland_core::cluster::Cluster;
use worldland_core::job::{close_job, close_job_on, Closed};
use worldland_core::job::{EndReason, JobState};
use worldland_core::ledger::Ledger;
use worldland_core::messages::jobs::{JobReleased, MiningCommand};
use worldland_core::messages::ProviderState;
use worldland_core::provider::{expire_if_unjoined, mark_offline_if_stale, ProviderRecord};
use worldland_core::replies::ProviderReplies;
use worldland_core::state::ms;
use worldland_core::state::{ItemStore, StoreResult, Table, Value, INDEX_SORT_ATTR, KEY_ATTR};
use worldland_core::BoxError;
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::{Service, Worker};
use worldland_runtime::Backends;
mod marks;
pub mod node_health;
pub mod pending_jobs;
mod stall;

pub use marks::*;
pub use node_health::{NodeHealthPass, NodeHealthReport};
pub use stall::*;

pub const WORKER: &str = "staleness-sweeper";

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub cluster: Arc<dyn Cluster>,
    /// Where `job.released` goes for jobs the sweeper closes.
    pub bus: Arc<dyn Bus>,
    /// Where `mining.resume` goes when a closed job had taken mining GPUs.
    pub replies: Arc<dyn ProviderReplies>,
    /// A provider whose last heartbeat is older than this is offline.
    pub stale_after: Duration,
    /// When a sweep would take too much of the fleet offline at once (a pipeline stall), it
    /// marks nobody.
    pub guard: StallGuard,
    /// The guard's fleet size (see [`FleetCount`]).
    pub fleet: FleetCount,
    /// The node-health pass: its clock allowance, and where the next sweep's window starts.
    pub node_health: NodeHealthPass,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Items the index queries returned.
    pub examined: usize,
    pub marked_offline: usize,
    pub expired: usize,
    /// Jobs closed: run out of `duration_s`, or interrupted by their provider going offline.
    pub jobs_closed: usize,
    /// The stall guard held: nobody was marked offline this sweep.
    pub guard_held: bool,
    /// The node-health pass (providers whose node is NotReady or whose kubelet stopped).
    pub node_health: NodeHealthReport,
}

/// Closes a job and tells whoever needs to know. Failures are logged: the job stays open and
/// the next sweep (or a `job.release`) closes it.
async fn close_and_announce(ctx: &Context, job_id: &str, reason: &str, ended_at: DateTime<Utc>) -> bool {
    announce(ctx, job_id, close_job(ctx.store.as_ref(), job_id, reason, ended_at).await).await
}

/// Closes a job found in `provider_id`'s ledger through that provider only (an orphan entry for
/// a job allocated elsewhere or settled is given back instead, the job left alone), and tells
/// whoever needs to know.
pub(crate) async fn close_on_and_announce(ctx: &Context, provider_id: &str, job_id: &str, reason: &str, ended_at: DateTime<Utc>) -> bool {
    announce(
        ctx,
        job_id,
        close_job_on(ctx.store.as_ref(), provider_id, job_id, reason, ended_at).await,
    )
    .await
}

async fn announce(ctx: &Context, job_id: &str, closing: StoreResult<Option<Closed>>) -> bool {
    match closing {
        Ok(Some(closed)) => {
            send_answers(ctx, job_id, &closed.released, closed.resume.as_ref()).await;
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "job not closed, or its close's answer lost");
            answer_if_closed(ctx, job_id).await
        }
    }
}

/// A close that reported an error may have applied (its answer lost, every retry too): read the
/// job back and, if it is released and unanswered, send what the close owed. Nothing else would:
/// the next sweep no longer finds it among the allocated.
async fn answer_if_closed(ctx: &Context, job_id: &str) -> bool {
    let item = match ctx.store.get(Table::Jobs, job_id).await {
        Ok(Some(item)) => item,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "job not read back after a failed close; a job.release answers it");
            return false;
        }
    };
    let Some(released) = worldland_core::job::release_owed(job_id, &item) else {
        return false;
    };
    let resume = worldland_core::job::resume_owed(job_id, &item).map(|(_, cmd)| cmd);
    send_answers(ctx, job_id, &released, resume.as_ref()).await;
    true
}

/// `mining.resume` (when the job took mining GPUs) and `job.released`, then the job marked
/// answered: a later `job.release` of it answers nothing again. Anything not sent leaves the job
/// unanswered on the released index, for the next sweep ([`answer_unanswered_closes`]). Sent
/// again, each carries the same id (`job.released/<job>`, `<job>/resume`): at least once.
async fn send_answers(ctx: &Context, job_id: &str, released: &JobReleased, resume: Option<&MiningCommand>) {
    if let Some(resume) = resume {
        if let Err(e) = ctx.replies.command(&released.provider_id, resume).await {
            tracing::warn!(job_id, error = %e, "mining.resume not sent; the next sweep sends it");
            return;
        }
    }
    let id = format!("{}/{job_id}", JobReleased::ROUTING_KEY);
    if let Err(e) = bus::publish(ctx.bus.as_ref(), &id, released).await {
        tracing::warn!(job_id, error = %e, "job.released not published; the next sweep publishes it");
        return;
    }
    if let Err(e) = worldland_core::job::release_answered().apply(ctx.store.as_ref(), job_id).await {
        tracing::warn!(job_id, error = %e, "job.released not marked answered; the next sweep sends it again");
    }
}

/// A close that ended less than this ago (by its end time: a customer's release ends now) is
/// left to its closer to answer; older unanswered ones are answered by the sweep.
const ANSWER_GRACE_MS: i64 = 30_000;

/// Closes whose answers went missing (a close applied but its answer lost with every retry, a
/// read-back that failed in the same outage, a publish that failed): they stay on the released
/// index until answered. Each sweep answers those older than [`ANSWER_GRACE_MS`].
pub async fn answer_unanswered_closes(ctx: &Context, now: DateTime<Utc>) -> StoreResult<usize> {
    let unanswered = ctx
        .store
        .query_by_state(Table::Jobs, JobState::Released.as_str(), Some(ms(now) - ANSWER_GRACE_MS))
        .await?;
    let mut answered = 0;
    for item in unanswered {
        if let Some(id) = item.get(KEY_ATTR).and_then(Value::as_str) {
            if answer_if_closed(ctx, id).await {
                answered += 1;
            }
        }
    }
    Ok(answered)
}

/// Marks one stale provider offline (if it still is stale at write time), interrupts its jobs
/// and marks its node; whether this call made the change.
async fn mark_one_offline(
    ctx: &Context,
    id: &str,
    stale_before: DateTime<Utc>,
    now: DateTime<Utc>,
    report: &mut SweepReport,
) -> StoreResult<bool> {
    let Some(marked) = mark_offline_if_stale(stale_before, now).run(ctx.store.as_ref(), id).await? else {
        return Ok(false); // a heartbeat landed in between, or another sweeper was first
    };
    tracing::info!(provider_id = %marked.provider_id, last_heartbeat = ?marked.last_heartbeat, "provider offline");
    // Billed to the broker's receive time of its last heartbeat, never the agent's word.
    after_offline(ctx, &marked, marked.hb_at.min(now), report).await;
    Ok(true)
}

/// What follows this sweeper's offline write of a provider (`marked`, as written): its jobs are
/// interrupted, billed up to `ended`, resources returned; its node is marked; and the marks are
/// checked against the state again.
pub(crate) async fn after_offline(ctx: &Context, marked: &ProviderRecord, ended: DateTime<Utc>, report: &mut SweepReport) {
    if let Ok(Some(item)) = ctx.store.get(Table::Providers, &marked.provider_id).await {
        let jobs: Vec<String> = Ledger::from_item(&item).map(|l| l.allocs.into_keys().collect()).unwrap_or_default();
        for job_id in jobs {
            if close_on_and_announce(ctx, &marked.provider_id, &job_id, EndReason::Interrupted.as_str(), ended).await {
                report.jobs_closed += 1;
            }
        }
    }
    if let Err(e) = mark_node_offline(ctx.cluster.as_ref(), &marked.node_name).await {
        tracing::warn!(provider_id = %marked.provider_id, error = %e, "offline marks not written to the node");
    }
    // A heartbeat may have brought it back while the marks were written, its recovery finding no
    // marks to remove: read the state again and follow it.
    if let Err(e) = recheck_after_marking(ctx, &marked.provider_id).await {
        tracing::warn!(provider_id = %marked.provider_id, error = %e, "node marks not checked against the state; the reconcile pass will");
    }
}

pub async fn sweep_once(ctx: &Context, now: DateTime<Utc>) -> StoreResult<SweepReport> {
    let mut report = SweepReport::default();
    let stale_before = now - ctx.stale_after;
    // The stale ones, read once through the index: the guard counts them, the sweep marks them.
    let mut stale = vec![];
    for state in LIVE {
        stale.extend(
            ctx.store
                .query_by_state(Table::Providers, state.as_str(), Some(ms(stale_before)))
                .await?,
        );
    }
    report.examined += stale.len();
    let mut fleet = ctx.fleet.get(ctx.store.as_ref(), now, stale.len()).await?;
    let newest = newest_live_heartbeat(ctx.store.as_ref()).await?;
    // A reused count is good enough far from the guard's share; near it (more than half the
    // share stale), the decision is made on a fresh count: a fleet that shrank since the count
    // must not let a stall through.
    if stale.len() as f64 > ctx.guard.share / 2.0 * fleet as f64 {
        fleet = ctx.fleet.recount(ctx.store.as_ref(), now).await?;
    }
    let held = stall_decision(ctx.guard, fleet, stale.len(), newest, ms(stale_before));
    worldland_runtime::metrics::sweeper_guard_active(held.is_some());
    if let Some(why) = held {
        report.guard_held = true;
        tracing::warn!(
            ?why,
            "stall guard holds: nobody marked offline this sweep (heartbeat pipeline stalled?)"
        );
        stale.clear();
    }
    for item in stale {
        let Some(id) = item.get(KEY_ATTR).and_then(Value::as_str) else {
            continue;
        };
        if mark_one_offline(ctx, id, stale_before, now, &mut report).await? {
            report.marked_offline += 1;
        }
    }
    pending_jobs::resolve_stale_pending(ctx, now).await?;
    answer_unanswered_closes(ctx, now).await?;
    // While approved, the index sort key is the token's expiry.
    let expired = ctx
        .store
        .query_by_state(Table::Providers, ProviderState::Approved.as_str(), Some(ms(now) + 1))
        .await?;
    report.examined += expired.len();
    for item in expired {
        let Some(id) = item.get(KEY_ATTR).and_then(Value::as_str) else {
            continue;
        };
        if let Some(rec) = expire_if_unjoined(now).run(ctx.store.as_ref(), id).await? {
            report.expired += 1;
            tracing::info!(provider_id = %rec.provider_id, "approval expired without a join");
            if let Some(id) = &rec.token_id {
                if let Err(e) = ctx.cluster.delete_bootstrap_token(id).await {
                    tracing::warn!(provider_id = %rec.provider_id, error = %e, "expired token not deleted");
                }
            }
        }
    }
    // Jobs whose duration ran out; while allocated, a job's index sort key is its due time.
    let due = ctx
        .store
        .query_by_state(Table::Jobs, JobState::Allocated.as_str(), Some(ms(now) + 1))
        .await?;
    report.examined += due.len();
    for item in due {
        let (Some(id), Some(at)) = (
            item.get(KEY_ATTR).and_then(Value::as_str),
            item.get(INDEX_SORT_ATTR).and_then(Value::as_i64),
        ) else {
            continue;
        };
        let ended = chrono::TimeZone::timestamp_millis_opt(&Utc, at).single().unwrap_or(now);
        if close_and_announce(ctx, id, EndReason::Expired.as_str(), ended).await {
            report.jobs_closed += 1;
        }
    }
    // Last: it reads the cluster (pages of Nodes and their Leases), the slowest part, which must
    // not keep approvals and jobs from expiring on a slow API server.
    node_health::sweep_node_health(ctx, now, &mut report).await?;
    Ok(report)
}

/// Sweeps every `interval` until `shutdown` fires. `clock` gives "now" (tests pass tokio's
/// paused clock).
pub async fn run(
    ctx: Arc<Context>,
    interval: std::time::Duration,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reconciler = Reconciler::default();
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = ticker.tick() => {
                match sweep_once(&ctx, clock()).await {
                    Ok(r) if r.marked_offline + r.node_health.marked_offline + r.expired > 0 => tracing::info!(?r, "sweep"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweep failed; next tick tries again"),
                }
                reconciler.after_sweep(&ctx).await;
            }
        }
    }
    tracing::info!("sweeper stopped");
}

/// The sweeper's context from the process's backends: the one wiring its container, its Lambda,
/// `worldland up` and the demo share (clients made once per process).
pub async fn context(b: &Backends) -> Result<Context, BackendError> {
    let cfg = b.config();
    Ok(Context {
        store: b.store().await?,
        cluster: b.cluster().await?,
        bus: b.bus(),
        replies: b.replies().await?,
        stale_after: Duration::seconds(cfg.stale_after_s),
        guard: StallGuard::from_config(cfg),
        fleet: Default::default(),
        node_health: NodeHealthPass::new(Duration::seconds(cfg.replay_window_s)),
    })
}

/// The sweeper as a worker: a loop on its interval in a container, one sweep per scheduled event
/// on Lambda.
pub struct StalenessSweeper {
    pub ctx: Arc<Context>,
    pub interval: std::time::Duration,
    /// Reconcile passes between scheduled sweeps (a warm Lambda keeps it).
    pub reconciler: Reconciler,
}

#[async_trait::async_trait]
impl Service for StalenessSweeper {
    fn name(&self) -> &'static str {
        WORKER
    }
    async fn run(&self, shutdown: broadcast::Receiver<()>) -> Result<(), BoxError> {
        run(self.ctx.clone(), self.interval, Arc::new(Utc::now), shutdown).await;
        Ok(())
    }
    async fn run_once(&self, now: DateTime<Utc>) -> Option<Result<serde_json::Value, BoxError>> {
        let swept = sweep_once(&self.ctx, now).await;
        self.reconciler.after_sweep(&self.ctx).await;
        Some(swept.map_err(BoxError::from).map(|r| {
            serde_json::json!({
                "examined": r.examined, "marked_offline": r.marked_offline, "expired": r.expired, "jobs_closed": r.jobs_closed,
                "guard_held": r.guard_held, "nodes_read": r.node_health.read,
                "marked_offline_for_node": r.node_health.marked_offline, "node_guard_held": r.node_health.guard_held
            })
        }))
    }
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::Service(Arc::new(StalenessSweeper {
        ctx: Arc::new(context(&b).await?),
        interval: std::time::Duration::from_secs(b.config().sweep_interval_s),
        reconciler: Reconciler::default(),
    })))
}
