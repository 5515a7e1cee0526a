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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::broadcast;
use worldland_core::bus::{self, Bus, Message};
use worldland_core::cluster::Cluster;
use worldland_core::job::close_job;
use worldland_core::job::{EndReason, JobState};
use worldland_core::labels;
use worldland_core::ledger::Ledger;
use worldland_core::messages::jobs::JobReleased;
use worldland_core::messages::ProviderState;
use worldland_core::provider::{expire_if_unjoined, mark_offline_if_stale, ProviderRecord};
use worldland_core::replies::ProviderReplies;
use worldland_core::state::ms;
use worldland_core::state::{ItemStore, StoreResult, Table, Value, INDEX_SORT_ATTR, KEY_ATTR};
use worldland_core::BoxError;
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::{Service, Worker};
use worldland_runtime::{Backends, Config};
pub mod pending_jobs;

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
}

/// The stall guard's settings (`WORLDLAND_STALL_GUARD_SHARE`, `WORLDLAND_STALL_GUARD_MIN`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallGuard {
    /// The guard holds when more than this share of the joined/available fleet is stale at once;
    /// 1 turns this trigger off.
    pub share: f64,
    /// ... and at least this many are; with no heartbeat for a whole stale period, the guard
    /// holds when the fleet is at least this large.
    pub min: usize,
}

impl Default for StallGuard {
    fn default() -> Self {
        Self { share: 0.5, min: 5 }
    }
}

impl StallGuard {
    /// The guard as configured.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            share: cfg.stall_guard_share,
            min: cfg.stall_guard_min,
        }
    }
}

/// Why the stall guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// No joined/available provider heartbeated within the stale period.
    Silence {
        /// Joined and available providers.
        fleet: usize,
    },
    /// Too many would go offline at once.
    Share {
        /// Joined and available providers.
        fleet: usize,
        /// Those of them that are stale.
        stale: usize,
    },
}

/// Whether the guard holds, from the size of the joined/available fleet, how many of them are
/// stale, and the newest heartbeat among them (ms). Pure: the sweep supplies what it read.
pub fn stall_decision(guard: StallGuard, fleet: usize, stale: usize, newest: Option<i64>, stale_before_ms: i64) -> Option<Stall> {
    if fleet == 0 || fleet < guard.min {
        return None;
    }
    if newest.is_some_and(|n| n < stale_before_ms) {
        return Some(Stall::Silence { fleet });
    }
    if stale >= guard.min && stale as f64 > guard.share * fleet as f64 {
        return Some(Stall::Share { fleet, stale });
    }
    None
}

const LIVE: [ProviderState; 2] = [ProviderState::Joined, ProviderState::Available];

/// The newest heartbeat of the joined/available fleet: one index item per state.
async fn newest_live_heartbeat(store: &dyn ItemStore) -> StoreResult<Option<i64>> {
    let mut newest = None;
    for state in LIVE {
        newest = newest.max(store.newest_in_state(Table::Providers, state.as_str()).await?);
    }
    Ok(newest)
}

/// Joined and available providers, counted through the index (every index item is read).
pub async fn count_fleet(store: &dyn ItemStore) -> StoreResult<usize> {
    let mut fleet = 0;
    for state in LIVE {
        fleet += store.count_by_state(Table::Providers, state.as_str(), None).await?;
    }
    Ok(fleet)
}

/// Whether the guard holds for a sweep whose stale threshold is `stale_before`, counting
/// everything now (the sweep itself reuses its stale items and a cached fleet size).
pub async fn stall(store: &dyn ItemStore, guard: StallGuard, stale_before: DateTime<Utc>) -> StoreResult<Option<Stall>> {
    let fleet = count_fleet(store).await?;
    let mut stale = 0;
    for state in LIVE {
        stale += store
            .count_by_state(Table::Providers, state.as_str(), Some(ms(stale_before)))
            .await?;
    }
    let newest = newest_live_heartbeat(store).await?;
    Ok(stall_decision(guard, fleet, stale, newest, ms(stale_before)))
}

/// How often the sweeper counts the fleet for the guard. Counting reads every index item of a
/// million providers; the fleet's size moves slowly, so the count is reused in between.
pub const FLEET_RECOUNT_AFTER: Duration = Duration::minutes(10);

/// The fleet size the guard compares with. A fleet under `exact_below` is counted on every sweep
/// (cheap, and exact while a young fleet grows); a larger one at most every
/// [`FLEET_RECOUNT_AFTER`], or sooner when a sweep finds more stale providers than it counted.
#[derive(Debug)]
pub struct FleetCount {
    exact_below: usize,
    counted: Mutex<Option<(DateTime<Utc>, usize)>>,
}

impl Default for FleetCount {
    fn default() -> Self {
        Self::exact_below(10_000)
    }
}

