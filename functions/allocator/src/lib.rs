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
use worldland_core::bus::Bus;
use worldland_core::jobs::close_job_item;
use worldland_core::ledger::job::JobState;
use worldland_core::ledger::{self, commit_allocation, job, node_selector, rank, release_allocation, Candidate, Choice, Ledger};
use worldland_core::messages::jobs::{AllocateRequest, JobAllocated, JobRejected, JobReleased, MiningCommand, ReleaseRequest, MINING_STOP};
use worldland_core::messages::{topics, MAX_ENTRY_BYTES};
use worldland_core::replies::ProviderReplies;
use worldland_core::state::providers::ms;
use worldland_core::state::{Cond, Item, ItemStore, Op, Table, Value};
use worldland_core::validation::{check_provider_id, Reason, Rejection};
use worldland_core::worker::{decode, Failure, Handler};
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::Worker;

pub const WORKER: &str = worldland_core::bus::routes::ALLOCATOR.0;
pub const BINDINGS: &[&str] = worldland_core::bus::routes::ALLOCATOR.1;

/// How many candidates one allocation tries before it re-reads the fleet.
pub const MAX_ATTEMPTS: usize = 5;
/// How many times it re-reads the fleet before answering `no_capacity`.
pub const MAX_ROUNDS: usize = 3;
/// A pending job untouched this long belongs to a delivery that died: another may take it over.
pub const OWNER_TIMEOUT_S: i64 = 30;

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub bus: Arc<dyn Bus>,
    pub replies: Arc<dyn ProviderReplies>,
    /// The fleet as last read, reused for a moment: placement only orders candidates, the
    /// conditional write decides, and a refusal is always checked against a fresh read.
    fleet: std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<Candidate>>)>>,
}

/// How long a read of the fleet serves placement before it is read again.
pub const FLEET_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(100);

impl Context {
    pub fn new(store: Arc<dyn ItemStore>, bus: Arc<dyn Bus>, replies: Arc<dyn ProviderReplies>) -> Self {
        Self {
            store,
            bus,
            replies,
            fleet: std::sync::Mutex::new(None),
        }
    }
}

/// Counts for benchmarks and logs.
#[derive(Debug, Default)]
pub struct Stats {
    pub condition_failures: std::sync::atomic::AtomicU64,
}

pub static STATS: Stats = Stats {
    condition_failures: std::sync::atomic::AtomicU64::new(0),
};

const OWNER: &str = "owner";
const CLAIMED_AT: &str = "claimed_at";

fn invalid(msg: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidRequest, msg)
}

/// The rules a request must meet; pure.
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
    Ok(())
}

/// Job ids name map keys and items: the provider-id alphabet, no dots.
pub fn check_job_id(id: &str) -> Result<(), Rejection> {
    check_provider_id(id).map_err(|_| invalid("job_id must be a UUID or 1-63 characters of a-z, 0-9 and '-'"))
}

fn job_state(item: &Item) -> Option<JobState> {
    JobState::of(item)
}

async fn publish<T: serde::Serialize>(ctx: &Context, topic: &str, id: &str, msg: &T) -> Result<(), Failure> {
    let body = serde_json::to_vec(msg).expect("serialises");
    ctx.bus.publish(topic, &format!("{topic}/{id}"), &body).await?;
    Ok(())
}

async fn reject_job(ctx: &Context, job_id: &str, reason: &str, message: &str) -> Result<(), Failure> {
    let r = JobRejected {
        job_id: job_id.into(),
        reason: reason.into(),
        message: message.into(),
    };
    publish(ctx, topics::JOB_REJECTED, job_id, &r).await
}

