//! The provider lifecycle on a paused clock: approved → joined → available by heartbeats,
//! offline within threshold + one sweep interval after they stop, available again on the next
//! one — and a heartbeat racing the sweeper is never lost. Also the sweeper's index query reads
//! only stale items.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tokio::sync::broadcast;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::labels;
use worldland_core::messages::ProviderState;
use worldland_core::placement::seed_available;
use worldland_core::provider::{mark_offline_if_stale, ProviderRecord};
use worldland_core::state::{ItemStore, Table};
use worldland_tests::lifecycle::{approve, available_provider, fixture_shaped_provider, heartbeat, node_for, recorder};
use worldland_tests::notifying_store::NotifyingStore;
use worldland_tests::Outcome;

const THRESHOLD: i64 = 120;
const SWEEP_EVERY: u64 = 15;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// "Now" on tokio's clock, so paused time drives every component alike.
fn clock() -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
    let base = tokio::time::Instant::now();
    Arc::new(move || t0() + Duration::from_std(tokio::time::Instant::now() - base).unwrap())
}

async fn state_of(store: &dyn ItemStore, id: &str) -> ProviderRecord {
    ProviderRecord::load(store, id).await.unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn offline_within_threshold_plus_one_sweep_and_back_on_the_next_heartbeat() {
    let now = clock();
    let store = Arc::new(NotifyingStore::new(Arc::new(MemoryStore::new())));
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let p = fixture_shaped_provider(1, now());
    approve(&p, store.clone(), cluster.clone(), now()).await;
    cluster.add_node(node_for(&p, true));
    let ctx = recorder(store.clone(), cluster.clone());

    let (stop, _) = broadcast::channel(1);
    let sweeper = Arc::new(worldland_tests::sweeper(
        store.clone(),
        cluster.clone(),
        Duration::seconds(THRESHOLD),
    ));
    let sweeping = tokio::spawn(staleness_sweeper::run(
        sweeper,
        StdDuration::from_secs(SWEEP_EVERY),
        now.clone(),
        stop.subscribe(),
    ));

    // Heartbeats every 30 s for five minutes: joined, then available, and stays so.
    let mut last = now();
    for i in 0..10 {
        last = now();
        assert_eq!(
            Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, last, 0), &ctx, last).await),
            Outcome::Done
        );
        if i == 0 {
            assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Available);
            let node = cluster.node(&node_for(&p, true).name).unwrap();
            assert_eq!(node.labels[labels::RENTAL_TYPE], "gpu");
            assert_eq!(node.labels[labels::GPU_MODEL], "RTX-4090");
            assert_eq!(cluster.token_count(), 0, "the bootstrap token is deleted on join");
        }
        tokio::time::sleep(StdDuration::from_secs(30)).await;
        assert_eq!(
            state_of(store.as_ref(), &p.provider_id).await.state,
            ProviderState::Available,
            "beat {i}"
        );
    }

    // The heartbeats stop. Wait (on the paused clock) until the sweeper says offline.
    let id = p.provider_id.clone();
    let s2 = store.clone();
    store
        .wait_until(StdDuration::from_secs(600), "offline", || {
            let (s, id) = (s2.clone(), id.clone());
            async move { ProviderRecord::load(s.as_ref(), &id).await.unwrap().unwrap().state == ProviderState::Offline }
        })
        .await;
    let rec = state_of(store.as_ref(), &p.provider_id).await;
    let latency = rec.offline_at.unwrap() - last;
    assert!(latency > Duration::seconds(THRESHOLD), "not before the threshold: {latency}");
    assert!(
        latency <= Duration::seconds(THRESHOLD + SWEEP_EVERY as i64),
        "within threshold + one sweep: {latency}"
    );
    let node = cluster.node(&node_for(&p, true).name).unwrap();
    assert_eq!(node.labels.get(labels::STATUS).map(String::as_str), Some("offline"));
    assert!(node
        .taints
        .iter()
        .any(|t| t.key == labels::OFFLINE_TAINT && t.effect == "NoSchedule"));

    // It comes back.
    let back = now();
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, back, 0), &ctx, back).await),
        Outcome::Done
    );
    let rec = state_of(store.as_ref(), &p.provider_id).await;
    assert_eq!(rec.state, ProviderState::Available);
    assert_eq!(rec.last_heartbeat, Some(back));
    let node = cluster.node(&node_for(&p, true).name).unwrap();
    assert!(
        !node.labels.contains_key(labels::STATUS) && node.taints.is_empty(),
        "offline marks removed: {node:?}"
    );

    let _ = stop.send(());
    sweeping.await.unwrap();
}

#[tokio::test]
async fn a_heartbeat_racing_the_sweeper_is_never_lost() {
    let now = t0();
    let (store, cluster, p) = available_provider(2, now).await;
    let ctx = recorder(store.clone(), cluster.clone());

    // The sweeper, three minutes on, reads the provider as stale…
    let sweep_at = now + Duration::minutes(3);
    let stale_before = sweep_at - Duration::seconds(THRESHOLD);
    let stale = store
        .query_by_state(Table::Providers, "available", Some(stale_before.timestamp_millis()))
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    // …a heartbeat lands before its write…
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, sweep_at, 0), &ctx, sweep_at).await),
        Outcome::Done
    );
    // …and the write, which still requires staleness, does nothing.
    assert!(mark_offline_if_stale(stale_before, sweep_at)
        .run(store.as_ref(), &p.provider_id)
        .await
        .unwrap()
        .is_none());
    let report = staleness_sweeper::sweep_once(
        &worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(THRESHOLD)),
        sweep_at,
    )
    .await
    .unwrap();
    assert_eq!(report.marked_offline, 0);
    assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Available);
}

