//! The sweeper's stall guard: when more than half the fleet (and at least the minimum count)
//! would go offline in one sweep, or no heartbeat at all arrived for a whole stale period, the
//! heartbeat pipeline is stalled, not the fleet — nobody is marked offline, nothing interrupted,
//! and `worldland_sweeper_guard_active` is 1. Normal churn below the guard goes offline as before,
//! and approvals still expire while it holds.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use staleness_sweeper::{stall, Stall, StallGuard};
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::Cluster;
use worldland_core::labels;
use worldland_core::messages::ProviderState;
use worldland_core::provider::ProviderRecord;
use worldland_core::state::ItemStore;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::lifecycle::{approve, fixture_shaped_provider, heartbeat, node_for, recorder};
use worldland_tests::{sweeper, Outcome};

/// The gauge is one per process: tests that read it take turns.
static GAUGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STALE: i64 = 120;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

struct Fleet {
    store: Arc<dyn ItemStore>,
    sim: Arc<SimulatedCluster>,
    providers: Vec<SimulatedProvider>,
}

impl Fleet {
    /// `n` available providers, each with its Ready node, first heartbeat at `t0`.
    async fn new(n: usize) -> Self {
        let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
        let sim = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
        let mut providers = vec![];
        for i in 0..n {
            let p = fixture_shaped_provider(100 + i, t0());
            approve(&p, store.clone(), sim.clone(), t0()).await;
            sim.add_node(node_for(&p, true));
            providers.push(p);
        }
        let fleet = Self { store, sim, providers };
        fleet.beat(0..n, t0()).await;
        fleet
    }

    async fn beat(&self, which: std::ops::Range<usize>, at: DateTime<Utc>) {
        let ctx = recorder(self.store.clone(), self.sim.clone());
        for p in &self.providers[which] {
            let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(p, at, 0), &ctx, at).await);
            assert_eq!(out, Outcome::Done, "{}", p.provider_id);
        }
    }

    async fn state(&self, i: usize) -> ProviderState {
        ProviderRecord::load(self.store.as_ref(), &self.providers[i].provider_id)
            .await
            .unwrap()
            .unwrap()
            .state
    }

    async fn offline(&self) -> usize {
        let mut n = 0;
        for i in 0..self.providers.len() {
            if self.state(i).await == ProviderState::Offline {
                n += 1;
            }
        }
        n
    }

    /// Nodes carrying the offline taint or label.
    fn marked(&self) -> usize {
        self.providers
            .iter()
            .filter(|p| {
                let name = worldland_core::validation::node_name(&p.provider_id, &p.registration.spec.hostname);
                let node = self.sim.node(&name).unwrap();
                node.taints.iter().any(|t| t.key == labels::OFFLINE_TAINT) || node.labels.contains_key(labels::STATUS)
            })
            .count()
    }

    async fn sweep(&self, at: DateTime<Utc>) -> staleness_sweeper::SweepReport {
        self.sweep_guarded(at, StallGuard::default()).await
    }

    async fn sweep_guarded(&self, at: DateTime<Utc>, guard: StallGuard) -> staleness_sweeper::SweepReport {
        let ctx = staleness_sweeper::Context {
            guard,
            fleet: Default::default(),
            ..sweeper(self.store.clone(), self.sim.clone() as Arc<dyn Cluster>, Duration::seconds(STALE))
        };
        staleness_sweeper::sweep_once(&ctx, at).await.unwrap()
    }
}

fn gauge() -> Option<String> {
    worldland_runtime::metrics::render()
        .lines()
        .find(|l| l.starts_with("worldland_sweeper_guard_active "))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
}

