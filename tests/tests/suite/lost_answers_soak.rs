//! 5% of all store answers lost after their write applied (and replayed, as the SDK's retry
//! would) through a busy plane, on the memory store and on dynalite: nothing lost, nothing stuck,
//! nothing held twice, the audit clean (issue 22's soak; the scenarios are in `lost_answers`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::job::{self, JobState};
use worldland_core::messages::topics;
use worldland_core::state::ItemStore;
use worldland_tests::ledger_fixture::Fx;

use crate::lost_answers::{alloc, fresh_heartbeat, release};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
}

/// One allocate or release delivered until it is not asked to be retried (a redelivery), at
/// most five times.
async fn deliver(ctx: &allocator::Context, job: &str, gpus: Option<u32>, at: DateTime<Utc>) {
    for _ in 0..5 {
        let r = match gpus {
            Some(g) => allocator::allocate(&alloc(job, g), ctx, at).await,
            None => allocator::release(&release(job), ctx, at).await,
        };
        match r {
            Ok(()) => return,
            Err(worldland_core::worker::Failure::Retry(_)) => continue,
            Err(e) => panic!("{job}: {e:?}"),
        }
    }
}

/// 5% of all store answers lost after the write applied (and replayed by the SDK) while 40 jobs
/// are allocated concurrently on four providers, one provider goes silent (the sweeper
/// interrupts its jobs) and the rest are released: nothing lost (every request answered once),
/// nothing stuck (no job pending or open), nothing held twice (every ledger back to zero), the
/// audit clean.
async fn soak(inner: Arc<dyn ItemStore>) {
    let mut fx = Fx::on(inner, &[(8, 0), (8, 0), (8, 0), (8, 0)], t0()).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let jobs: Vec<(String, u32)> = (0..40).map(|i| (format!("soak-{}-{i}", &tag[..8]), 1 + (i % 4) as u32)).collect();
    fx.faulty.lose_answers(50);
    let ctx = Arc::new(fx.ctx());
    let mut tasks = vec![];
    for (job, gpus) in jobs.clone() {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move { deliver(&ctx, &job, Some(gpus), t0()).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Past the claims' lease the sweeper settles anything left pending; provider 0 goes silent.
    let late = t0() + Duration::seconds(600);
    for p in &fx.providers[1..] {
        fresh_heartbeat(fx.store.as_ref(), p, late).await;
    }
    staleness_sweeper::sweep_once(&fx.sweeper(), late).await.unwrap();
    for (job, _) in &jobs {
        deliver(&ctx, job, None, late).await;
    }
    let replayed = fx.faulty.replayed();
    fx.faulty.lose_answers(0);
    assert!(replayed > 0, "no answer was lost");
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (job, _) in &jobs {
        let state = fx.state(job).await;
        assert!(
            matches!(state, Some(JobState::Released | JobState::Rejected)),
            "{job} left {state:?}"
        );
        *outcomes.entry(format!("{state:?}")).or_default() += 1;
    }
    for p in &fx.providers {
        let l = fx.ledger(p).await;
        assert!(l.allocs.is_empty(), "{p} still holds {:?}", l.allocs.keys());
        assert_eq!(fx.used(p).await, 0, "{p}");
    }
    fx.audit_clean().await;
    let events = fx.drain().await;
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &events {
        *seen.entry(e.clone()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "answered twice: {seen:?}");
    for (job, _) in &jobs {
        let first = [topics::JOB_ALLOCATED, topics::JOB_REJECTED]
            .iter()
            .filter(|k| seen.contains_key(&(k.to_string(), job.clone())))
            .count();
        assert_eq!(first, 1, "{job}: allocated or rejected, once");
        if fx.job(job).await.contains_key(job::attr::ALLOCATION) {
            assert!(
                seen.contains_key(&(topics::JOB_RELEASED.to_string(), job.clone())),
                "{job}: released answered"
            );
        }
    }
    eprintln!("soak: {replayed} answers lost and replayed; outcomes {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_of_answers_lost_memory() {
    soak(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_of_answers_lost_dynamodb() {
    let env = worldland_tests::TestEnv::new(&[]);
    soak(Arc::new(env.dynamo().await)).await;
}
