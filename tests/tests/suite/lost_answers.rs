//! Writes that applied but whose answer was lost, and the SDK's retry that sends the same request
//! again (`Fault::LostAnswerReplayed`): every store recognises its own replay (`state::replay`),
//! so no worker reads its own write as someone else's. Each scenario below failed before that:
//! the allocator gave back GPUs it held, took a second provider and left an orphan on the first,
//! the sweeper took a provider it had marked offline for a heartbeat and never closed its jobs,
//! and answers went missing. The sweeper also closes a job only through the provider its
//! allocation names, and gives back orphan entries.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::job::{self, audit, JobState};
use worldland_core::ledger::{commit_allocation, Allocation};
use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest, Workload};
use worldland_core::messages::topics;
use worldland_core::state::{Cond, ItemStore, Op, Table, Value};
use worldland_tests::faulty_store::{Fault, FaultyStore};
use worldland_tests::ledger_fixture::Fx;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
}

pub(crate) fn alloc(job: &str, gpus: u32) -> AllocateRequest {
    AllocateRequest {
        job_id: job.into(),
        customer_id: "cust-1".into(),
        gpu_model: None,
        gpus,
        cpu_cores: 2,
        memory_mb: 4096,
        max_price_per_gpu_hour: None,
        duration_s: None,
        workload: Workload::of_image("docker.io/library/python:3.12-slim"),
    }
}

pub(crate) fn release(job: &str) -> ReleaseRequest {
    ReleaseRequest {
        job_id: job.into(),
        reason: String::new(),
    }
}

/// Scenario 1: the job's `allocated` write lands, its answer is lost, the retry meets it. Before,
/// the allocator read that as another delivery owning the job and gave back the GPUs the
/// allocated job holds (billed, the ledger free).
#[tokio::test]
async fn a_lost_answer_on_the_allocated_write_keeps_the_gpus() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let p = fx.providers[0].clone();
    // The job's writes: create (0), attempt (1), allocated (2), answered (3).
    fx.faulty
        .arm(Table::Jobs, "job-1", 2, worldland_tests::faulty_store::Fault::LostAnswerReplayed);
    allocator::allocate(&alloc("job-1", 2), &fx.ctx(), t0()).await.unwrap();
    assert!(fx.faulty.all_fired());
    assert_eq!(fx.state("job-1").await, Some(JobState::Allocated));
    assert_eq!(fx.used(&p).await, 2, "the allocated job keeps its GPUs");
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-1")]).await;
}

/// Scenario 1, every write lost: each of the job's and the provider's writes applies, loses its
/// answer and is replayed; allocate and release still end allocated-then-released, answered
/// once, the ledger whole.
#[tokio::test]
async fn every_answer_lost_through_allocate_and_release() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let p = fx.providers[0].clone();
    fx.faulty.lose_next(Table::Jobs, "job-1", 20);
    fx.faulty.lose_next(Table::Providers, &p, 20);
    allocator::allocate(&alloc("job-1", 3), &fx.ctx(), t0()).await.unwrap();
    assert_eq!(fx.state("job-1").await, Some(JobState::Allocated));
    assert_eq!(fx.used(&p).await, 3);
    fx.audit_clean().await;
    allocator::release(&release("job-1"), &fx.ctx(), t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(fx.state("job-1").await, Some(JobState::Released));
    assert_eq!(fx.used(&p).await, 0);
    assert_eq!(
        fx.job("job-1").await.get(job::attr::COST_MICROS).and_then(Value::as_i64),
        Some(1_500_000)
    );
    fx.faulty.disarm();
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-1"), (topics::JOB_RELEASED, "job-1")])
        .await;
}

