//! The claims that fence the deliveries placing a job: a commit made on a provider is finished
//! or undone by the delivery that owns the pending job, and a claim left by a dead delivery is
//! taken over after its lease.

use chrono::{DateTime, Utc};

use super::closing::corrupt;
use crate::job::{self, JobState};
use crate::ledger::{adopt_allocation, release_allocation, Ledger};
use crate::messages::jobs::{AllocateRequest, JobAllocated};
use crate::placement::node_selector;
use crate::state::{ms, Cond, Item, ItemStore, StoreResult, Table, Value};

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
        Some(alloc) if alloc.owner == owner => release_allocation(&alloc).apply(store, provider_id).await,
        _ => Ok(false),
    }
}

/// The job's `allocated` transition, fenced on `owner` still holding the pending job.
pub fn allocated_by(a: &JobAllocated, started_at_ms: i64, due_at_ms: Option<i64>, owner: &str) -> crate::job::Transition {
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
    if alloc.owner != me && !adopt_allocation(job_id, &alloc.owner, me).apply(store, p).await? {
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
        .run_raw(store, job_id)
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
        .run_raw(store, job_id)
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
    Ok(match t.run_raw(store, job_id).await? {
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