impl FleetCount {
    /// Counts every sweep while the fleet is under `n` providers.
    pub fn exact_below(n: usize) -> Self {
        Self {
            exact_below: n,
            counted: Mutex::new(None),
        }
    }

    /// The fleet's size for a sweep at `now` that found `stale` stale providers.
    pub async fn get(&self, store: &dyn ItemStore, now: DateTime<Utc>, stale: usize) -> StoreResult<usize> {
        let cached = *self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, n)) = cached {
            let fresh = now >= at && now - at < FLEET_RECOUNT_AFTER;
            if fresh && n >= self.exact_below && n >= stale {
                return Ok(n);
            }
        }
        self.recount(store, now).await
    }

    /// Counts the fleet now.
    pub async fn recount(&self, store: &dyn ItemStore, now: DateTime<Utc>) -> StoreResult<usize> {
        let n = count_fleet(store).await?;
        *self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now, n));
        Ok(n)
    }
}

/// Closes a job and tells whoever needs to know. Failures are logged: the job stays open and
/// the next sweep (or a `job.release`) closes it.
async fn close_and_announce(ctx: &Context, job_id: &str, reason: &str, ended_at: DateTime<Utc>) -> bool {
    match close_job(ctx.store.as_ref(), job_id, reason, ended_at).await {
        Ok(Some(closed)) => {
            if let Some(resume) = &closed.resume {
                if let Err(e) = ctx.replies.command(&closed.released.provider_id, resume).await {
                    tracing::warn!(job_id, error = %e, "mining.resume not sent");
                }
            }
            let id = format!("{}/{job_id}", JobReleased::ROUTING_KEY);
            if let Err(e) = bus::publish(ctx.bus.as_ref(), &id, &closed.released).await {
                tracing::warn!(job_id, error = %e, "job.released not published");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "job not closed");
            false
        }
    }
}

/// Marks a node offline: the status label and the NoSchedule taint.
async fn mark_node_offline(cluster: &dyn Cluster, node: &str) -> worldland_core::cluster::ClusterResult<()> {
    let status = BTreeMap::from([(labels::STATUS.to_string(), Some(labels::STATUS_OFFLINE.to_string()))]);
    cluster.patch_node_metadata(node, &status, &BTreeMap::new()).await?;
    cluster.set_offline_taint(node, true).await
}

/// Takes the offline marks off a node, as a recovery does: the taint, then the status label.
async fn unmark_node(cluster: &dyn Cluster, node: &str) -> worldland_core::cluster::ClusterResult<()> {
    cluster.set_offline_taint(node, false).await?;
    let status = BTreeMap::from([(labels::STATUS.to_string(), None)]);
    cluster.patch_node_metadata(node, &status, &BTreeMap::new()).await
}

/// What a node carries of the offline marks: (the taint, the status label).
fn marks_of(node: &worldland_core::cluster::NodeInfo) -> (bool, bool) {
    (
        node.taints.iter().any(|t| t.key == labels::OFFLINE_TAINT),
        node.labels.get(labels::STATUS).map(String::as_str) == Some(labels::STATUS_OFFLINE),
    )
}

/// Makes the provider's node marks follow its stored state: offline → both marks, joined or
/// available → neither; other states are left alone. The state is read again after every write,
/// so a transition landing while the marks were written (a heartbeat bringing it back, a sweeper
/// taking it offline) is followed too. Returns whether anything was written.
pub async fn follow_stored_state(ctx: &Context, provider_id: &str) -> Result<bool, BoxError> {
    let mut wrote = false;
    // Each round reads the state, then the node; a write is followed by another round. Three
    // rounds settle anything but a provider flapping faster than the writes.
    for _ in 0..3 {
        let Some(rec) = ProviderRecord::load(ctx.store.as_ref(), provider_id).await? else {
            return Ok(wrote);
        };
        let offline = match rec.state {
            ProviderState::Offline => true,
            ProviderState::Joined | ProviderState::Available => false,
            _ => return Ok(wrote),
        };
        let Some(node) = ctx.cluster.get_node(&rec.node_name).await? else {
            return Ok(wrote);
        };
        let (taint, label) = marks_of(&node);
        if offline {
            if taint && label {
                return Ok(wrote);
            }
            mark_node_offline(ctx.cluster.as_ref(), &rec.node_name).await?;
            tracing::info!(provider_id, node = %rec.node_name, "offline marks written to follow the stored state");
        } else {
            if !taint && !label {
                return Ok(wrote);
            }
            unmark_node(ctx.cluster.as_ref(), &rec.node_name).await?;
            tracing::info!(provider_id, node = %rec.node_name, state = %rec.state, "offline marks removed to follow the stored state");
        }
        wrote = true;
    }
    Ok(wrote)
}