/// Scenario 2: the commit on the cheapest provider lands, its answer is lost, the retry fails
/// `attribute_not_exists(allocs.<job>)`. Before, the allocator read "provider full", committed
/// on the next provider too and left an orphan entry on the first.
#[tokio::test]
async fn a_commit_that_landed_is_not_read_as_a_full_provider() {
    let mut fx = Fx::new(&[(8, 0), (8, 0)], t0()).await;
    let (a, b) = (fx.providers[0].clone(), fx.providers[1].clone());
    fx.faulty.lose_next(Table::Providers, &a, 1);
    allocator::allocate(&alloc("job-2", 2), &fx.ctx(), t0()).await.unwrap();
    assert!(fx.faulty.all_fired());
    let job = fx.job("job-2").await;
    assert_eq!(job.get(job::attr::PROVIDER).and_then(Value::as_str), Some(a.as_str()));
    assert_eq!((fx.used(&a).await, fx.used(&b).await), (2, 0), "one provider holds the job");
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-2")]).await;
}

/// Scenario 2, beyond the store's memory: the commit lands, its answer is lost, and four writes
/// by others land before the SDK's retry, so the store no longer recognises it and answers
/// "condition false". The allocator finds its own entry (its owner token) and keeps the job there
/// instead of reading "provider full".
#[tokio::test]
async fn a_commit_whose_retry_comes_after_other_writes_is_still_recognised() {
    let mut fx = Fx::new(&[(8, 0), (8, 0)], t0()).await;
    let (a, b) = (fx.providers[0].clone(), fx.providers[1].clone());
    fx.faulty.arm(Table::Providers, &a, 0, Fault::LostPastTheRing);
    allocator::allocate(&alloc("job-2r", 2), &fx.ctx(), t0()).await.unwrap();
    assert!(fx.faulty.all_fired());
    let job = fx.job("job-2r").await;
    assert_eq!(job.get(job::attr::PROVIDER).and_then(Value::as_str), Some(a.as_str()));
    assert_eq!((fx.used(&a).await, fx.used(&b).await), (2, 0), "one provider holds the job");
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-2r")]).await;
}

/// Scenario 3: the sweeper's offline mark lands, its answer is lost. Before, it read the failed
/// retry as "a heartbeat landed", closed no job, and never looked at the provider again: billed
/// forever.
#[tokio::test]
async fn a_lost_answer_on_the_offline_mark_still_closes_the_jobs() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let p = fx.providers[0].clone();
    allocator::allocate(&alloc("job-3", 2), &fx.ctx(), t0()).await.unwrap();
    fx.faulty.lose_next(Table::Providers, &p, 1);
    let sweeper = fx.sweeper();
    let late = t0() + Duration::seconds(600);
    let r = staleness_sweeper::sweep_once(&sweeper, late).await.unwrap();
    assert!(fx.faulty.all_fired());
    assert_eq!((r.marked_offline, r.jobs_closed), (1, 1), "{r:?}");
    assert_eq!(fx.state("job-3").await, Some(JobState::Released));
    assert_eq!(fx.used(&p).await, 0);
    // Billed to its last heartbeat (t0), not to the sweep.
    assert_eq!(fx.job("job-3").await.get(job::attr::COST_MICROS).and_then(Value::as_i64), Some(0));
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-3"), (topics::JOB_RELEASED, "job-3")])
        .await;
}

/// Scenario 4a: a rejection whose write's answer was lost is still published.
#[tokio::test]
async fn a_lost_answer_on_a_rejection_still_answers() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    // The job's writes: create (0), rejected (1).
    fx.faulty
        .arm(Table::Jobs, "job-4", 1, worldland_tests::faulty_store::Fault::LostAnswerReplayed);
    allocator::allocate(&alloc("job-4", 64), &fx.ctx(), t0()).await.unwrap();
    assert!(fx.faulty.all_fired());
    assert_eq!(fx.state("job-4").await, Some(JobState::Rejected));
    fx.answered(&[(topics::JOB_REJECTED, "job-4")]).await;
}

