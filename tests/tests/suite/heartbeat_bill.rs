//! One provider cannot multiply the bill: the recorder records at most one heartbeat per
//! `WORLDLAND_MIN_HEARTBEAT_INTERVAL_S` (the rest are acknowledged as routine duplicates, never
//! dead-lettered), and an `active_jobs` that flips on every heartbeat patches the node's label at
//! most once per `WORLDLAND_ACTIVE_JOBS_LABEL_INTERVAL_S`. Before, a flood of millisecond-apart
//! heartbeats rewrote the provider's item each time, and every flip was a Node PATCH.

use std::sync::Arc;

use chrono::{Duration, Utc};
use worldland_adapters::state::counting::CountingStore;
use worldland_core::provider::ProviderRecord;
use worldland_tests::lifecycle::{available_provider, recorder, sequenced_heartbeat};
use worldland_tests::Outcome;

#[tokio::test]
async fn a_flood_of_heartbeats_makes_at_most_one_write_per_interval() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(1, t0).await;
    let counting = Arc::new(CountingStore::new(store.clone()));
    let ctx = recorder(counting.clone(), cluster.clone());
    assert_eq!(ctx.min_heartbeat_interval, Duration::seconds(10));
    let mut writes = 0;
    let mut last = ProviderRecord::load(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
    // 3,000 heartbeats, 10 ms apart: 30 s of flood, each newer than the last.
    for i in 1..=3_000u64 {
        let at = t0 + Duration::milliseconds(10 * i as i64);
        let mut env = sequenced_heartbeat(&p, at, 0, Some(i));
        env.entry_id = format!("{}-0", at.timestamp_millis());
        let out = Outcome::from(heartbeat_recorder::handle(&env, &ctx, at).await);
        assert_eq!(out, Outcome::Done, "heartbeat {i}: acknowledged, not an error");
        let rec = ProviderRecord::load(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
        if rec != last {
            writes += 1;
            assert!(rec.hb_at - last.hb_at >= Duration::seconds(10), "heartbeat {i}");
        }
        last = rec;
    }
    assert_eq!(writes, 3, "one per 10 s (at 10, 20 and 30 s), not 3,000");
    // A failed conditional write is billed too: after the first one (and the read that explains
    // it) the recorder does not even try the others.
    let calls = counting.take();
    assert_eq!((calls.writes, calls.gets), (4, 1), "store calls for 3,000 heartbeats");
    // Another recorder process (which saw none of them) is held by the store's condition.
    let other = recorder(counting.clone(), cluster.clone());
    let at = t0 + Duration::milliseconds(30_005);
    let mut env = sequenced_heartbeat(&p, at, 0, Some(5_000));
    env.entry_id = format!("{}-0", at.timestamp_millis());
    assert_eq!(Outcome::from(heartbeat_recorder::handle(&env, &other, at).await), Outcome::Done);
    let rec = ProviderRecord::load(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
    assert_eq!(rec, last, "not recorded");
}

#[tokio::test]
async fn active_jobs_flipping_on_every_heartbeat_patches_the_node_at_most_once_per_interval() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(2, t0).await;
    let ctx = recorder(store.clone(), cluster.clone());
    assert_eq!(ctx.active_jobs_label_interval, Duration::seconds(60));
    let before = cluster.writes();
    // Ten minutes of heartbeats every 30 s, active_jobs 1, 0, 1, 0, …
    for i in 1..=20u64 {
        let at = t0 + Duration::seconds(30 * i as i64);
        let mut env = sequenced_heartbeat(&p, at, (i % 2) as u32, Some(i));
        env.entry_id = format!("{}-0", at.timestamp_millis());
        assert_eq!(Outcome::from(heartbeat_recorder::handle(&env, &ctx, at).await), Outcome::Done);
    }
    let patches = cluster.writes() - before;
    // At most one label patch per minute (10), and the annotation every 5 minutes rides along
    // with one of them or adds one of its own (2).
    assert!(patches <= 12, "{patches} node writes for 20 flips");
    assert!(patches >= 5, "the label still follows the count ({patches})");
}
