//! Closes whose answers went missing are still answered: a close that applied while every
//! answer to it was lost (the sweeper got an error), and a close whose `mining.resume` could not
//! be sent. A released job stays on the jobs' released index until its answers went out, and
//! each sweep answers those past a grace period: at least once, each answer with its own id.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use worldland_core::job::JobState;
use worldland_core::messages::topics;
use worldland_core::state::Table;
use worldland_tests::faulty_store::Fault;
use worldland_tests::ledger_fixture::Fx;

use crate::lost_answers::{alloc, fresh_heartbeat, release};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
}

/// Scenario 4d: a close by the sweeper that applied but whose every answer was lost (the SDK's
/// retries exhausted: the sweeper got an error) is still answered — `mining.resume` and
/// `job.released` — in the same sweep. Before, the sweeper logged "job not closed" and the next
/// sweep no longer found the job among the allocated: nobody was ever told.
#[tokio::test]
async fn a_close_that_applied_with_every_answer_lost_is_still_answered() {
    let mut fx = Fx::new(&[(4, 2)], t0()).await;
    let p = fx.providers[0].clone();
    let mut req = alloc("job-x", 3);
    req.duration_s = Some(60);
    allocator::allocate(&req, &fx.ctx(), t0()).await.unwrap();
    fresh_heartbeat(fx.store.as_ref(), &p, t0() + Duration::seconds(600)).await;
    // The close's write on the job applies, then the call fails.
    fx.faulty.arm(Table::Jobs, "job-x", 0, Fault::ApplyThenFail);
    let r = staleness_sweeper::sweep_once(&fx.sweeper(), t0() + Duration::seconds(600))
        .await
        .unwrap();
    assert!(fx.faulty.all_fired());
    assert_eq!(r.jobs_closed, 1, "{r:?}");
    assert_eq!(fx.state("job-x").await, Some(JobState::Released));
    let kinds: Vec<String> = fx.replies.commands_for(&p).iter().map(|c| c.kind.clone()).collect();
    assert_eq!(kinds, vec!["mining.stop", "mining.resume"]);
    fx.answered(&[(topics::JOB_ALLOCATED, "job-x"), (topics::JOB_RELEASED, "job-x")])
        .await;
    // Answered once: a later release of the job answers nothing more.
    allocator::release(&release("job-x"), &fx.ctx(), t0() + Duration::seconds(700))
        .await
        .unwrap();
    fx.answered(&[]).await;
    fx.audit_clean().await;
}

/// `mining.resume` refused once (Redis down at that moment).
struct ResumeRefusedOnce {
    inner: Arc<worldland_adapters::replies::MemoryReplies>,
    refused: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl worldland_core::replies::ProviderReplies for ResumeRefusedOnce {
    async fn reply(&self, id: &str, r: &worldland_core::messages::ProviderResponse) -> Result<(), worldland_core::replies::ReplyError> {
        self.inner.reply(id, r).await
    }
    async fn command(
        &self,
        id: &str,
        c: &worldland_core::messages::jobs::MiningCommand,
    ) -> Result<(), worldland_core::replies::ReplyError> {
        if c.kind == "mining.resume" && !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(worldland_core::replies::ReplyError {
                provider_id: id.into(),
                source: "injected: Redis down".into(),
            });
        }
        self.inner.command(id, c).await
    }
}

/// A close whose answers could not all go out (here `mining.resume`, refused once) stays
/// unanswered on the released index, and the next sweep answers it — resume first, then
/// `job.released`, once. Before, `job.released` went out without the resume and the job was
/// marked answered: the provider's GPUs idled while the ledger said they mined.
#[tokio::test]
async fn a_close_whose_resume_failed_is_answered_by_the_next_sweep() {
    let mut fx = Fx::new(&[(4, 2)], t0()).await;
    let p = fx.providers[0].clone();
    let mut req = alloc("job-y", 3);
    req.duration_s = Some(60);
    allocator::allocate(&req, &fx.ctx(), t0()).await.unwrap();
    let mut sweeper = fx.sweeper();
    sweeper.replies = Arc::new(ResumeRefusedOnce {
        inner: fx.replies.clone(),
        refused: false.into(),
    });
    let first = t0() + Duration::seconds(600);
    fresh_heartbeat(fx.store.as_ref(), &p, first).await;
    staleness_sweeper::sweep_once(&sweeper, first).await.unwrap();
    assert_eq!(fx.state("job-y").await, Some(JobState::Released));
    fx.answered(&[(topics::JOB_ALLOCATED, "job-y")]).await;
    // The next sweep answers it: the close ended (its due time) long before.
    let second = first + Duration::seconds(30);
    fresh_heartbeat(fx.store.as_ref(), &p, second).await;
    staleness_sweeper::sweep_once(&sweeper, second).await.unwrap();
    let kinds: Vec<String> = fx.replies.commands_for(&p).iter().map(|c| c.kind.clone()).collect();
    assert_eq!(kinds, vec!["mining.stop", "mining.resume"]);
    fx.answered(&[(topics::JOB_RELEASED, "job-y")]).await;
    // Answered: off the index, nothing more.
    staleness_sweeper::sweep_once(&sweeper, second + Duration::seconds(60))
        .await
        .unwrap();
    fx.answered(&[]).await;
    fx.audit_clean().await;
}