/// After the sweeper marked a node: one read of the provider, and nothing more while it is still
/// offline (the marks just written are right); if it came back meanwhile, the marks follow it.
async fn recheck_after_marking(ctx: &Context, provider_id: &str) -> Result<(), BoxError> {
    match ProviderRecord::load(ctx.store.as_ref(), provider_id).await? {
        Some(rec) if rec.state != ProviderState::Offline => {
            follow_stored_state(ctx, provider_id).await?;
        }
        _ => {}
    }
    Ok(())
}

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Providers whose node was checked.
    pub checked: usize,
    /// Nodes whose marks were rewritten to agree with the stored state.
    pub repaired: usize,
}

/// The slow repair of node marks: checks at most `limit` providers (offline, then available,
/// then joined, from `cursor` on, wrapping around), and makes each node's marks follow the
/// stored state. `cursor` carries over between passes, so every provider is checked in turn.
pub async fn reconcile_marks(ctx: &Context, limit: usize, cursor: &mut usize) -> StoreResult<ReconcileReport> {
    let mut ids = vec![];
    for state in [ProviderState::Offline, ProviderState::Available, ProviderState::Joined] {
        let items = ctx
            .store
            .query_by_state_projected(Table::Providers, state.as_str(), None, &[])
            .await?;
        ids.extend(
            items
                .iter()
                .filter_map(|i| i.get(KEY_ATTR).and_then(Value::as_str).map(str::to_string)),
        );
    }
    let mut report = ReconcileReport::default();
    if ids.is_empty() {
        *cursor = 0;
        return Ok(report);
    }
    let start = *cursor % ids.len();
    let take = limit.min(ids.len());
    for id in ids.iter().cycle().skip(start).take(take) {
        report.checked += 1;
        match follow_stored_state(ctx, id).await {
            Ok(true) => report.repaired += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(provider_id = %id, error = %e, "node marks not reconciled; a later pass tries again"),
        }
    }
    *cursor = (start + take) % ids.len();
    Ok(report)
}

/// A reconcile pass runs once every this many sweeps.
pub const RECONCILE_EVERY: u64 = 20;
/// A reconcile pass checks at most this many providers.
pub const RECONCILE_LIMIT: usize = 100;

/// Counts sweeps and runs a reconcile pass every [`RECONCILE_EVERY`] of them.
#[derive(Debug, Default)]
pub struct Reconciler {
    state: Mutex<(u64, usize)>,
}

impl Reconciler {
    /// Called after each sweep: on every [`RECONCILE_EVERY`]th, one bounded pass.
    pub async fn after_sweep(&self, ctx: &Context) {
        let (due, mut cursor) = {
            let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            st.0 += 1;
            (st.0 % RECONCILE_EVERY == 1, st.1)
        };
        if !due {
            return;
        }
        match reconcile_marks(ctx, RECONCILE_LIMIT, &mut cursor).await {
            Ok(r) if r.repaired > 0 => tracing::info!(?r, "node marks reconciled"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconcile pass failed; a later one tries again"),
        }
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = cursor;
    }
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
    // Its jobs are interrupted: billed up to its last heartbeat, resources returned.
    if let Ok(Some(item)) = ctx.store.get(Table::Providers, &marked.provider_id).await {
        let jobs: Vec<String> = Ledger::from_item(&item).map(|l| l.allocs.into_keys().collect()).unwrap_or_default();
        // Billed to the broker's receive time of its last heartbeat, never the agent's word.
        let ended = marked.hb_at.min(now);
        for job_id in jobs {
            if close_and_announce(ctx, &job_id, EndReason::Interrupted.as_str(), ended).await {
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
    Ok(true)
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
                    Ok(r) if r.marked_offline + r.expired > 0 => tracing::info!(?r, "sweep"),
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
                "guard_held": r.guard_held
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_decision_table() {
        let guard = StallGuard { share: 0.5, min: 5 };
        let cutoff = 1_000;
        let fresh = Some(cutoff + 10);
        // (fleet, stale, newest heartbeat) → decision
        let table: &[(usize, usize, Option<i64>, Option<Stall>)] = &[
            (0, 0, None, None),                                             // no fleet
            (4, 4, Some(cutoff - 1), None),                                 // below the minimum: all may go
            (10, 2, fresh, None),                                           // churn
            (10, 5, fresh, None),                                           // exactly half is not more than half
            (10, 6, fresh, Some(Stall::Share { fleet: 10, stale: 6 })),     // more than half
            (10, 10, Some(cutoff - 1), Some(Stall::Silence { fleet: 10 })), // nobody heartbeated
            (100, 4, fresh, None),                                          // share met by too few to count
            (1_000_000, 10_000, fresh, None),                               // 1% of a million
            (
                1_000_000,
                500_001,
                fresh,
                Some(Stall::Share {
                    fleet: 1_000_000,
                    stale: 500_001,
                }),
            ),
        ];
        for &(fleet, stale, newest, want) in table {
            assert_eq!(
                stall_decision(guard, fleet, stale, newest, cutoff),
                want,
                "fleet {fleet} stale {stale} newest {newest:?}"
            );
        }
    }
}