/// Publishes the stored answer of a settled job once, then marks it answered.
async fn answer_settled(ctx: &Context, item: &Item, job_id: &str) -> Result<(), Failure> {
    if item.get(job::attr::ANSWERED).and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    match job_state(item) {
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
                ctx.replies.command(&a.provider_id, &stop).await?;
            }
            publish(ctx, topics::JOB_ALLOCATED, job_id, &a).await?;
        }
        Some(JobState::Rejected) => {
            let text = item.get(job::attr::REJECTION).and_then(Value::as_str).unwrap_or("rejected: ");
            let (reason, message) = text.split_once(": ").unwrap_or((text, ""));
            reject_job(ctx, job_id, reason, message).await?;
        }
        Some(JobState::Cancelled | JobState::Released) => {
            reject_job(ctx, job_id, "cancelled", "the job was released before it was allocated").await?;
        }
        _ => return Ok(()),
    }
    job::answered(job::attr::ANSWERED)
        .apply_on(ctx.store.as_ref(), Table::Jobs, job_id)
        .await?;
    Ok(())
}

/// The available providers with a ledger, from the recent read when `fresh` is not required.
async fn candidates(ctx: &Context, fresh: bool) -> Result<Arc<Vec<Candidate>>, Failure> {
    if !fresh {
        if let Some((at, fleet)) = ctx.fleet.lock().expect("fleet lock").as_ref() {
            if at.elapsed() < FLEET_MAX_AGE {
                return Ok(fleet.clone());
            }
        }
    }
    let fleet = Arc::new(read_fleet(ctx).await?);
    *ctx.fleet.lock().expect("fleet lock") = Some((std::time::Instant::now(), fleet.clone()));
    Ok(fleet)
}

/// Reads the available providers with a ledger as placement candidates.
async fn read_fleet(ctx: &Context) -> Result<Vec<Candidate>, Failure> {
    const PLACEMENT_ATTRS: &[&str] = &[
        "node_name",
        "price_micros",
        ledger::attr::LEDGER,
        ledger::attr::GPUS_TOTAL,
        ledger::attr::GPUS_FREE,
        ledger::attr::GPUS_USED,
        ledger::attr::GPUS_MINING,
        ledger::attr::CPU_TOTAL,
        ledger::attr::CPU_FREE,
        ledger::attr::CPU_USED,
        ledger::attr::MEM_TOTAL,
        ledger::attr::MEM_FREE,
        ledger::attr::MEM_USED,
    ];
    // Only what placement needs: not the spec, not the open allocations.
    let items = ctx
        .store
        .query_by_state_projected(Table::Providers, "available", None, PLACEMENT_ATTRS)
        .await?;
    Ok(items
        .iter()
        .filter_map(|item| {
            Some(Candidate {
                provider_id: item.get("id")?.as_str()?.to_string(),
                node_name: item.get("node_name")?.as_str()?.to_string(),
                price_micros: item.get("price_micros")?.as_i64()?,
                ledger: Ledger::from_item(item)?,
            })
        })
        .collect())
}

#[instrument(skip(req, ctx, now), fields(job_id = %req.job_id))]
pub async fn allocate(req: &AllocateRequest, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    if let Err(r) = validate_allocate(req) {
        if check_job_id(&req.job_id).is_ok() {
            reject_job(ctx, &req.job_id, r.reason.code(), &r.message).await?;
        }
        return Err(r.into());
    }
    let me = uuid::Uuid::new_v4().simple().to_string();
    let mut create = job::create_pending(req, now);
    create.ops.extend([Op::set(OWNER, me.as_str()), Op::set(CLAIMED_AT, ms(now))]);
    if !create.apply_on(ctx.store.as_ref(), Table::Jobs, &req.job_id).await? {
        // Seen before: settled (answer it once) or pending under another delivery.
        let Some(item) = ctx.store.get(Table::Jobs, &req.job_id).await? else {
            return Err(Failure::retry("job vanished"));
        };
        if job_state(&item) != Some(JobState::Pending) {
            return answer_settled(ctx, &item, &req.job_id).await;
        }
        return take_over(req, &item, &me, ctx, now).await;
    }
    place(req, &me, ctx, now).await
}