#[tokio::test]
async fn most_of_the_fleet_going_stale_at_once_marks_nobody() {
    let _turn = GAUGE.lock().await;
    let fleet = Fleet::new(10).await;
    // Four keep heartbeating; six fall silent: 60% > 50%, and 6 ≥ the minimum of 5.
    fleet.beat(0..4, t0() + Duration::seconds(90)).await;
    let at = t0() + Duration::seconds(STALE + 60);
    assert_eq!(
        stall(fleet.store.as_ref(), StallGuard::default(), at - Duration::seconds(STALE))
            .await
            .unwrap(),
        Some(Stall::Share { fleet: 10, stale: 6 })
    );
    let report = fleet.sweep(at).await;
    assert!(report.guard_held, "{report:?}");
    assert_eq!(report.marked_offline, 0);
    assert_eq!(report.jobs_closed, 0);
    assert_eq!(fleet.offline().await, 0);
    assert_eq!(fleet.marked(), 0, "no node tainted while the guard holds");
    assert_eq!(gauge().as_deref(), Some("1"));

    // The pipeline comes back: the silent six heartbeat again and the guard lifts.
    fleet.beat(0..10, at).await;
    let report = fleet.sweep(at + Duration::seconds(10)).await;
    assert!(!report.guard_held, "{report:?}");
    assert_eq!(gauge().as_deref(), Some("0"));
    assert_eq!(fleet.offline().await, 0);
}

#[tokio::test]
async fn no_heartbeat_for_a_stale_period_holds_the_guard_and_approvals_still_expire() {
    let _turn = GAUGE.lock().await;
    let fleet = Fleet::new(6).await;
    // Approved an hour's token ago and never joined: expires whatever the heartbeats do.
    let late = fixture_shaped_provider(200, t0());
    approve(&late, fleet.store.clone(), fleet.sim.clone(), t0()).await;
    let at = t0() + Duration::minutes(61);
    // The share trigger off: silence alone holds the guard.
    let share_off = StallGuard { share: 1.0, min: 5 };
    assert_eq!(
        stall(fleet.store.as_ref(), share_off, at - Duration::seconds(STALE)).await.unwrap(),
        Some(Stall::Silence { fleet: 6 })
    );
    let report = fleet.sweep_guarded(at, share_off).await;
    assert!(report.guard_held, "{report:?}");
    assert_eq!(report.marked_offline, 0);
    assert_eq!(report.expired, 1, "approvals expire while the guard holds");
    assert_eq!(fleet.offline().await, 0);
    assert_eq!(fleet.marked(), 0);
    assert_eq!(gauge().as_deref(), Some("1"));
    let rec = ProviderRecord::load(fleet.store.as_ref(), &late.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, ProviderState::Expired);
    // With the default settings the same sweep holds too.
    let report = fleet.sweep(at + Duration::seconds(1)).await;
    assert!(report.guard_held);
}

#[tokio::test]
async fn normal_churn_below_the_guard_goes_offline() {
    let _turn = GAUGE.lock().await;
    // A fifth of the fleet dies (the demo's churn): offline as ever.
    let fleet = Fleet::new(10).await;
    let at = t0() + Duration::seconds(STALE + 60);
    fleet.beat(2..10, t0() + Duration::seconds(STALE)).await;
    let report = fleet.sweep(at).await;
    assert!(!report.guard_held, "{report:?}");
    assert_eq!(report.marked_offline, 2);
    assert_eq!(fleet.offline().await, 2);
    assert_eq!(fleet.marked(), 2);
    assert_eq!(gauge().as_deref(), Some("0"));

    // Exactly half (5 of 10 live): not more than half, so they go offline too.
    let fleet = Fleet::new(10).await;
    fleet.beat(5..10, t0() + Duration::seconds(STALE)).await;
    let report = fleet.sweep(at).await;
    assert!(!report.guard_held, "{report:?}");
    assert_eq!(report.marked_offline, 5);

    // A fleet below the minimum: all of it may go offline.
    let fleet = Fleet::new(4).await;
    let report = fleet.sweep(at).await;
    assert!(!report.guard_held, "{report:?}");
    assert_eq!(report.marked_offline, 4);
    assert_eq!(fleet.marked(), 4);

    // More than half but fewer than the minimum.
    let fleet = Fleet::new(6).await;
    fleet.beat(0..2, t0() + Duration::seconds(STALE)).await;
    let report = fleet.sweep(at).await;
    assert!(!report.guard_held, "{report:?}");
    assert_eq!(report.marked_offline, 4);
}

