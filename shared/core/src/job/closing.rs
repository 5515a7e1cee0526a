//! Closing a job: return exactly what it took to the provider's ledger, then close the job item
//! with its duration and exact cost. Shared by the allocator (`job.release`) and the sweeper
//! (expired durations, providers gone offline); each step is one conditional write, so a
//! repeated or concurrent close does nothing the second time.

use chrono::{DateTime, Utc};

use crate::bus::{Bus, Message};
use crate::job::{self, JobState};
use crate::ledger::{cost_micros, release_allocation, Ledger};
use crate::messages::jobs::{JobAllocated, JobRejected, JobReleased, MiningCommand, MINING_RESUME, MINING_STOP};
use crate::replies::ProviderReplies;
use crate::state::{Item, ItemStore, StoreError, StoreResult, Table, Value};
use crate::worker::Failure;

/// What closing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// The `job.released` to publish, with the duration and exact cost.
    pub released: JobReleased,
    /// The `mining.resume` to send, when the job had taken GPUs from mining.
    pub resume: Option<MiningCommand>,
}

pub(super) fn corrupt(key: &str, why: &str) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        why: why.to_string(),
    }
}

/// Closes an allocated job ended at `ended_at` (clamped to not before its start). `None` when the
/// job is not (or no longer) allocated.
pub async fn close_job(store: &dyn ItemStore, job_id: &str, reason: &str, ended_at: DateTime<Utc>) -> StoreResult<Option<Closed>> {
    match store.get(Table::Jobs, job_id).await? {
        Some(job) => close_job_item(store, job_id, &job, reason, ended_at).await,
        None => Ok(None),
    }
}

/// [`close_job`] for a job item the caller has already read.
pub async fn close_job_item(
    store: &dyn ItemStore,
    job_id: &str,
    job: &crate::state::Item,
    reason: &str,
    ended_at: DateTime<Utc>,
) -> StoreResult<Option<Closed>> {
    if job::JobState::of(job) != Some(job::JobState::Allocated) {
        return Ok(None);
    }
    let allocation: JobAllocated = job
        .get(job::attr::ALLOCATION)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| corrupt(job_id, "allocated job without its allocation"))?;
    let started = job
        .get(job::attr::ALLOCATED_AT)
        .and_then(Value::as_i64)
        .ok_or_else(|| corrupt(job_id, "no allocated_at"))?;
    // Return the resources, unless an earlier attempt already did.
    if let Some(provider) = store.get(Table::Providers, &allocation.provider_id).await? {
        if let Some(alloc) = Ledger::from_item(&provider).and_then(|l| l.allocs.get(job_id).cloned()) {
            release_allocation(&alloc).apply(store, &allocation.provider_id).await?;
        }
    }
    let ended = ended_at.timestamp_millis().max(started);
    let duration = ended - started;
    let cost = cost_micros(i64::from(allocation.gpus), allocation.price_per_gpu_hour_micros, duration);
    if !job::closed(reason, ended, duration, cost).apply(store, job_id).await? {
        return Ok(None); // someone else closed it in between
    }
    let resume = resume_for(job_id, &allocation);
    Ok(Some(Closed {
        released: JobReleased {
            job_id: job_id.to_string(),
            provider_id: allocation.provider_id,
            reason: reason.to_string(),
            duration_ms: duration,
            cost_micros: cost,
        },
        resume,
    }))
}

/// The `mining.resume` that closing a job with `allocation` owes its provider, if it took mining
/// GPUs (its command id the same for every sending, so a resend is recognised).
fn resume_for(job_id: &str, allocation: &JobAllocated) -> Option<MiningCommand> {
    (allocation.mining_gpus_taken > 0).then(|| MiningCommand {
        kind: MINING_RESUME.into(),
        command_id: format!("{job_id}/resume"),
        job_id: job_id.to_string(),
        gpu_model: allocation.gpu_model.clone(),
        gpus: allocation.mining_gpus_taken,
    })
}

/// The `mining.resume` a closed job (as stored) owes its provider, for an answer sent again after
/// the close's own answer was lost: (provider id, command).
pub fn resume_owed(job_id: &str, job: &Item) -> Option<(String, MiningCommand)> {
    let a: JobAllocated = serde_json::from_str(job.get(job::attr::ALLOCATION)?.as_str()?).ok()?;
    let cmd = resume_for(job_id, &a)?;
    Some((a.provider_id, cmd))
}

