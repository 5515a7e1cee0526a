//! Allocator: `job.allocate` and `job.release`, so that no GPU is ever handed out twice however
//! many allocators run and however often a message is redelivered.
//!
//! An allocation is one conditional UpdateItem on the chosen provider that deducts GPUs, CPU and
//! memory, records the allocation under the job id and requires the provider to be available
//! with enough left; on a failed condition the next candidate is tried (bounded). The job item is
//! the arbiter: only the delivery that owns the pending job records the result; a commit that
//! loses that race is undone. Rentals come before mining: when free GPUs are not enough but mining
//! ones are, the same write takes mining GPUs and the provider is told `mining.stop`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::instrument;
use worldland_core::bus::routes::ToAllocator;
use worldland_core::bus::{self, Bus, Message};
use worldland_core::job::{self, close_job_item, Finish, Resolution, RollBack};
use worldland_core::job::{EndReason, JobState};
use worldland_core::ledger::commit_allocation;
use worldland_core::messages::jobs::{AllocateRequest, JobAllocated, ReleaseRequest};
use worldland_core::placement::index::Placer;
use worldland_core::placement::{self, node_selector, Choice, NoPlacement};
use worldland_core::refusal::{Reason, Rejection};
use worldland_core::replies::ProviderReplies;
use worldland_core::state::ms;
use worldland_core::state::{Cond, Item, ItemStore, Op, Table, Value};
use worldland_core::validation::check_provider_id;
use worldland_core::worker::{Consume, Failure};
use worldland_core::workload::check_workload;
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::Worker;
use worldland_runtime::Backends;

pub const WORKER: &str = worldland_core::bus::routes::ALLOCATOR.0;
pub const BINDINGS: &[&str] = worldland_core::bus::routes::ALLOCATOR.1;

/// How many candidates one allocation tries before it re-reads the fleet: the best few that
/// placement ranks.
pub const MAX_ATTEMPTS: usize = placement::index::BEST_FEW;
/// How many times it re-reads the fleet before answering `no_capacity`.
pub const MAX_ROUNDS: usize = 3;
/// A pending job's claim untouched this long belongs to a delivery that died or stalled: another
/// request may take it over, and the sweeper resolves it.
pub const OWNER_TIMEOUT_S: i64 = job::CLAIM_LEASE_S;

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub bus: Arc<dyn Bus>,
    pub replies: Arc<dyn ProviderReplies>,
    /// Placement, with the recent reads of the fleet it reuses for a moment.
    placer: Placer,
    /// This allocator's counts (the bench reads them from the instance it built).
    pub stats: Stats,
}

impl Context {
    pub fn new(store: Arc<dyn ItemStore>, bus: Arc<dyn Bus>, replies: Arc<dyn ProviderReplies>) -> Self {
        Self {
            store,
            bus,
            replies,
            placer: Placer::default(),
            stats: Stats::default(),
        }
    }
}

/// Counts for benchmarks and logs, one per [`Context`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Conditional provider writes that lost a race (the candidate filled up meanwhile).
    pub condition_failures: std::sync::atomic::AtomicU64,
}

fn invalid(msg: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidRequest, msg)
}

/// The rules a request must meet, its workload's included; pure.
pub fn validate_allocate(r: &AllocateRequest) -> Result<(), Rejection> {
    check_job_id(&r.job_id)?;
    if r.customer_id.trim().is_empty() || r.customer_id.len() > 128 {
        return Err(invalid("customer_id must be 1-128 characters"));
    }
    if !(1..=64).contains(&r.gpus) {
        return Err(invalid("gpus must be between 1 and 64"));
    }
    if !(1..=1024).contains(&r.cpu_cores) {
        return Err(invalid("cpu_cores must be between 1 and 1024"));
    }
    if !(1..=64 * 1024 * 1024).contains(&r.memory_mb) {
        return Err(invalid("memory_mb must be between 1 and 64 TiB"));
    }
    if r.max_price_per_gpu_hour.is_some_and(|p| !p.is_finite() || p <= 0.0) {
        return Err(invalid("max_price_per_gpu_hour must be a finite number above 0"));
    }
    if r.duration_s.is_some_and(|d| !(1..=366 * 86_400).contains(&d)) {
        return Err(invalid("duration_s must be between 1 s and a year"));
    }
    if r.gpu_model.as_ref().is_some_and(|m| m.trim().is_empty() || m.len() > 128) {
        return Err(invalid("gpu_model, when given, must be 1-128 characters"));
    }
    // What the rental runs, last: each of its faults has a code of its own (`image_missing`, …).
    check_workload(&r.workload)
}

