//! Fencing in the allocator, under injected store faults and a paused clock: a write that
//! applied but reported an error, an owner that stalls past the lease while another delivery
//! takes over, a release that meets a job being placed, and jobs stranded `pending` that the
//! sweeper resolves. Each ends with every job `allocated`, `released` or `rejected`, the ledger
//! audit clean and each request answered once.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use worldland_core::job::JobState;
use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest, Workload};
use worldland_core::messages::topics;
use worldland_core::state::Table;
use worldland_core::worker::Failure;
use worldland_tests::faulty_store::{Fault, FaultyStore};
use worldland_tests::ledger_fixture::Fx;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn alloc(job: &str, gpus: u32) -> AllocateRequest {
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

fn is_retry(r: &Result<(), Failure>) -> bool {
    matches!(r, Err(Failure::Retry(_)))
}

fn ev(key: &str, job: &str) -> (String, String) {
    (key.to_string(), job.to_string())
}

/// Scenario 1: the commit (or the attempt) applied but reported a timeout; the redelivery, a
/// moment later, finishes it instead of waiting 30 s behind its own claim.
#[tokio::test(start_paused = true)]
async fn a_write_that_applied_but_timed_out_is_finished_by_the_redelivery() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let ctx = fx.ctx();
    // The commit on the provider applies, then times out.
    fx.faulty.arm(Table::Providers, &fx.providers[0].clone(), 0, Fault::ApplyThenFail);
    assert!(is_retry(&allocator::allocate(&alloc("job-a", 2), &ctx, t0()).await));
    assert_eq!(fx.state("job-a").await, Some(JobState::Pending));
    assert_eq!(fx.used(&fx.providers[0]).await, 2, "the commit landed");
    // The redelivery, 100 ms later (the transport's first retry).
    let again = t0() + Duration::milliseconds(100);
    allocator::allocate(&alloc("job-a", 2), &ctx, again).await.unwrap();
    assert_eq!(fx.state("job-a").await, Some(JobState::Allocated));

    // The attempt write on the job applies, then times out (before any commit).
    fx.faulty.arm(Table::Jobs, "job-b", 1, Fault::ApplyThenFail);
    assert!(is_retry(&allocator::allocate(&alloc("job-b", 1), &ctx, again).await));
    allocator::allocate(&alloc("job-b", 1), &ctx, again + Duration::milliseconds(200))
        .await
        .unwrap();
    assert_eq!(fx.state("job-b").await, Some(JobState::Allocated));

    // The job's `allocated` write applies, then times out: the redelivery answers it.
    fx.faulty.arm(Table::Jobs, "job-c", 2, Fault::ApplyThenFail);
    assert!(is_retry(&allocator::allocate(&alloc("job-c", 1), &ctx, again).await));
    allocator::allocate(&alloc("job-c", 1), &ctx, again + Duration::milliseconds(200))
        .await
        .unwrap();
    assert!(fx.faulty.all_fired());
    assert_eq!(fx.used(&fx.providers[0]).await, 4);
    let events = fx.settled().await;
    assert_eq!(
        events,
        vec![
            ev(topics::JOB_ALLOCATED, "job-a"),
            ev(topics::JOB_ALLOCATED, "job-b"),
            ev(topics::JOB_ALLOCATED, "job-c")
        ]
    );
}

/// Scenario 1 without a redelivery (dead-lettered, or the process died): the sweeper resolves
/// jobs left pending past the lease — finishing a commit that landed, rolling back one that did
/// not — and leaves a live claim alone.
#[tokio::test(start_paused = true)]
async fn the_sweeper_resolves_jobs_stranded_pending() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let ctx = fx.ctx();
    let p = fx.providers[0].clone();
    fx.faulty.arm(Table::Providers, &p, 0, Fault::ApplyThenFail);
    assert!(is_retry(&allocator::allocate(&alloc("landed", 2), &ctx, t0()).await));
    fx.faulty.arm(Table::Providers, &p, 0, Fault::FailBeforeApply);
    assert!(is_retry(&allocator::allocate(&alloc("not-landed", 3), &ctx, t0()).await));
    assert_eq!(fx.used(&fx.providers[0]).await, 2);
    let sweeper = fx.sweeper();

    // Within the lease the claims are live.
    let early = t0() + Duration::seconds(20);
    assert_eq!(
        staleness_sweeper::pending_jobs::resolve_stale_pending(&sweeper, early)
            .await
            .unwrap(),
        0
    );
    assert_eq!(fx.state("landed").await, Some(JobState::Pending));

    // Past it, both are settled; a full sweep does it.
    let late = t0() + Duration::seconds(31);
    staleness_sweeper::sweep_once(&sweeper, late).await.unwrap();
    assert_eq!(fx.state("landed").await, Some(JobState::Allocated));
    assert_eq!(fx.state("not-landed").await, Some(JobState::Rejected));
    assert_eq!(fx.used(&fx.providers[0]).await, 2, "the ledger holds exactly the allocated job");
    assert_eq!(
        staleness_sweeper::pending_jobs::resolve_stale_pending(&sweeper, late)
            .await
            .unwrap(),
        0
    );

    // A late redelivery of either changes nothing and answers nothing again.
    allocator::allocate(&alloc("landed", 2), &ctx, late).await.unwrap();
    allocator::allocate(&alloc("not-landed", 3), &ctx, late).await.unwrap();
    let mut events = fx.settled().await;
    events.sort();
    assert_eq!(
        events,
        vec![ev(topics::JOB_ALLOCATED, "landed"), ev(topics::JOB_REJECTED, "not-landed")]
    );
    assert_eq!(fx.used(&fx.providers[0]).await, 2);
}

