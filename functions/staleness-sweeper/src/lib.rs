//! Staleness sweeper: on a schedule, finds joined/available providers whose last heartbeat is
//! older than the threshold — through the state index, never a table scan — and marks each
//! offline with a conditional write that still requires staleness at write time (a heartbeat
//! landing in between wins). Offline nodes get `worldland.io/status=offline` and the
//! `worldland.io/offline:NoSchedule` taint. Approved providers whose token ran out without a join
//! become `expired`. Several sweepers may run at once: only one write per provider succeeds, and
//! only its writer touches the node.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio::sync::broadcast;
use worldland_core::bus::Bus;
use worldland_core::cluster::Cluster;
use worldland_core::jobs::close_job;
use worldland_core::labels;
use worldland_core::ledger::job::JobState;
use worldland_core::ledger::Ledger;
use worldland_core::messages::topics;
use worldland_core::messages::ProviderState;
use worldland_core::replies::ProviderReplies;
use worldland_core::state::providers::{expire_if_unjoined, mark_offline_if_stale, ms};
use worldland_core::state::{ItemStore, StoreResult, Table, Value, INDEX_SORT_ATTR, KEY_ATTR};
use worldland_core::BoxError;
use worldland_runtime::backends::{self, BackendError};
use worldland_runtime::worker::{Service, Worker};
use worldland_runtime::Config;

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
            let body = serde_json::to_vec(&closed.released).expect("serialises");
            if let Err(e) = ctx
                .bus
                .publish(topics::JOB_RELEASED, &format!("{}/{job_id}", topics::JOB_RELEASED), &body)
                .await
            {
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

pub async fn sweep_once(ctx: &Context, now: DateTime<Utc>) -> StoreResult<SweepReport> {
    let mut report = SweepReport::default();
    let stale_before = now - ctx.stale_after;
    for state in [ProviderState::Joined, ProviderState::Available] {
        let stale = ctx
            .store
            .query_by_state(Table::Providers, state.as_str(), Some(ms(stale_before)))
            .await?;
        report.examined += stale.len();
        for item in stale {
            let Some(id) = item.get(KEY_ATTR).and_then(Value::as_str) else {
                continue;
            };
            let Some(marked) = mark_offline_if_stale(stale_before, now).run(ctx.store.as_ref(), id).await? else {
                continue; // a heartbeat landed in between, or another sweeper was first
            };
            report.marked_offline += 1;
            tracing::info!(provider_id = %marked.provider_id, last_heartbeat = ?marked.last_heartbeat, "provider offline");
            // Its jobs are interrupted: billed up to its last heartbeat, resources returned.
            if let Ok(Some(item)) = ctx.store.get(Table::Providers, &marked.provider_id).await {
                let jobs: Vec<String> = Ledger::from_item(&item).map(|l| l.allocs.into_keys().collect()).unwrap_or_default();
                // Billed to the broker's receive time of its last heartbeat, never the agent's word.
                let ended = marked.hb_at.min(now);
                for job_id in jobs {
                    if close_and_announce(ctx, &job_id, "interrupted", ended).await {
                        report.jobs_closed += 1;
                    }
                }
            }
            if let Err(e) = mark_node_offline(ctx.cluster.as_ref(), &marked.node_name).await {
                tracing::warn!(provider_id = %marked.provider_id, error = %e, "offline marks not written to the node");
            }
        }
    }
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
        if close_and_announce(ctx, id, "expired", ended).await {
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
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = ticker.tick() => {
                match sweep_once(&ctx, clock()).await {
                    Ok(r) if r.marked_offline + r.expired > 0 => tracing::info!(?r, "sweep"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweep failed; next tick tries again"),
                }
            }
        }
    }
    tracing::info!("sweeper stopped");
}

/// The sweeper's context built from configuration, its clients made once per process.
pub async fn from_config(cfg: &Config, bus: Arc<dyn Bus>) -> Result<Context, BackendError> {
    Ok(Context {
        store: backends::store(cfg).await,
        cluster: backends::cluster(cfg).await?,
        bus,
        replies: backends::replies(cfg).await?,
        stale_after: Duration::seconds(cfg.stale_after_s),
    })
}

/// The sweeper as a worker: a loop on its interval in a container, one sweep per scheduled event
/// on Lambda.
pub struct StalenessSweeper {
    pub ctx: Arc<Context>,
    pub interval: std::time::Duration,
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
        Some(sweep_once(&self.ctx, now).await.map_err(BoxError::from).map(|r| {
            serde_json::json!({
                "examined": r.examined, "marked_offline": r.marked_offline, "expired": r.expired, "jobs_closed": r.jobs_closed
            })
        }))
    }
}

/// The worker, for the container and Lambda entry points.
pub async fn worker(cfg: Config, bus: Arc<dyn Bus>) -> Result<Worker, BackendError> {
    Ok(Worker::Service(Arc::new(StalenessSweeper {
        ctx: Arc::new(from_config(&cfg, bus).await?),
        interval: std::time::Duration::from_secs(cfg.sweep_interval_s),
    })))
}