/// Scenario 4b: a release of a job that took mining GPUs whose close's answer was lost still
/// sends `mining.resume` with its `job.released`, from the allocator and from the sweeper.
#[tokio::test]
async fn a_lost_answer_on_a_close_still_resumes_mining() {
    let mut fx = Fx::new(&[(4, 2), (4, 2)], t0()).await;
    let (a, b) = (fx.providers[0].clone(), fx.providers[1].clone());
    allocator::allocate(&alloc("job-r", 3), &fx.ctx(), t0()).await.unwrap();
    allocator::allocate(&alloc("job-s", 3), &fx.ctx(), t0()).await.unwrap();
    assert_eq!((fx.used(&a).await, fx.used(&b).await), (3, 3));
    // Provider b goes silent: the sweeper interrupts job-s (a's heartbeat kept fresh).
    let late = t0() + Duration::seconds(600);
    fresh_heartbeat(fx.store.as_ref(), &a, late).await;
    // The closing writes (the provider's release, the job's close, b's offline mark): every
    // answer lost.
    for (job, p) in [("job-r", &a), ("job-s", &b)] {
        fx.faulty.lose_next(Table::Jobs, job, 3);
        fx.faulty.lose_next(Table::Providers, p, 2);
    }
    allocator::release(&release("job-r"), &fx.ctx(), t0() + Duration::seconds(60))
        .await
        .unwrap();
    staleness_sweeper::sweep_once(&fx.sweeper(), late).await.unwrap();
    fx.faulty.disarm();
    for (job, p) in [("job-r", &a), ("job-s", &b)] {
        assert_eq!(fx.state(job).await, Some(JobState::Released), "{job}");
        let kinds: Vec<String> = fx.replies.commands_for(p).iter().map(|c| c.kind.clone()).collect();
        assert_eq!(kinds, vec!["mining.stop", "mining.resume"], "{job} on {p}");
    }
    fx.audit_clean().await;
    fx.answered(&[
        (topics::JOB_ALLOCATED, "job-r"),
        (topics::JOB_ALLOCATED, "job-s"),
        (topics::JOB_RELEASED, "job-r"),
        (topics::JOB_RELEASED, "job-s"),
    ])
    .await;
}

/// Scenario 4c: the sweeper's rollback of a job stranded pending, its answer lost, is still
/// answered `job.rejected`.
#[tokio::test(start_paused = true)]
async fn a_lost_answer_on_a_rollback_still_answers() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let p = fx.providers[0].clone();
    fx.faulty
        .arm(Table::Providers, &p, 0, worldland_tests::faulty_store::Fault::FailBeforeApply);
    assert!(allocator::allocate(&alloc("job-5", 2), &fx.ctx(), t0()).await.is_err());
    assert_eq!(fx.state("job-5").await, Some(JobState::Pending));
    fx.faulty.lose_next(Table::Jobs, "job-5", 5);
    let late = t0() + Duration::seconds(31);
    staleness_sweeper::pending_jobs::resolve_stale_pending(&fx.sweeper(), late)
        .await
        .unwrap();
    fx.faulty.disarm();
    assert_eq!(fx.state("job-5").await, Some(JobState::Rejected));
    assert_eq!(fx.used(&p).await, 0);
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_REJECTED, "job-5")]).await;
}

/// An orphan entry (the job allocated on `a`, and held on `b` too, as a lost commit answer used
/// to leave): when `b` goes offline the sweeper never closes the job through it — the job stays
/// allocated and billed on `a` — and gives `b`'s entry back. Before, it closed the job by its id:
/// `a`'s allocation released, the bill cut.
#[tokio::test]
async fn the_sweeper_never_closes_a_job_through_the_wrong_provider() {
    let mut fx = Fx::new(&[(8, 0), (8, 0)], t0()).await;
    let (a, b) = (fx.providers[0].clone(), fx.providers[1].clone());
    allocator::allocate(&alloc("job-6", 2), &fx.ctx(), t0()).await.unwrap();
    assert_eq!(
        fx.job("job-6").await.get(job::attr::PROVIDER).and_then(Value::as_str),
        Some(a.as_str())
    );
    plant_orphan(&fx, &b, "job-6").await;
    assert!(!audit(fx.store.as_ref()).await.unwrap().is_empty(), "the orphan is reported");
    // b goes silent; a keeps heartbeating.
    let late = t0() + Duration::seconds(600);
    fresh_heartbeat(fx.store.as_ref(), &a, late).await;
    let r = staleness_sweeper::sweep_once(&fx.sweeper(), late).await.unwrap();
    assert_eq!((r.marked_offline, r.jobs_closed), (1, 0), "{r:?}");
    assert_eq!(fx.state("job-6").await, Some(JobState::Allocated), "still allocated on a");
    assert_eq!((fx.used(&a).await, fx.used(&b).await), (2, 0), "the orphan given back");
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-6")]).await;
}