/// Scenario 2: D1 commits, then stalls past the lease before its job write; D2 takes over,
/// adopts the allocation and answers; D1's job write then fails, and its undo must not free the
/// GPUs the allocated job holds.
#[tokio::test(start_paused = true)]
async fn a_takeover_from_a_stalled_owner_keeps_the_gpus_it_adopted() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let (pause, reached, resume) = FaultyStore::pause();
    // Jobs writes of job-s: create, attempt, then `allocated` — D1 stalls before the third.
    fx.faulty.arm(Table::Jobs, "job-s", 2, pause);
    let d1_ctx = fx.ctx();
    let d1 = tokio::spawn(async move { allocator::allocate(&alloc("job-s", 4), &d1_ctx, t0()).await });
    reached.notified().await;
    assert_eq!(fx.used(&fx.providers[0]).await, 4, "D1 committed");

    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    let d2_ctx = fx.ctx();
    allocator::allocate(&alloc("job-s", 4), &d2_ctx, t0() + Duration::seconds(31))
        .await
        .unwrap();
    assert_eq!(fx.state("job-s").await, Some(JobState::Allocated));

    resume.notify_one();
    d1.await.unwrap().unwrap();
    assert_eq!(fx.state("job-s").await, Some(JobState::Allocated));
    assert_eq!(fx.used(&fx.providers[0]).await, 4, "the allocated job still holds its GPUs");
    assert_eq!(fx.settled().await, vec![ev(topics::JOB_ALLOCATED, "job-s")]);

    // And the release gives them back exactly once.
    allocator::release(
        &ReleaseRequest {
            job_id: "job-s".into(),
            reason: "done".into(),
        },
        &d2_ctx,
        t0() + Duration::seconds(60),
    )
    .await
    .unwrap();
    assert_eq!(fx.used(&fx.providers[0]).await, 0);
    assert_eq!(fx.settled().await, vec![ev(topics::JOB_RELEASED, "job-s")]);
}

/// A release that meets a pending job waits for it rather than being retried into the
/// dead-letter queue: once the placement settles (here: the allocate's redelivery finishes it)
/// or its claim goes stale (here: nobody finishes it), the release is applied.
#[tokio::test(start_paused = true)]
async fn a_release_of_a_pending_job_is_applied_not_dead_lettered() {
    let mut fx = Fx::new(&[(8, 0)], t0()).await;
    let p = fx.providers[0].clone();
    let rel = |job: &str| ReleaseRequest {
        job_id: job.into(),
        reason: "done".into(),
    };

    // The allocate's commit landed but timed out; its redelivery comes 2 s after the release.
    fx.faulty.arm(Table::Providers, &p, 0, Fault::ApplyThenFail);
    let ctx = Arc::new(fx.ctx());
    assert!(is_retry(&allocator::allocate(&alloc("job-r", 2), &ctx, t0()).await));
    let release = {
        let ctx = ctx.clone();
        let r = rel("job-r");
        tokio::spawn(async move { allocator::release(&r, &ctx, t0()).await })
    };
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    allocator::allocate(&alloc("job-r", 2), &ctx, t0() + Duration::seconds(2))
        .await
        .unwrap();
    release.await.unwrap().unwrap();
    assert_eq!(fx.state("job-r").await, Some(JobState::Released));

    // No redelivery ever comes: the release resolves the stale claim itself.
    fx.faulty.arm(Table::Providers, &p, 0, Fault::ApplyThenFail);
    assert!(is_retry(&allocator::allocate(&alloc("job-q", 2), &ctx, t0()).await));
    allocator::release(&rel("job-q"), &ctx, t0()).await.unwrap();
    assert_eq!(fx.state("job-q").await, Some(JobState::Released));

    // Nothing committed and no redelivery: the job is cancelled, the ledger as it was.
    fx.faulty.arm(Table::Providers, &p, 0, Fault::FailBeforeApply);
    assert!(is_retry(&allocator::allocate(&alloc("job-n", 2), &ctx, t0()).await));
    allocator::release(&rel("job-n"), &ctx, t0()).await.unwrap();
    assert_eq!(fx.state("job-n").await, Some(JobState::Cancelled));

    assert_eq!(fx.used(&fx.providers[0]).await, 0);
    let mut events = fx.settled().await;
    events.sort();
    assert_eq!(
        events,
        vec![
            ev(topics::JOB_ALLOCATED, "job-q"),
            ev(topics::JOB_ALLOCATED, "job-r"),
            ev(topics::JOB_REJECTED, "job-n"),
            ev(topics::JOB_RELEASED, "job-q"),
            ev(topics::JOB_RELEASED, "job-r"),
        ]
    );
}