/// A job pending under another delivery: retried while that delivery may be alive; once it has
/// timed out, taken over, finishing what it may have committed or else placing afresh.
async fn take_over(req: &AllocateRequest, item: &Item, me: &str, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let claimed = item.get(CLAIMED_AT).and_then(Value::as_i64).unwrap_or(0);
    if claimed > ms(now - Duration::seconds(OWNER_TIMEOUT_S)) {
        return Err(Failure::retry("another delivery of this job is placing it"));
    }
    let old = item.get(OWNER).cloned().unwrap_or(Value::from(""));
    let takeover = worldland_core::state::providers::Transition {
        cond: Cond::eq(job::attr::STATE, JobState::Pending).and(Cond::Eq(OWNER.into(), old)),
        ops: vec![Op::set(OWNER, me), Op::set(CLAIMED_AT, ms(now))],
    };
    if takeover.run_raw_on(ctx.store.as_ref(), Table::Jobs, &req.job_id).await?.is_none() {
        return Err(Failure::retry("lost the takeover race"));
    }
    if let Some(p) = item.get(job::attr::ATTEMPT).and_then(Value::as_str) {
        if let Some(prov) = ctx.store.get(Table::Providers, p).await? {
            if let Some((choice, started_at_ms)) = committed(&prov, p, &req.job_id) {
                return finalize(req, &choice, started_at_ms, me, ctx).await;
            }
        }
    }
    place(req, me, ctx, now).await
}

/// The allocation a dead delivery committed on provider `p` for `job_id`, as a choice to
/// finalize, with when it started.
fn committed(prov: &Item, p: &str, job_id: &str) -> Option<(Choice, i64)> {
    let alloc = Ledger::from_item(prov).and_then(|l| l.allocs.get(job_id).cloned())?;
    let choice = Choice {
        provider_id: p.to_string(),
        node_name: prov.get("node_name").and_then(Value::as_str).unwrap_or("").to_string(),
        model_key: alloc.model_key.clone(),
        take_free: alloc.gpus - alloc.mining_taken,
        take_mining: alloc.mining_taken,
        price_micros: alloc.price_micros,
        leftover_gpus: 0,
        leftover_cpu: 0,
    };
    Some((choice, alloc.started_at_ms))
}