/// Job ids name map keys and items: the provider-id alphabet, no dots.
pub fn check_job_id(id: &str) -> Result<(), Rejection> {
    check_provider_id(id).map_err(|_| invalid("job_id must be a UUID or 1-63 characters of a-z, 0-9 and '-'"))
}

fn job_state(item: &Item) -> Option<JobState> {
    JobState::of(item)
}

async fn reject_job(ctx: &Context, job_id: &str, reason: &str, message: &str) -> Result<(), Failure> {
    job::reject_job(ctx.bus.as_ref(), job_id, reason, message).await
}

async fn publish<M: Message>(ctx: &Context, id: &str, msg: &M) -> Result<(), Failure> {
    bus::publish(ctx.bus.as_ref(), &format!("{}/{id}", M::ROUTING_KEY), msg).await?;
    Ok(())
}

/// Publishes the stored answer of a settled job once, then marks it answered.
async fn answer_settled(ctx: &Context, item: &Item, job_id: &str) -> Result<(), Failure> {
    job::answer_settled(ctx.store.as_ref(), ctx.bus.as_ref(), ctx.replies.as_ref(), item, job_id).await
}

#[instrument(skip(req, ctx, now), fields(job_id = %req.job_id))]
pub async fn allocate(req: &AllocateRequest, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    if let Err(r) = validate_allocate(req) {
        if check_job_id(&req.job_id).is_ok() {
            reject_job(ctx, &req.job_id, r.reason.code(), &r.message).await?;
        }
        return Err(r.into());
    }
    // The claim key is the same for every delivery of this request; the token is this delivery's.
    let claim = job::claim_key(req);
    let me = job::new_claim_token();
    if job::create_pending(req, &claim, &me, now)
        .apply(ctx.store.as_ref(), &req.job_id)
        .await?
    {
        return place(req, &me, ctx, now).await;
    }
    // Seen before: settled (answer it once), or pending under an earlier claim.
    let started = tokio::time::Instant::now();
    loop {
        let Some(item) = ctx.store.get(Table::Jobs, &req.job_id).await? else {
            return Err(Failure::retry("job vanished"));
        };
        if job_state(&item) != Some(JobState::Pending) {
            return answer_settled(ctx, &item, &req.job_id).await;
        }
        let now = now + elapsed(started);
        // A redelivery of the same request takes its own claim at once (the earlier delivery of
        // it failed or stalled); another request under the same id waits out the lease.
        let own = item.get(job::attr::CLAIM).and_then(Value::as_str) == Some(claim.as_str());
        let stale = (!own).then(|| job::stale_before(now, OWNER_TIMEOUT_S));
        let claimed = item.get(job::attr::CLAIMED_AT).and_then(Value::as_i64).unwrap_or(0);
        if stale.is_some_and(|s| claimed >= s) {
            if started.elapsed() > max_wait() {
                return Err(Failure::retry("another request for this job is placing it"));
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        let old = item.get(job::attr::OWNER).and_then(Value::as_str);
        let Some(mine) = job::take_claim(old, stale, &claim, &me, now)
            .run_raw(ctx.store.as_ref(), &req.job_id)
            .await?
        else {
            continue; // another delivery took it in between: look again
        };
        return match job::finish_committed(ctx.store.as_ref(), &req.job_id, &mine, &me).await? {
            Finish::Allocated(item) => answer_settled(ctx, &item, &req.job_id).await,
            Finish::Lost => Ok(()), // the delivery that took it over answers
            Finish::NothingCommitted => place(req, &me, ctx, now).await,
        };
    }
}

/// How often a delivery waiting on a job that is being placed looks again.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest a delivery waits in the handler for another claim to settle or go stale: past
/// the lease, so a wait always ends in a takeover rather than a redelivery (the transports
/// dead-letter after a few quick retries, long before the lease runs out).
fn max_wait() -> std::time::Duration {
    std::time::Duration::from_secs(OWNER_TIMEOUT_S as u64 + 5)
}

fn elapsed(since: tokio::time::Instant) -> Duration {
    Duration::from_std(since.elapsed()).unwrap_or_else(|_| Duration::zero())
}

/// A commit that came back false may still have applied: its answer lost and its resend past
/// the writes the item remembers. Its entry, under this delivery's owner token, says so (one
/// read, only after a failed commit).
async fn committed_by_me(store: &dyn ItemStore, provider_id: &str, job_id: &str, me: &str) -> Result<bool, Failure> {
    let item = store.get(Table::Providers, provider_id).await?;
    Ok(item.is_some_and(|i| worldland_core::ledger::held_by(&i, job_id, me)))
}

async fn place(req: &AllocateRequest, me: &str, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    for round in 0..MAX_ROUNDS {
        let ranked = match ctx.placer.ranking(ctx.store.as_ref(), req, round).await? {
            Ok(r) => r,
            Err(no) => return settle_rejected(req, no.code(), "no available provider can take this job", me, ctx).await,
        };
        for choice in ranked.iter().take(MAX_ATTEMPTS) {
            let attempt = job::Transition::new(job::owned_by(me), vec![Op::set(job::attr::ATTEMPT, choice.provider_id.as_str())]);
            if !attempt.apply(ctx.store.as_ref(), &req.job_id).await? {
                return Ok(()); // taken over by another delivery, which answers
            }
            if commit_allocation(&choice.allocation(req, me, now))
                .apply(ctx.store.as_ref(), &choice.provider_id)
                .await?
                || committed_by_me(ctx.store.as_ref(), &choice.provider_id, &req.job_id, me).await?
            {
                return finalize(req, choice, ms(now), me, ctx).await;
            }
            ctx.stats.condition_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    settle_rejected(
        req,
        NoPlacement::NoCapacity.code(),
        "every candidate filled up while placing",
        me,
        ctx,
    )
    .await
}

async fn settle_rejected(req: &AllocateRequest, reason: &str, message: &str, me: &str, ctx: &Context) -> Result<(), Failure> {
    let mut t = job::rejected(reason, message);
    t.cond = t.cond.and(Cond::eq(job::attr::OWNER, me));
    match t.run_raw(ctx.store.as_ref(), &req.job_id).await? {
        Some(item) => answer_settled(ctx, &item, &req.job_id).await,
        None => Ok(()),
    }
}

/// The provider holds the allocation: record it on the job (only its owner may), or undo it.
async fn finalize(req: &AllocateRequest, choice: &Choice, started_at_ms: i64, me: &str, ctx: &Context) -> Result<(), Failure> {
    let allocated = JobAllocated {
        job_id: req.job_id.clone(),
        customer_id: req.customer_id.clone(),
        provider_id: choice.provider_id.clone(),
        node_name: choice.node_name.clone(),
        node_selector: node_selector(&choice.provider_id, &choice.model_key),
        gpu_model: choice.model_key.clone(),
        gpus: req.gpus,
        cpu_cores: req.cpu_cores,
        memory_mb: req.memory_mb,
        price_per_gpu_hour_micros: choice.price_micros,
        mining_gpus_taken: choice.take_mining as u32,
    };
    let due = req.duration_s.map(|d| started_at_ms + d as i64 * 1000);
    let t = job::allocated_by(&allocated, started_at_ms, due, me);
    let Some(item) = t.run_raw(ctx.store.as_ref(), &req.job_id).await? else {
        // Another delivery owns the job now: give back what this one took, unless that delivery
        // has adopted it (the entry's owner is no longer this delivery's token).
        job::undo_owned(ctx.store.as_ref(), &req.job_id, &choice.provider_id, me).await?;
        return Ok(());
    };
    tracing::info!(provider_id = %choice.provider_id, gpus = req.gpus, mining = choice.take_mining, "allocated");
    answer_settled(ctx, &item, &req.job_id).await
}

#[instrument(skip(req, ctx, now), fields(job_id = %req.job_id))]
pub async fn release(req: &ReleaseRequest, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    check_job_id(&req.job_id)?;
    let reason = if req.reason.trim().is_empty() {
        EndReason::Released.as_str()
    } else {
        req.reason.as_str()
    };
    if reason.len() > 128 {
        return Err(invalid("reason is over 128 characters").into());
    }
    let Some(mut item) = ctx.store.get(Table::Jobs, &req.job_id).await? else {
        // Released before it was ever allocated: a tombstone, so a late allocate is refused.
        job::cancelled_before_allocation(reason, now)
            .run_raw(ctx.store.as_ref(), &req.job_id)
            .await?;
        return Ok(());
    };
    if job_state(&item) == Some(JobState::Pending) {
        item = wait_for_placement(&req.job_id, reason, ctx, now).await?;
    }
    match job_state(&item) {
        Some(JobState::Pending) => return Err(Failure::retry("the job is being placed; release it once placed")),
        Some(JobState::Allocated) => {}
        Some(JobState::Released) => return answer_release(ctx, Some(&item), &req.job_id).await,
        _ => return Ok(()), // rejected or cancelled: nothing to give back
    }
    let Some(closed) = close_job_item(ctx.store.as_ref(), &req.job_id, &item, reason, now).await? else {
        let item = ctx.store.get(Table::Jobs, &req.job_id).await?;
        return answer_release(ctx, item.as_ref(), &req.job_id).await;
    };
    if let Some(resume) = &closed.resume {
        ctx.replies.command(&closed.released.provider_id, resume).await?;
    }
    publish(ctx, &req.job_id, &closed.released).await?;
    job::release_answered().apply(ctx.store.as_ref(), &req.job_id).await?;
    Ok(())
}

/// A release met a job being placed: waits in the handler (the transports dead-letter after a
/// few quick retries, long before a claim's lease runs out) until the placement settles, or its
/// claim goes stale — then resolves it: finishes a commit that landed (answered `job.allocated`,
/// and this release then closes it) or cancels the job (answered `job.rejected` `cancelled`).
async fn wait_for_placement(job_id: &str, reason: &str, ctx: &Context, now: DateTime<Utc>) -> Result<Item, Failure> {
    let started = tokio::time::Instant::now();
    let me = job::new_claim_token();
    loop {
        let now = now + elapsed(started);
        let stale = job::stale_before(now, OWNER_TIMEOUT_S);
        match job::resolve_pending(ctx.store.as_ref(), job_id, &me, stale, RollBack::Cancel { reason }, now).await? {
            Resolution::Settled(item) => return Ok(item),
            Resolution::Allocated(item) | Resolution::RolledBack(item) => {
                answer_settled(ctx, &item, job_id).await?;
                return Ok(item);
            }
            Resolution::Gone => return Err(Failure::retry("job vanished")),
            Resolution::Busy if started.elapsed() > max_wait() => return Err(Failure::retry("the job is still being placed")),
            Resolution::Busy => tokio::time::sleep(POLL).await,
        }
    }
}

/// A job closed earlier (by this release, the sweeper or a duplicate) whose `job.released` may
/// not have gone out yet.
async fn answer_release(ctx: &Context, item: Option<&Item>, job_id: &str) -> Result<(), Failure> {
    let Some(item) = item else { return Ok(()) };
    let Some(released) = job::release_owed(job_id, item) else {
        return Ok(());
    };
    // The close that answered nothing (its answer lost) owed the provider its mining back too.
    if let Some((provider_id, resume)) = job::resume_owed(job_id, item) {
        ctx.replies.command(&provider_id, &resume).await?;
    }
    publish(ctx, job_id, &released).await?;
    job::release_answered().apply(ctx.store.as_ref(), job_id).await?;
    Ok(())
}

pub struct Allocator(pub Context);

#[async_trait]
impl Consume for Allocator {
    type Inbound = ToAllocator;
    async fn consume(&self, msg: ToAllocator, now: DateTime<Utc>) -> Result<(), Failure> {
        match msg {
            ToAllocator::Allocate(req) => allocate(&req, &self.0, now).await,
            ToAllocator::Release(req) => release(&req, &self.0, now).await,
        }
    }
}

/// The allocator's context from the process's backends: the one wiring its container, its
/// Lambda, `worldland up` and the demo share (clients made once per process, never in the handler).
pub async fn context(b: &Backends) -> Result<Context, BackendError> {
    Ok(Context::new(b.store().await?, b.bus(), b.replies().await?))
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::consumer(Allocator(context(&b).await?)))
}