#[tokio::test]
async fn two_sweepers_mark_each_stale_provider_once() {
    let now = t0();
    let (store, cluster, _p) = available_provider(3, now).await;
    let ctx = worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(THRESHOLD));
    let later = now + Duration::minutes(5);
    let (a, b) = tokio::join!(
        staleness_sweeper::sweep_once(&ctx, later),
        staleness_sweeper::sweep_once(&ctx, later)
    );
    assert_eq!(a.unwrap().marked_offline + b.unwrap().marked_offline, 1);
}

#[tokio::test]
async fn an_approval_that_never_joins_expires_and_its_token_goes() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let p = fixture_shaped_provider(4, now);
    approve(&p, store.clone(), cluster.clone(), now).await;
    let ctx = worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(THRESHOLD));
    assert_eq!(
        staleness_sweeper::sweep_once(&ctx, now + Duration::minutes(59))
            .await
            .unwrap()
            .expired,
        0
    );
    assert_eq!(cluster.token_count(), 1);
    assert_eq!(
        staleness_sweeper::sweep_once(&ctx, now + Duration::minutes(61))
            .await
            .unwrap()
            .expired,
        1
    );
    assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Expired);
    assert_eq!(cluster.token_count(), 0);
}

/// Seeds `n` available providers straight into the store, `stale` of them with old heartbeats.
async fn seed(store: &dyn ItemStore, n: usize, stale: usize, now: DateTime<Utc>) {
    let template = fixture_shaped_provider(0, now).registration;
    for i in 0..n {
        let hb = if i < stale {
            now - Duration::minutes(10)
        } else {
            now - Duration::seconds(10)
        };
        let mut reg = template.clone();
        reg.provider_id = format!("seed-{i:05}");
        assert!(seed_available(&reg, hb, false).apply(store, &reg.provider_id).await.unwrap());
    }
}

#[tokio::test]
async fn the_sweeper_reads_only_stale_items_among_ten_thousand() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    seed(store.as_ref(), 10_000, 10, now).await;
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let ctx = worldland_tests::sweeper(store.clone(), cluster, Duration::seconds(THRESHOLD));
    let report = staleness_sweeper::sweep_once(&ctx, now).await.unwrap();
    assert_eq!(report.examined, 10, "the index query returned only the stale items");
    assert_eq!(report.marked_offline, 10);
    assert_eq!(store.query_by_state(Table::Providers, "offline", None).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_index_query_reads_only_stale_items() {
    let env = worldland_tests::TestEnv::new(&[]);
    let store: Arc<dyn ItemStore> = Arc::new(env.dynamo().await);
    let now = t0();
    seed(store.as_ref(), 300, 10, now).await;
    let ctx = worldland_tests::sweeper(
        store.clone(),
        Arc::new(SimulatedCluster::new("https://x:6443")),
        Duration::seconds(THRESHOLD),
    );
    let report = staleness_sweeper::sweep_once(&ctx, now).await.unwrap();
    assert_eq!((report.examined, report.marked_offline), (10, 10));
}

/// A heartbeat proves the agent runs, not that its node still exists, is Ready, or is still its
/// own: an offline provider comes back only onto its own Ready node, and keeps its offline marks
/// until then.
#[tokio::test]
async fn an_offline_provider_comes_back_only_onto_its_own_ready_node() {
    let t = t0();
    let (store, cluster, p) = available_provider(7, t).await;
    let ctx = recorder(store.clone(), cluster.clone());
    let sweeper = worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(THRESHOLD));
    let report = staleness_sweeper::sweep_once(&sweeper, t + Duration::minutes(3)).await.unwrap();
    assert_eq!(report.marked_offline, 1);
    let name = node_for(&p, true).name;
    let good = cluster.node(&name).unwrap();
    let tainted = |c: &SimulatedCluster| c.node(&name).unwrap().taints.iter().any(|x| x.key == labels::OFFLINE_TAINT);
    assert!(tainted(&cluster));

    let mut at = t + Duration::minutes(4);
    let mut beat_with = |node: worldland_core::cluster::NodeInfo| {
        cluster.add_node(node);
        at += Duration::seconds(30);
        at
    };
    let cases = [
        (
            "not Ready",
            worldland_core::cluster::NodeInfo {
                ready: false,
                ..good.clone()
            },
        ),
        ("relabelled for another provider", {
            let mut n = good.clone();
            n.labels.insert(labels::PROVIDER_ID.into(), "another-provider".into());
            n
        }),
    ];
    for (why, node) in cases {
        let when = beat_with(node);
        let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, when, 0), &ctx, when).await);
        assert_eq!(out, Outcome::Done, "{why}: the heartbeat itself is recorded");
        assert_eq!(
            state_of(store.as_ref(), &p.provider_id).await.state,
            ProviderState::Offline,
            "{why}"
        );
        assert!(tainted(&cluster), "{why}: the offline marks stay");
    }
    // Its own Ready node again (still carrying the marks): available, marks gone.
    let when = beat_with(
        cluster
            .node(&name)
            .map(|n| worldland_core::cluster::NodeInfo {
                labels: good.labels.clone(),
                ready: true,
                ..n
            })
            .unwrap(),
    );
    let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, when, 0), &ctx, when).await);
    assert_eq!(out, Outcome::Done);
    assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Available);
    assert!(!tainted(&cluster));
    assert!(!cluster.node(&name).unwrap().labels.contains_key(labels::STATUS));
}