async fn place(req: &AllocateRequest, me: &str, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    for round in 0..MAX_ROUNDS {
        // The first round may use the recent read; later rounds, and any refusal, read afresh.
        let mut fleet = candidates(ctx, round > 0).await?;
        let mut ranked = rank(&fleet, req);
        if ranked.is_err() && round == 0 {
            fleet = candidates(ctx, true).await?;
            ranked = rank(&fleet, req);
        }
        let ranked = match ranked {
            Ok(r) => r,
            Err(no) => return settle_rejected(req, no.code(), "no available provider can take this job", me, ctx).await,
        };
        for choice in ranked.iter().take(MAX_ATTEMPTS) {
            let attempt = worldland_core::state::providers::Transition {
                cond: Cond::eq(job::attr::STATE, JobState::Pending).and(Cond::eq(OWNER, me)),
                ops: vec![Op::set(job::attr::ATTEMPT, choice.provider_id.as_str())],
            };
            if !attempt.apply_on(ctx.store.as_ref(), Table::Jobs, &req.job_id).await? {
                return Ok(()); // taken over by another delivery, which answers
            }
            if commit_allocation(choice, req, now)
                .apply_on(ctx.store.as_ref(), Table::Providers, &choice.provider_id)
                .await?
            {
                return finalize(req, choice, ms(now), me, ctx).await;
            }
            STATS.condition_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    settle_rejected(req, "no_capacity", "every candidate filled up while placing", me, ctx).await
}

async fn settle_rejected(req: &AllocateRequest, reason: &str, message: &str, me: &str, ctx: &Context) -> Result<(), Failure> {
    let mut t = job::rejected(reason, message);
    t.cond = t.cond.and(Cond::eq(OWNER, me));
    match t.run_raw_on(ctx.store.as_ref(), Table::Jobs, &req.job_id).await? {
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
    let mut t = job::allocated(&allocated, started_at_ms, due);
    t.cond = t.cond.and(Cond::eq(OWNER, me));
    let Some(item) = t.run_raw_on(ctx.store.as_ref(), Table::Jobs, &req.job_id).await? else {
        // Another delivery owns the job now: give back what this one took.
        let prov = ctx.store.get(Table::Providers, &choice.provider_id).await?;
        if let Some(alloc) = prov
            .as_ref()
            .and_then(Ledger::from_item)
            .and_then(|l| l.allocs.get(&req.job_id).cloned())
        {
            release_allocation(&alloc).run_raw(ctx.store.as_ref(), &choice.provider_id).await?;
        }
        return Ok(());
    };
    tracing::info!(provider_id = %choice.provider_id, gpus = req.gpus, mining = choice.take_mining, "allocated");
    answer_settled(ctx, &item, &req.job_id).await
}

#[instrument(skip(req, ctx, now), fields(job_id = %req.job_id))]
pub async fn release(req: &ReleaseRequest, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    check_job_id(&req.job_id)?;
    let reason = if req.reason.trim().is_empty() {
        "released"
    } else {
        req.reason.as_str()
    };
    if reason.len() > 128 {
        return Err(invalid("reason is over 128 characters").into());
    }
    let Some(item) = ctx.store.get(Table::Jobs, &req.job_id).await? else {
        // Released before it was ever allocated: a tombstone, so a late allocate is refused.
        job::cancelled_before_allocation(reason, now)
            .run_raw_on(ctx.store.as_ref(), Table::Jobs, &req.job_id)
            .await?;
        return Ok(());
    };
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
    publish(ctx, topics::JOB_RELEASED, &req.job_id, &closed.released).await?;
    job::answered(job::attr::RELEASE_ANSWERED)
        .apply_on(ctx.store.as_ref(), Table::Jobs, &req.job_id)
        .await?;
    Ok(())
}

/// A job closed earlier (by this release, the sweeper or a duplicate) whose `job.released` may
/// not have gone out yet.
async fn answer_release(ctx: &Context, item: Option<&Item>, job_id: &str) -> Result<(), Failure> {
    let Some(item) = item else { return Ok(()) };
    if item.get(job::attr::RELEASE_ANSWERED).and_then(Value::as_bool) == Some(true) || job_state(item) != Some(JobState::Released) {
        return Ok(());
    }
    let n = |a: &str| item.get(a).and_then(Value::as_i64).unwrap_or(0);
    let released = JobReleased {
        job_id: job_id.into(),
        provider_id: item.get(job::attr::PROVIDER).and_then(Value::as_str).unwrap_or("").into(),
        reason: item.get(job::attr::END_REASON).and_then(Value::as_str).unwrap_or("").into(),
        duration_ms: n(job::attr::DURATION_MS),
        cost_micros: n(job::attr::COST_MICROS),
    };
    publish(ctx, topics::JOB_RELEASED, job_id, &released).await?;
    job::answered(job::attr::RELEASE_ANSWERED)
        .apply_on(ctx.store.as_ref(), Table::Jobs, job_id)
        .await?;
    Ok(())
}

pub struct Allocator(pub Context);

#[async_trait]
impl Handler for Allocator {
    fn name(&self) -> &'static str {
        WORKER
    }
    fn bindings(&self) -> &'static [&'static str] {
        BINDINGS
    }
    async fn handle(&self, routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Failure> {
        if body.len() > MAX_ENTRY_BYTES {
            return Err(Failure::refuse(
                Reason::EntryTooLarge,
                format!("message is {} bytes; the limit is {MAX_ENTRY_BYTES}", body.len()),
            ));
        }
        match routing_key {
            topics::JOB_ALLOCATE => allocate(&decode(body, "a job.allocate request")?, &self.0, now).await,
            topics::JOB_RELEASE => release(&decode(body, "a job.release request")?, &self.0, now).await,
            other => Err(invalid(format!("the allocator does not handle {other}")).into()),
        }
    }
}

/// The worker built from configuration, its clients made once per process (container or Lambda
/// cold start), never inside the handler.
pub async fn worker(cfg: worldland_runtime::Config, bus: Arc<dyn Bus>) -> Result<Worker, BackendError> {
    use worldland_runtime::backends;
    let replies = backends::replies(&cfg).await?;
    let ctx = Context::new(backends::store(&cfg).await, bus, replies);
    Ok(Worker::Consumer(Arc::new(Allocator(ctx))))
}
