//! A heartbeat's order does not depend on the agent's clock moving forward: new agents sign a
//! sequence number (`seq`) and the recorder requires it, not the timestamp, to grow. Before it,
//! an agent clock that ran fast (up to the 5-minute window is accepted) and was then corrected
//! had every heartbeat ignored until real time caught up — past 120 s its provider was marked
//! offline and its jobs interrupted.

use chrono::{DateTime, Duration, Utc};
use worldland_core::messages::{ProviderState, StreamEnvelope};
use worldland_core::provider::ProviderRecord;
use worldland_core::state::ItemStore;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::lifecycle::{available_provider, recorder, sequenced_heartbeat};
use worldland_tests::Outcome;

const STALE_AFTER_S: i64 = 120;

/// Heartbeat `seq` that the broker received at `received` from an agent whose clock is `skew_s` off.
fn beat(p: &SimulatedProvider, received: DateTime<Utc>, skew_s: i64, seq: u64, jobs: u32) -> StreamEnvelope {
    let mut env = sequenced_heartbeat(p, received + Duration::seconds(skew_s), jobs, Some(seq));
    env.entry_id = format!("{}-0", received.timestamp_millis());
    env
}

async fn state(store: &dyn ItemStore, id: &str) -> ProviderRecord {
    ProviderRecord::load(store, id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_clock_stepped_back_by_4_minutes_keeps_the_provider_available() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(1, t0).await;
    let ctx = recorder(store.clone(), cluster.clone());
    let sweeper = worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(STALE_AFTER_S));
    for i in 1..=12u64 {
        let received = t0 + Duration::seconds(30 * i as i64);
        // Four minutes fast for the first three heartbeats, then corrected: a 4-minute step back.
        let skew = if i <= 3 { 240 } else { 0 };
        let out = Outcome::from(heartbeat_recorder::handle(&beat(&p, received, skew, 1_000 + i, 0), &ctx, received).await);
        assert_eq!(out, Outcome::Done, "beat {i}");
        let report = staleness_sweeper::sweep_once(&sweeper, received + Duration::seconds(29))
            .await
            .unwrap();
        assert_eq!(report.marked_offline, 0, "beat {i}: a corrected clock is not a dead provider");
        let rec = state(store.as_ref(), &p.provider_id).await;
        assert_eq!(rec.state, ProviderState::Available, "beat {i}");
        assert_eq!(rec.hb_at.timestamp_millis(), received.timestamp_millis(), "beat {i} recorded");
        assert_eq!(rec.hb_seq, Some(1_000 + i as i64));
    }
}

#[tokio::test]
async fn a_captured_heartbeat_replayed_within_the_window_changes_nothing() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(2, t0).await;
    let ctx = recorder(store.clone(), cluster.clone());
    let t1 = t0 + Duration::seconds(30);
    let captured = beat(&p, t1, 0, 7, 0);
    assert_eq!(Outcome::from(heartbeat_recorder::handle(&captured, &ctx, t1).await), Outcome::Done);
    let t2 = t0 + Duration::seconds(60);
    let later = beat(&p, t2, 0, 8, 1);
    assert_eq!(Outcome::from(heartbeat_recorder::handle(&later, &ctx, t2).await), Outcome::Done);
    let before = store.get(worldland_core::state::Table::Providers, &p.provider_id).await.unwrap();
    // Replayed by an attacker (a new stream entry, received later, still inside the window):
    // the older one and the latest one alike are settled without a write.
    for (replay, at) in [(&captured, t0 + Duration::seconds(90)), (&later, t0 + Duration::seconds(100))] {
        let mut env = replay.clone();
        env.entry_id = format!("{}-0", at.timestamp_millis());
        assert_eq!(Outcome::from(heartbeat_recorder::handle(&env, &ctx, at).await), Outcome::Done);
        let after = store.get(worldland_core::state::Table::Providers, &p.provider_id).await.unwrap();
        assert_eq!(after, before, "a replay keeps no dead agent alive and rewrites nothing");
    }
    let rec = state(store.as_ref(), &p.provider_id).await;
    assert_eq!((rec.hb_seq, rec.active_jobs), (Some(8), 1));
}
