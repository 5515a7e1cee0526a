//! Closing a job: return exactly what it took to the provider's ledger, then close the job item
//! with its duration and exact cost. Shared by the allocator (`job.release`) and the sweeper
//! (expired durations, providers gone offline); each step is one conditional write, so a
//! repeated or concurrent close does nothing the second time.

use chrono::{DateTime, Utc};

use crate::bus::Bus;
use crate::ledger::job::{self, JobState};
use crate::ledger::{self, adopt_allocation, cost_micros, node_selector, release_allocation, Ledger};
use crate::messages::jobs::{AllocateRequest, JobAllocated, JobRejected, JobReleased, MiningCommand, MINING_RESUME, MINING_STOP};
use crate::messages::topics;
use crate::replies::ProviderReplies;
use crate::state::providers::ms;
use crate::state::{Cond, Item, ItemStore, StoreError, StoreResult, Table, Value};
use crate::worker::Failure;

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

async fn publish<T: serde::Serialize>(bus: &dyn Bus, topic: &str, id: &str, msg: &T) -> Result<(), Failure> {
    let body = serde_json::to_vec(msg).expect("serialises");
    bus.publish(topic, &format!("{topic}/{id}"), &body).await?;
    Ok(())
}

/// Publishes `job.rejected` for `job_id`.
pub async fn reject_job(bus: &dyn Bus, job_id: &str, reason: &str, message: &str) -> Result<(), Failure> {
    let r = JobRejected {
        job_id: job_id.into(),
        reason: reason.into(),
        message: message.into(),
    };
    publish(bus, topics::JOB_REJECTED, job_id, &r).await
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
            publish(bus, topics::JOB_ALLOCATED, job_id, &a).await?;
        }
        Some(JobState::Rejected) => {
            let text = item.get(job::attr::REJECTION).and_then(Value::as_str).unwrap_or("rejected: ");
            let (reason, message) = text.split_once(": ").unwrap_or((text, ""));
            reject_job(bus, job_id, reason, message).await?;
        }
        Some(JobState::Cancelled | JobState::Released) => {
            reject_job(bus, job_id, "cancelled", "the job was released before it was allocated").await?;
        }
        _ => return Ok(()),
    }
    job::answered(job::attr::ANSWERED).apply_on(store, Table::Jobs, job_id).await?;
    Ok(())
}

/// What the owner of a pending job found when it looked for a commit made under an earlier claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// A commit had landed: adopted and recorded; the job item as written (`allocated`).
    Allocated(Item),
    /// Nothing is committed for the job on the provider it was trying.
    NothingCommitted,
    /// Another delivery took the job over in between; it finishes (and answers).
    Lost,
}

/// Gives back the allocation of `job_id` on `provider_id` only if `owner` still holds it: an
/// entry a takeover adopted is left alone. Whether it gave anything back.
pub async fn undo_owned(store: &dyn ItemStore, job_id: &str, provider_id: &str, owner: &str) -> StoreResult<bool> {
    let Some(prov) = store.get(Table::Providers, provider_id).await? else {
        return Ok(false);
    };
    match Ledger::from_item(&prov).and_then(|l| l.allocs.get(job_id).cloned()) {
        Some(alloc) if alloc.owner == owner => release_allocation(&alloc).apply_on(store, Table::Providers, provider_id).await,
        _ => Ok(false),
    }
}

/// The job's `allocated` transition, fenced on `owner` still holding the pending job.
pub fn allocated_by(a: &JobAllocated, started_at_ms: i64, due_at_ms: Option<i64>, owner: &str) -> crate::state::providers::Transition {
    let mut t = job::allocated(a, started_at_ms, due_at_ms);
    t.cond = t.cond.and(Cond::eq(job::attr::OWNER, owner));
    t
}