#[tokio::test]
async fn a_sweep_reads_the_stale_through_the_index_and_counts_the_fleet_every_ten_minutes() {
    use worldland_adapters::state::counting::CountingStore;
    let _turn = GAUGE.lock().await;
    let fleet = Fleet::new(40).await;
    fleet.beat(2..40, t0() + Duration::seconds(STALE)).await; // 2 of 40 go stale
    let counting = Arc::new(CountingStore::new(fleet.store.clone()));
    // Cached at any size here (by default a fleet under 10,000 is counted every sweep).
    let ctx = staleness_sweeper::Context {
        fleet: staleness_sweeper::FleetCount::exact_below(0),
        ..sweeper(counting.clone(), fleet.sim.clone() as Arc<dyn Cluster>, Duration::seconds(STALE))
    };
    let at = t0() + Duration::seconds(STALE + 60);
    let report = staleness_sweeper::sweep_once(&ctx, at).await.unwrap();
    assert_eq!(report.marked_offline, 2);
    let first = counting.take();
    // The first sweep counts the fleet (38 live + 2 stale) once: the stale two, the newest
    // heartbeat (one item: nobody is `joined`), and the count.
    assert_eq!(first.index_items, 2 + 1 + 40, "{first:?}");

    fleet.beat(2..39, at).await; // one more goes stale by the next sweep
    let next = at + Duration::seconds(STALE + 1);
    fleet.beat(2..38, next).await;
    let report = staleness_sweeper::sweep_once(&ctx, next).await.unwrap();
    assert_eq!(report.marked_offline, 2, "{report:?}");
    let second = counting.take();
    // Within ten minutes the fleet is not counted again: the index read is the stale ones and
    // the newest heartbeat, nothing else.
    assert_eq!(second.index_items, 2 + 1, "{second:?}");

    let later = next + staleness_sweeper::FLEET_RECOUNT_AFTER + Duration::seconds(1);
    fleet.beat(2..38, later).await;
    staleness_sweeper::sweep_once(&ctx, later).await.unwrap();
    let third = counting.take();
    assert_eq!(third.index_items, 1 + 36, "after ten minutes the fleet is counted again: {third:?}");
}

#[tokio::test]
async fn a_reused_fleet_count_never_lets_a_stall_through_after_the_fleet_shrank() {
    let _turn = GAUGE.lock().await;
    // 40 live providers counted; then 20 go offline (two sweeps of churn below the guard's share),
    // then the pipeline stalls for the other 20: 20 stale of a counted 40 is not more than half,
    // but of the 20 live it is all of them.
    let fleet = Fleet::new(40).await;
    let ctx = staleness_sweeper::Context {
        fleet: staleness_sweeper::FleetCount::exact_below(0),
        ..sweeper(fleet.store.clone(), fleet.sim.clone() as Arc<dyn Cluster>, Duration::seconds(STALE))
    };
    let mut at = t0();
    staleness_sweeper::sweep_once(&ctx, at).await.unwrap(); // counts 40
    for quiet in [0..10, 10..20] {
        let next = at + Duration::seconds(STALE + 1);
        // Everyone but `quiet` and those already gone heartbeats in time.
        fleet.beat(quiet.end..40, next - Duration::seconds(1)).await;
        at = next;
        let r = staleness_sweeper::sweep_once(&ctx, at).await.unwrap();
        assert_eq!(r.marked_offline, 10, "{r:?}");
    }
    // The stall: nobody heartbeats, but one provider's beat is the newest inside the period, so
    // the silence trigger does not fire; only the share can hold the guard.
    fleet.beat(39..40, at + Duration::seconds(STALE)).await;
    let r = staleness_sweeper::sweep_once(&ctx, at + Duration::seconds(STALE + 1))
        .await
        .unwrap();
    assert!(r.guard_held, "19 of 20 live stale must hold the guard: {r:?}");
    assert_eq!(r.marked_offline, 0);
}