/// The reconcile pass gives back orphan entries on providers that stay available: entries for a
/// job allocated elsewhere, or settled (released); an entry of a job still being placed is left
/// to its owner.
#[tokio::test]
async fn the_reconcile_pass_gives_back_orphan_entries() {
    let mut fx = Fx::new(&[(8, 0), (8, 0)], t0()).await;
    let (a, b) = (fx.providers[0].clone(), fx.providers[1].clone());
    allocator::allocate(&alloc("job-7", 2), &fx.ctx(), t0()).await.unwrap();
    allocator::allocate(&alloc("job-8", 1), &fx.ctx(), t0()).await.unwrap();
    allocator::release(&release("job-8"), &fx.ctx(), t0()).await.unwrap();
    plant_orphan(&fx, &b, "job-7").await;
    plant_orphan(&fx, &b, "job-8").await;
    // A job being placed (pending, its commit on b landed, its job write not yet).
    let placing = fx.faulty.clone();
    placing.arm(Table::Jobs, "job-9", 2, worldland_tests::faulty_store::Fault::FailBeforeApply);
    assert!(allocator::allocate(&alloc("job-9", 1), &fx.ctx(), t0()).await.is_err());
    assert_eq!(fx.state("job-9").await, Some(JobState::Pending));
    let found = audit(fx.store.as_ref()).await.unwrap();
    for job in ["job-7", "job-8", "job-9"] {
        assert!(found.iter().any(|v| v.contains(job)), "{job} reported: {found:#?}");
    }
    let mut cursor = 0;
    let r = staleness_sweeper::reconcile_marks(&fx.sweeper(), 100, &mut cursor).await.unwrap();
    assert_eq!(r.orphans_given_back, 2, "{r:?}");
    assert_eq!(fx.used(&b).await, 0);
    assert_eq!(fx.used(&a).await, 3, "job-7 and the pending job-9 keep theirs");
    assert_eq!(fx.state("job-7").await, Some(JobState::Allocated));
    let left = audit(fx.store.as_ref()).await.unwrap();
    assert!(
        !left.is_empty() && left.iter().all(|v| v.contains("job-9")),
        "only the placement in flight: {left:#?}"
    );
    fx.drain().await;
}

/// `job`'s allocation, as a delivery whose answer was lost left it, on `provider`.
async fn plant_orphan(fx: &Fx, provider: &str, job: &str) {
    let orphan = Allocation {
        job_id: job.into(),
        customer_id: "cust-1".into(),
        model_key: "RTX-4090".into(),
        gpus: 2,
        mining_taken: 0,
        cpu: 2,
        mem: 4096,
        price_micros: 500_000,
        started_at_ms: t0().timestamp_millis(),
        owner: "lost-delivery".into(),
    };
    assert!(commit_allocation(&orphan).apply(fx.store.as_ref(), provider).await.unwrap());
}

/// A heartbeat of `provider` received at `at`, written as the recorder keeps it.
pub(crate) async fn fresh_heartbeat(store: &dyn ItemStore, provider: &str, at: DateTime<Utc>) {
    let ops = [
        Op::set(worldland_core::provider::attr::HB_AT, at.timestamp_millis()),
        Op::set(worldland_core::provider::attr::LAST_HB, at.timestamp_millis()),
    ];
    assert!(store.update_if(Table::Providers, provider, &Cond::ItemExists, &ops).await.unwrap());
}