/// As `me`, the job's owner now (its claim taken over), finishes a commit an earlier owner may
/// have made on the provider the job was trying: adopts the entry (so the earlier owner's undo
/// cannot remove it) and records the job `allocated`.
pub async fn finish_committed(store: &dyn ItemStore, job_id: &str, job_item: &Item, me: &str) -> StoreResult<Finish> {
    let Some(p) = job_item.get(job::attr::ATTEMPT).and_then(Value::as_str) else {
        return Ok(Finish::NothingCommitted);
    };
    let Some(prov) = store.get(Table::Providers, p).await? else {
        return Ok(Finish::NothingCommitted);
    };
    let Some(alloc) = Ledger::from_item(&prov).and_then(|l| l.allocs.get(job_id).cloned()) else {
        return Ok(Finish::NothingCommitted);
    };
    if alloc.owner != me
        && !adopt_allocation(job_id, &alloc.owner, me)
            .apply_on(store, Table::Providers, p)
            .await?
    {
        // Undone by its owner in between (nothing committed now), or adopted by a later takeover.
        let again = store.get(Table::Providers, p).await?;
        let held = again
            .as_ref()
            .and_then(Ledger::from_item)
            .is_some_and(|l| l.allocs.contains_key(job_id));
        return Ok(if held { Finish::Lost } else { Finish::NothingCommitted });
    }
    let req: AllocateRequest = job_item
        .get(job::attr::REQUEST)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| corrupt(job_id, "pending job without its request"))?;
    let allocated = JobAllocated {
        job_id: job_id.to_string(),
        customer_id: req.customer_id.clone(),
        provider_id: p.to_string(),
        node_name: prov.get("node_name").and_then(Value::as_str).unwrap_or("").to_string(),
        node_selector: node_selector(p, &alloc.model_key),
        gpu_model: alloc.model_key.clone(),
        gpus: req.gpus,
        cpu_cores: req.cpu_cores,
        memory_mb: req.memory_mb,
        price_per_gpu_hour_micros: alloc.price_micros,
        mining_gpus_taken: alloc.mining_taken as u32,
    };
    let due = req.duration_s.map(|d| alloc.started_at_ms + d as i64 * 1000);
    match allocated_by(&allocated, alloc.started_at_ms, due, me)
        .run_raw_on(store, Table::Jobs, job_id)
        .await?
    {
        Some(item) => Ok(Finish::Allocated(item)),
        None => {
            // Taken over in turn: the new owner adopts the entry from us, or we give it back.
            undo_owned(store, job_id, p, me).await?;
            Ok(Finish::Lost)
        }
    }
}

/// How a pending job whose placement never committed is settled.
#[derive(Debug, Clone, Copy)]
pub enum RollBack<'a> {
    /// `rejected` with this reason code and message (answered as `job.rejected`).
    Reject {
        /// The reason code.
        reason: &'a str,
        /// The message.
        message: &'a str,
    },
    /// `cancelled` by a release with this reason (answered as `job.rejected` `cancelled`).
    Cancel {
        /// The release's reason.
        reason: &'a str,
    },
}

/// How [`resolve_pending`] left a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The earlier owner's commit had landed: the job is now `allocated` (not yet answered).
    Allocated(Item),
    /// Nothing had been committed: the job is now `rejected` or `cancelled` (not yet answered).
    RolledBack(Item),
    /// Not pending (any more): the job as read.
    Settled(Item),
    /// Still pending under a live claim (not yet past the lease, or another taker won).
    Busy,
    /// No such job.
    Gone,
}

/// Resolves a job left `pending` by a claim older than `stale_before` (epoch ms): takes the claim
/// over as `me` (a conditional write on the claim's age and owner, after which the old owner's
/// writes fail), then finishes a commit that landed, or else rolls the job back as `how` says.
/// The ledger stays exact either way: an adopted entry belongs to the allocated job; an entry
/// the old owner commits late is undone by it (its job write fails its condition).
pub async fn resolve_pending(
    store: &dyn ItemStore,
    job_id: &str,
    me: &str,
    stale_before: i64,
    how: RollBack<'_>,
    now: DateTime<Utc>,
) -> StoreResult<Resolution> {
    let Some(item) = store.get(Table::Jobs, job_id).await? else {
        return Ok(Resolution::Gone);
    };
    if JobState::of(&item) != Some(JobState::Pending) {
        return Ok(Resolution::Settled(item));
    }
    if item.get(job::attr::CLAIMED_AT).and_then(Value::as_i64).unwrap_or(0) >= stale_before {
        return Ok(Resolution::Busy);
    }
    let old = item.get(job::attr::OWNER).and_then(Value::as_str);
    let claim = item.get(job::attr::CLAIM).and_then(Value::as_str).unwrap_or("");
    let Some(mine) = job::take_claim(old, Some(stale_before), claim, me, now)
        .run_raw_on(store, Table::Jobs, job_id)
        .await?
    else {
        return Ok(Resolution::Busy);
    };
    match finish_committed(store, job_id, &mine, me).await? {
        Finish::Allocated(item) => return Ok(Resolution::Allocated(item)),
        Finish::Lost => return Ok(Resolution::Busy),
        Finish::NothingCommitted => {}
    }
    let mut t = match how {
        RollBack::Reject { reason, message } => job::rejected(reason, message),
        RollBack::Cancel { reason } => job::cancelled_while_pending(reason, now),
    };
    t.cond = t.cond.and(Cond::eq(job::attr::OWNER, me));
    Ok(match t.run_raw_on(store, Table::Jobs, job_id).await? {
        Some(item) => Resolution::RolledBack(item),
        None => Resolution::Busy,
    })
}

/// A pending job's claim untouched this long belongs to a delivery that died or stalled: another
/// may take it over, and the sweeper resolves it.
pub const CLAIM_LEASE_S: i64 = 30;

/// A claim token for one delivery (or one sweeper pass): unique, never reused.
pub fn new_claim_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The epoch-ms bound below which a claim is stale at `now`, with a lease of `lease_s` seconds.
pub fn stale_before(now: DateTime<Utc>, lease_s: i64) -> i64 {
    ms(now - chrono::Duration::seconds(lease_s))
}