/// The `job.released` a closed job (as stored) still owes its customer: `None` unless it is
/// released and its release not yet marked answered. For an answer sent again after the close's
/// own answer was lost.
pub fn release_owed(job_id: &str, job: &Item) -> Option<JobReleased> {
    let answered = job.get(job::attr::RELEASE_ANSWERED).and_then(Value::as_bool) == Some(true);
    if answered || JobState::of(job) != Some(JobState::Released) {
        return None;
    }
    let s = |a: &str| job.get(a).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |a: &str| job.get(a).and_then(Value::as_i64).unwrap_or(0);
    Some(JobReleased {
        job_id: job_id.into(),
        provider_id: s(job::attr::PROVIDER),
        reason: s(job::attr::END_REASON),
        duration_ms: n(job::attr::DURATION_MS),
        cost_micros: n(job::attr::COST_MICROS),
    })
}

/// Closes `job_id`, found in the ledger of `provider_id`, through that provider only: when the
/// job's allocation names it. An entry for a job that is not allocated there (an orphan, see
/// [`is_orphan`]) is given back instead, and the job, allocated elsewhere or settled, is left
/// alone. `None` when nothing was closed.
pub async fn close_job_on(
    store: &dyn ItemStore,
    provider_id: &str,
    job_id: &str,
    reason: &str,
    ended_at: DateTime<Utc>,
) -> StoreResult<Option<Closed>> {
    let job = store.get(Table::Jobs, job_id).await?;
    if let Some(job) = &job {
        if allocated_on(job).as_deref() == Some(provider_id) {
            return close_job_item(store, job_id, job, reason, ended_at).await;
        }
    }
    give_back_if_orphan(store, provider_id, job_id, job.as_ref()).await?;
    Ok(None)
}

/// The provider an allocated job's allocation names; `None` for a job not allocated.
fn allocated_on(job: &Item) -> Option<String> {
    if JobState::of(job) != Some(JobState::Allocated) {
        return None;
    }
    let a: JobAllocated = serde_json::from_str(job.get(job::attr::ALLOCATION)?.as_str()?).ok()?;
    Some(a.provider_id)
}

/// Whether an entry for `job` on `provider_id` is an orphan, to be given back: the job is
/// allocated on another provider, or settled (released, rejected, cancelled). An entry of a job
/// still pending belongs to the delivery placing it (which records it or undoes it; the sweeper
/// resolves a stalled one), and one without a job item is left for an operator.
pub fn is_orphan(job: Option<&Item>, provider_id: &str) -> bool {
    let Some(job) = job else { return false };
    match JobState::of(job) {
        Some(JobState::Allocated) => allocated_on(job).is_some_and(|p| p != provider_id),
        Some(JobState::Released | JobState::Rejected | JobState::Cancelled) => true,
        _ => false,
    }
}

/// Gives back the entry of `job_id` on `provider_id` when it is an orphan (`job` is the job item
/// as read). Whether it gave anything back; the release is conditional on the entry as read, so
/// it never races an undo or a close into giving back twice.
async fn give_back_if_orphan(store: &dyn ItemStore, provider_id: &str, job_id: &str, job: Option<&Item>) -> StoreResult<bool> {
    if !is_orphan(job, provider_id) {
        return Ok(false);
    }
    let Some(provider) = store.get(Table::Providers, provider_id).await? else {
        return Ok(false);
    };
    let Some(alloc) = Ledger::from_item(&provider).and_then(|l| l.allocs.get(job_id).cloned()) else {
        return Ok(false);
    };
    release_allocation(&alloc).apply(store, provider_id).await
}

/// Gives back every orphan entry in the ledger of `provider_id` (see [`is_orphan`]); the jobs
/// whose entries it gave back. The repair of what [`audit`] reports as "holds job …, which is
/// not allocated there".
pub async fn give_back_orphans(store: &dyn ItemStore, provider_id: &str) -> StoreResult<Vec<String>> {
    let Some(provider) = store.get(Table::Providers, provider_id).await? else {
        return Ok(vec![]);
    };
    let jobs: Vec<String> = Ledger::from_item(&provider)
        .map(|l| l.allocs.into_keys().collect())
        .unwrap_or_default();
    let mut out = vec![];
    for job_id in jobs {
        let job = store.get(Table::Jobs, &job_id).await?;
        if give_back_if_orphan(store, provider_id, &job_id, job.as_ref()).await? {
            out.push(job_id);
        }
    }
    Ok(out)
}