/// The recorder, lightly: a provider approved, then joining and heartbeating with every store
/// write losing its answer and replayed: the join and each heartbeat are recorded (available,
/// `hb_at` the last receive time), none read as refused.
#[tokio::test]
async fn every_answer_lost_through_approval_join_and_heartbeats() {
    use worldland_tests::lifecycle::{approve, heartbeat, node_for, recorder};
    use worldland_tests::Outcome;
    let now = t0();
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let store: Arc<dyn ItemStore> = faulty.clone();
    let cluster = Arc::new(worldland_adapters::cluster::simulated::SimulatedCluster::new(
        "https://10.0.0.1:6443",
    ));
    let p = worldland_tests::lifecycle::fixture_shaped_provider(3, now);
    approve(&p, store.clone(), cluster.clone(), now).await;
    cluster.add_node(node_for(&p, true));
    // From the join on (the approval's lost answers are the issuer's test), every answer lost.
    faulty.lose_answers(1000);
    let rec = recorder(store.clone(), cluster.clone());
    for i in 0..3 {
        let at = now + Duration::seconds(30 * i);
        let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, at, 0), &rec, at).await);
        assert_eq!(out, Outcome::Done, "heartbeat {i}");
    }
    assert!(faulty.replayed() > 0);
    let item = store.get(Table::Providers, &p.provider_id).await.unwrap().unwrap();
    assert_eq!(item.get("state").and_then(Value::as_str), Some("available"));
    assert_eq!(
        item.get(worldland_core::provider::attr::HB_AT).and_then(Value::as_i64),
        Some((now + Duration::seconds(60)).timestamp_millis())
    );
}

/// `finish_committed`'s shape: a commit landed but its delivery died (the answer of the provider
/// write lost, no retry left); past the lease the sweeper takes the job over, adopts the entry and
/// records the job, each of those writes' answers lost and replayed: the job ends allocated with
/// its GPUs, answered once.
#[tokio::test(start_paused = true)]
async fn a_takeover_whose_adoption_answer_was_lost_keeps_the_gpus() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let p = fx.providers[0].clone();
    fx.faulty
        .arm(Table::Providers, &p, 0, worldland_tests::faulty_store::Fault::ApplyThenFail);
    assert!(allocator::allocate(&alloc("job-t", 2), &fx.ctx(), t0()).await.is_err());
    assert_eq!(fx.state("job-t").await, Some(JobState::Pending));
    assert_eq!(fx.used(&p).await, 2);
    fx.faulty.lose_next(Table::Providers, &p, 3);
    fx.faulty.lose_next(Table::Jobs, "job-t", 5);
    let late = t0() + Duration::seconds(31);
    staleness_sweeper::pending_jobs::resolve_stale_pending(&fx.sweeper(), late)
        .await
        .unwrap();
    fx.faulty.disarm();
    assert_eq!(fx.state("job-t").await, Some(JobState::Allocated));
    assert_eq!(fx.used(&p).await, 2);
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-t")]).await;
}

/// Scenario 4b, retries exhausted: the release's close applies but reports an error; the
/// redelivered release finds the job closed and answers — with the `mining.resume` the close
/// owed, not only `job.released`.
#[tokio::test]
async fn a_release_redelivered_after_its_close_failed_still_resumes_mining() {
    let mut fx = Fx::new(&[(4, 2)], t0()).await;
    let p = fx.providers[0].clone();
    allocator::allocate(&alloc("job-m", 3), &fx.ctx(), t0()).await.unwrap();
    // The job's next write is the close.
    fx.faulty
        .arm(Table::Jobs, "job-m", 0, worldland_tests::faulty_store::Fault::ApplyThenFail);
    assert!(allocator::release(&release("job-m"), &fx.ctx(), t0()).await.is_err());
    assert_eq!(fx.state("job-m").await, Some(JobState::Released));
    allocator::release(&release("job-m"), &fx.ctx(), t0()).await.unwrap();
    let kinds: Vec<String> = fx.replies.commands_for(&p).iter().map(|c| c.kind.clone()).collect();
    assert_eq!(kinds, vec!["mining.stop", "mining.resume"]);
    assert_eq!(fx.ledger(&p).await.models["RTX-4090"].mining, 2, "mining GPUs given back");
    fx.audit_clean().await;
    fx.answered(&[(topics::JOB_ALLOCATED, "job-m"), (topics::JOB_RELEASED, "job-m")])
        .await;
}
