//! Closing a job: return exactly what it took to the provider's ledger, then close the job item
//! with its duration and exact cost. Shared by the allocator (`job.release`) and the sweeper
//! (expired durations, providers gone offline); each step is one conditional write, so a
//! repeated or concurrent close does nothing the second time.

use chrono::{DateTime, Utc};

use crate::ledger::{self, cost_micros, release_allocation, Ledger};
use crate::messages::jobs::{JobAllocated, JobReleased, MiningCommand, MINING_RESUME};
use crate::state::{ItemStore, StoreError, StoreResult, Table, Value};

/// What closing did.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// The `job.released` to publish, with the duration and exact cost.
    pub released: JobReleased,
    /// The `mining.resume` to send, when the job had taken GPUs from mining.
    pub resume: Option<MiningCommand>,
}

fn corrupt(key: &str, why: &str) -> StoreError {
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
    if ledger::job::JobState::of(job) != Some(ledger::job::JobState::Allocated) {
        return Ok(None);
    }
    let allocation: JobAllocated = job
        .get(ledger::job::attr::ALLOCATION)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| corrupt(job_id, "allocated job without its allocation"))?;
    let started = job
        .get(ledger::job::attr::ALLOCATED_AT)
        .and_then(Value::as_i64)
        .ok_or_else(|| corrupt(job_id, "no allocated_at"))?;
    // Return the resources, unless an earlier attempt already did.
    if let Some(provider) = store.get(Table::Providers, &allocation.provider_id).await? {
        if let Some(alloc) = Ledger::from_item(&provider).and_then(|l| l.allocs.get(job_id).cloned()) {
            release_allocation(&alloc)
                .apply_on(store, Table::Providers, &allocation.provider_id)
                .await?;
        }
    }
    let ended = ended_at.timestamp_millis().max(started);
    let duration = ended - started;
    let cost = cost_micros(i64::from(allocation.gpus), allocation.price_per_gpu_hour_micros, duration);
    if !ledger::job::closed(reason, ended, duration, cost)
        .apply_on(store, Table::Jobs, job_id)
        .await?
    {
        return Ok(None); // someone else closed it in between
    }
    let resume = (allocation.mining_gpus_taken > 0).then(|| MiningCommand {
        kind: MINING_RESUME.into(),
        command_id: format!("{job_id}/resume"),
        job_id: job_id.to_string(),
        gpu_model: allocation.gpu_model.clone(),
        gpus: allocation.mining_gpus_taken,
    });
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

/// Checks both invariants for every provider, and every open job against the ledger: an
/// allocated job must hold its allocation on its provider, and every allocation must belong to
/// an allocated job on that provider. Returns each violation in words.
pub async fn audit(store: &dyn ItemStore) -> StoreResult<Vec<String>> {
    let mut out = vec![];
    let providers = store.scan(Table::Providers).await?;
    let jobs = store.scan(Table::Jobs).await?;
    let mut open: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for j in &jobs {
        if ledger::job::JobState::of(j) == Some(ledger::job::JobState::Allocated) {
            let id = j.get("id").and_then(Value::as_str).unwrap_or("?").to_string();
            let provider = j
                .get(ledger::job::attr::PROVIDER)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            open.insert(id, provider);
        }
    }
    let mut held: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for p in &providers {
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