/// Checks both invariants for every provider, and every open job against the ledger: an
/// allocated job must hold its allocation on its provider, and every allocation must belong to
/// an allocated job on that provider. Returns each violation in words.
pub async fn audit(store: &dyn ItemStore) -> StoreResult<Vec<String>> {
    let mut out = vec![];
    let providers = store.scan(Table::Providers).await?;
    let jobs = store.scan(Table::Jobs).await?;
    let mut open: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for j in &jobs {
        if job::JobState::of(j) == Some(job::JobState::Allocated) {
            let id = j.get("id").and_then(Value::as_str).unwrap_or("?").to_string();
            let provider = j.get(job::attr::PROVIDER).and_then(Value::as_str).unwrap_or("?").to_string();
            open.insert(id, provider);
        }
    }
    let mut held: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    // Reservations and wallet items (`node#…`, `token#…`, `wallet#…`) share the table: not providers.
    for p in providers.iter().filter(|p| !crate::provider::nodes::is_not_a_provider(p)) {
        let id = p.get("id").and_then(Value::as_str).unwrap_or("?");
        let Some(l) = Ledger::from_item(p) else { continue };
        out.extend(l.violations().into_iter().map(|v| format!("provider {id}: {v}")));
        for job in l.allocs.keys() {
            held.insert(job.clone(), id.to_string());
        }
    }
    for (job, provider) in &open {
        if held.get(job) != Some(provider) {
            out.push(format!("job {job}: allocated on {provider}, but that provider does not hold it"));
        }
    }
    for (job, provider) in &held {
        if open.get(job) != Some(provider) {
            out.push(format!("provider {provider}: holds job {job}, which is not allocated there"));
        }
    }
    Ok(out)
}

/// Publishes `msg` under its own routing key, with a message id the same for every delivery of
/// this job's answer (so a redelivered answer is recognised downstream).
async fn publish<M: Message>(bus: &dyn Bus, id: &str, msg: &M) -> Result<(), Failure> {
    crate::bus::publish(bus, &format!("{}/{id}", M::ROUTING_KEY), msg).await?;
    Ok(())
}

/// Publishes `job.rejected` for `job_id`.
pub async fn reject_job(bus: &dyn Bus, job_id: &str, reason: &str, message: &str) -> Result<(), Failure> {
    let r = JobRejected {
        job_id: job_id.into(),
        reason: reason.into(),
        message: message.into(),
    };
    publish(bus, job_id, &r).await
}

/// Publishes the stored answer of a settled job (`job.allocated`, after any `mining.stop`, or
/// `job.rejected`) unless it went out already, then marks it answered. Shared by the allocator
/// and the sweeper's resolution of stale pending jobs, so a request is answered once.
pub async fn answer_settled(
    store: &dyn ItemStore,
    bus: &dyn Bus,
    replies: &dyn ProviderReplies,
    item: &Item,
    job_id: &str,
) -> Result<(), Failure> {
    if item.get(job::attr::ANSWERED).and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    match JobState::of(item) {
        Some(JobState::Allocated) => {
            let Some(a) = item
                .get(job::attr::ALLOCATION)
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str::<JobAllocated>(s).ok())
            else {
                return Err(Failure::retry("allocated job without its allocation"));
            };
            if a.mining_gpus_taken > 0 {
                let stop = MiningCommand {
                    kind: MINING_STOP.into(),
                    command_id: format!("{job_id}/stop"),
                    job_id: job_id.into(),
                    gpu_model: a.gpu_model.clone(),
                    gpus: a.mining_gpus_taken,
                };
                replies.command(&a.provider_id, &stop).await?;
            }
            publish(bus, job_id, &a).await?;
        }
        Some(JobState::Rejected) => {
            let text = item.get(job::attr::REJECTION).and_then(Value::as_str).unwrap_or("rejected: ");
            let (reason, message) = text.split_once(": ").unwrap_or((text, ""));
            reject_job(bus, job_id, reason, message).await?;
        }
        Some(JobState::Cancelled | JobState::Released) => {
            reject_job(
                bus,
                job_id,
                JobState::Cancelled.as_str(),
                "the job was released before it was allocated",
            )
            .await?;
        }
        _ => return Ok(()),
    }
    job::answered(job::attr::ANSWERED).apply(store, job_id).await?;
    Ok(())
}
