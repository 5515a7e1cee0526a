//! The sweeper's node-health pass on the simulated cluster: an available provider whose kubelet
//! died goes offline though its agent still sends signed heartbeats — its job interrupted and
//! billed no later than the kubelet's last sign of life — and its heartbeats do not bring it back
//! until the node is Ready with a live Lease again. The pass marks nobody when most nodes look
//! unhealthy at once or when the cluster cannot be read, and reads a bounded window per sweep.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::health::{ReadyCondition, ReadyStatus};
use worldland_core::cluster::{Cluster, NodeInfo};
use worldland_core::job::attr as job_attr;
use worldland_core::labels;
use worldland_core::messages::jobs::AllocateRequest;
use worldland_core::messages::ProviderState;
use worldland_core::provider::ProviderRecord;
use worldland_core::state::{from_ms, ItemStore, Table, Value};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::faulty_cluster::FaultyCluster;
use worldland_tests::lifecycle::{approve, fixture_shaped_provider, heartbeat, node_for, recorder};
use worldland_tests::{event_sink, sweeper, Outcome};

const STALE: i64 = 120;

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(s)
}

struct Fleet {
    store: Arc<dyn ItemStore>,
    sim: Arc<SimulatedCluster>,
    providers: Vec<SimulatedProvider>,
}

impl Fleet {
    /// `n` available providers, each on its Ready node, first heartbeat at t(0).
    async fn new(n: usize) -> Self {
        let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
        let sim = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
        let mut providers = vec![];
        for i in 0..n {
            let p = fixture_shaped_provider(300 + i, t(0));
            approve(&p, store.clone(), sim.clone(), t(0)).await;
            sim.add_node(node_for(&p, true));
            providers.push(p);
        }
        let fleet = Self { store, sim, providers };
        fleet.beat(0..n, t(0)).await;
        fleet
    }

    async fn beat(&self, which: std::ops::Range<usize>, at: DateTime<Utc>) {
        let ctx = recorder(self.store.clone(), self.sim.clone());
        for p in &self.providers[which] {
            let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(p, at, 0), &ctx, at).await);
            assert_eq!(out, Outcome::Done, "{}", p.provider_id);
        }
    }

    fn node(&self, i: usize) -> String {
        node_for(&self.providers[i], true).name
    }

    /// What node `i`'s kubelet (or the node lifecycle controller) last wrote.
    fn set(&self, i: usize, status: ReadyStatus, since: DateTime<Utc>, lease_renewed: DateTime<Utc>) {
        let ready = ReadyCondition {
            status,
            since: Some(since),
        };
        self.sim.set_node_health(&self.node(i), ready, Some(lease_renewed));
    }

    async fn record(&self, i: usize) -> ProviderRecord {
        ProviderRecord::load(self.store.as_ref(), &self.providers[i].provider_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Whether node `i` carries the offline label and taint.
    fn marked(&self, i: usize) -> bool {
        let node = self.sim.node(&self.node(i)).unwrap();
        node.labels.get(labels::STATUS).map(String::as_str) == Some(labels::STATUS_OFFLINE)
            && node.taints.iter().any(|t| t.key == labels::OFFLINE_TAINT)
    }

    async fn sweep_on(&self, cluster: Arc<dyn Cluster>, at: DateTime<Utc>) -> staleness_sweeper::SweepReport {
        let ctx = sweeper(self.store.clone(), cluster, Duration::seconds(STALE));
        staleness_sweeper::sweep_once(&ctx, at).await.unwrap()
    }

    async fn sweep(&self, at: DateTime<Utc>) -> staleness_sweeper::SweepReport {
        self.sweep_on(self.sim.clone(), at).await
    }

    /// A job taking all four GPUs of one provider, allocated at `at`; the provider it landed on.
    async fn allocate(&self, job_id: &str, at: DateTime<Utc>) -> String {
        let replies = Arc::new(worldland_adapters::replies::MemoryReplies::default());
        let ctx = allocator::Context::new(self.store.clone(), event_sink(), replies);
        let req = AllocateRequest {
            job_id: job_id.into(),
            customer_id: "cust-1".into(),
            gpu_model: None,
            gpus: 4,
            cpu_cores: 4,
            memory_mb: 8192,
            max_price_per_gpu_hour: None,
            duration_s: None,
            workload: worldland_core::messages::jobs::Workload::of_image("docker.io/library/python:3.12-slim"),
        };
        allocator::allocate(&req, &ctx, at).await.unwrap();
        let job = self.job(job_id).await;
        assert_eq!(job.get(job_attr::STATE).and_then(Value::as_str), Some("allocated"), "{job:?}");
        job.get(job_attr::PROVIDER).and_then(Value::as_str).unwrap().to_string()
    }

    async fn job(&self, job_id: &str) -> BTreeMap<String, Value> {
        self.store.get(Table::Jobs, job_id).await.unwrap().unwrap().into_iter().collect()
    }
}

#[tokio::test]
async fn an_available_provider_whose_kubelet_died_goes_offline_though_it_still_heartbeats() {
    let fleet = Fleet::new(2).await;
    let on_a = fleet.allocate("job-a", t(10)).await;
    let on_b = fleet.allocate("job-b", t(10)).await;
    let dead = fleet.providers.iter().position(|p| p.provider_id == on_a).unwrap();
    let alive = 1 - dead;
    assert_eq!(on_b, fleet.providers[alive].provider_id);
    // The kubelet dies at 60; 40 s later the node lifecycle controller sets Ready=Unknown. The
    // agent keeps heartbeating every 30 s throughout.
    fleet.set(dead, ReadyStatus::Unknown, t(100), t(60));
    fleet.set(alive, ReadyStatus::True, t(-3600), t(210));
    for s in (30..=210).step_by(30) {
        fleet.beat(0..2, t(s)).await;
    }
    // Unknown for the threshold, not longer: nothing yet.
    let r = fleet.sweep(t(100 + STALE)).await;
    assert_eq!(
        (r.marked_offline, r.node_health.unhealthy, r.node_health.marked_offline),
        (0, 0, 0),
        "{r:?}"
    );
    assert_eq!(fleet.record(dead).await.state, ProviderState::Available);

    let r = fleet.sweep(t(100 + STALE + 1)).await;
    assert_eq!(r.marked_offline, 0, "its heartbeats are fresh: {r:?}");
    assert_eq!(
        (r.node_health.read, r.node_health.marked_offline, r.jobs_closed),
        (2, 1, 1),
        "{r:?}"
    );
    let rec = fleet.record(dead).await;
    assert_eq!(rec.state, ProviderState::Offline);
    assert_eq!(rec.hb_at, t(210), "it still heartbeats");
    assert!(
        rec.offline_reason.as_deref().unwrap().starts_with("node_unreachable: node "),
        "{rec:?}"
    );
    assert_eq!(rec.node_unhealthy_since, Some(t(60)), "the kubelet's last renewal");
    assert!(fleet.marked(dead));
    let job = fleet.job("job-a").await;
    assert_eq!(job.get(job_attr::END_REASON).and_then(Value::as_str), Some("interrupted"));
    assert_eq!(job.get(job_attr::ENDED_AT).and_then(Value::as_i64).map(from_ms), Some(t(60)));
    assert_eq!(
        job.get(job_attr::DURATION_MS).and_then(Value::as_i64),
        Some(50_000),
        "billed from 10 to the kubelet's death at 60, not to its last heartbeat at 210"
    );
    // The healthy one is untouched.
    assert_eq!(fleet.record(alive).await.state, ProviderState::Available);
    assert!(!fleet.marked(alive));
    assert_eq!(
        fleet.job("job-b").await.get(job_attr::STATE).and_then(Value::as_str),
        Some("allocated")
    );

    // Its next heartbeat does not bring it back while the node is Unknown.
    fleet.beat(dead..dead + 1, t(240)).await;
    assert_eq!(fleet.record(dead).await.state, ProviderState::Offline);
    // The kubelet is back: Ready, its Lease renewing. The next heartbeat brings it back.
    fleet.set(dead, ReadyStatus::True, t(260), t(265));
    fleet.beat(dead..dead + 1, t(270)).await;
    let rec = fleet.record(dead).await;
    assert_eq!(rec.state, ProviderState::Available);
    assert_eq!(
        (rec.offline_reason, rec.node_unhealthy_since),
        (None, None),
        "the trouble is forgotten"
    );
    assert!(!fleet.marked(dead));
}

#[tokio::test]
async fn without_a_controller_a_stale_lease_alone_takes_it_offline_and_keeps_it_there() {
    // No node lifecycle controller: Ready stays True while the Lease stops at 60. The Lease is
    // the provider's clock: it counts after the threshold plus the allowance (300 s).
    let fleet = Fleet::new(1).await;
    fleet.allocate("job-a", t(10)).await;
    fleet.set(0, ReadyStatus::True, t(-3600), t(60));
    let limit = 60 + STALE + 300;
    for s in (30..=limit).step_by(30) {
        fleet.beat(0..1, t(s)).await;
    }
    let r = fleet.sweep(t(limit)).await;
    assert_eq!(r.node_health.marked_offline, 0, "{r:?}");
    let r = fleet.sweep(t(limit + 1)).await;
    assert_eq!((r.node_health.marked_offline, r.jobs_closed), (1, 1), "{r:?}");
    let rec = fleet.record(0).await;
    assert_eq!(rec.state, ProviderState::Offline);
    assert!(
        rec.offline_reason.as_deref().unwrap().starts_with("kubelet_lease_stale: "),
        "{rec:?}"
    );
    assert_eq!(
        fleet
            .job("job-a")
            .await
            .get(job_attr::ENDED_AT)
            .and_then(Value::as_i64)
            .map(from_ms),
        Some(t(60))
    );

    // Ready=True, but the Lease is still stale: its heartbeats do not bring it back.
    fleet.beat(0..1, t(limit + 30)).await;
    let rec = fleet.record(0).await;
    assert_eq!(rec.state, ProviderState::Offline, "flipped back onto a dead kubelet");
    assert!(fleet.marked(0));
    // The kubelet renews again: back on the next heartbeat.
    fleet.set(0, ReadyStatus::True, t(-3600), t(limit + 40));
    fleet.beat(0..1, t(limit + 60)).await;
    assert_eq!(fleet.record(0).await.state, ProviderState::Available);
    assert!(!fleet.marked(0));
}

#[tokio::test]
async fn most_nodes_unhealthy_at_once_marks_nobody() {
    // A controller manager that marked six of ten nodes Unknown at once (or an API server the
    // kubelets could not reach): the control plane's trouble, not the fleet's.
    let fleet = Fleet::new(10).await;
    for i in 0..6 {
        fleet.set(i, ReadyStatus::Unknown, t(10), t(5));
    }
    fleet.beat(0..10, t(150)).await;
    let r = fleet.sweep(t(160)).await;
    assert!(r.node_health.guard_held, "{r:?}");
    assert_eq!((r.node_health.unhealthy, r.node_health.marked_offline), (6, 0));
    for i in 0..10 {
        assert_eq!(fleet.record(i).await.state, ProviderState::Available, "provider {i}");
        assert!(!fleet.marked(i));
    }
    // Five of them recover: one dead node of ten is churn, and goes offline.
    for i in 1..6 {
        fleet.set(i, ReadyStatus::True, t(155), t(158));
    }
    let r = fleet.sweep(t(161)).await;
    assert!(!r.node_health.guard_held, "{r:?}");
    assert_eq!(r.node_health.marked_offline, 1);
    assert_eq!(fleet.record(0).await.state, ProviderState::Offline);
}

#[tokio::test]
async fn a_cluster_read_failure_marks_nobody() {
    let fleet = Fleet::new(2).await;
    fleet.set(0, ReadyStatus::Unknown, t(10), t(5));
    fleet.beat(0..2, t(150)).await;
    let failing = Arc::new(FaultyCluster::new(fleet.sim.clone()).failing_node_health_after(0));
    let r = fleet.sweep_on(failing, t(160)).await;
    assert!(r.node_health.read_failed, "{r:?}");
    assert_eq!((r.node_health.read, r.node_health.marked_offline), (0, 0));
    assert_eq!(fleet.record(0).await.state, ProviderState::Available);
    assert!(!fleet.marked(0));
    let r = fleet.sweep(t(161)).await;
    assert_eq!((r.node_health.read_failed, r.node_health.marked_offline), (false, 1), "{r:?}");
}

/// A window's list may be older than the sweep (its `continue` token reads the first page's
/// snapshot): a node that was Unknown in it and is Ready again now is read again, alone, before
/// it is marked — and kept. Before, the snapshot alone marked it offline (attacker review).
#[tokio::test]
async fn a_node_recovered_since_the_windows_snapshot_is_kept() {
    let fleet = Fleet::new(2).await;
    fleet.set(0, ReadyStatus::Unknown, t(10), t(5));
    fleet.beat(0..2, t(150)).await;
    let snapshot = fleet.sim.provider_node_health(None, 100).await.unwrap().nodes;
    fleet.set(0, ReadyStatus::True, t(140), t(150));
    let stale = Arc::new(FaultyCluster::new(fleet.sim.clone()).listing_snapshot(snapshot));
    let r = fleet.sweep_on(stale, t(160)).await;
    assert_eq!((r.node_health.unhealthy, r.node_health.marked_offline), (1, 0), "{r:?}");
    assert_eq!(fleet.record(0).await.state, ProviderState::Available);
    assert!(!fleet.marked(0));
}

#[tokio::test]
async fn each_sweep_reads_a_bounded_window_and_the_next_one_goes_on_from_there() {
    use staleness_sweeper::node_health::{NODE_PAGE, NODE_PAGES_PER_SWEEP};
    let window = NODE_PAGE as usize * NODE_PAGES_PER_SWEEP;
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let sim = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    for i in 0..window + 1 {
        sim.add_node(NodeInfo {
            name: format!("gpu-{i:04}"),
            ready: true,
            labels: BTreeMap::from([(labels::PROVIDER_ID.to_string(), format!("p{i}"))]),
            ..Default::default()
        });
    }
    // A broker node, no provider's: never read.
    sim.add_node(NodeInfo {
        name: "broker-1".into(),
        ready: true,
        ..Default::default()
    });
    let ctx = sweeper(store, sim, Duration::seconds(STALE));
    let mut read = vec![];
    for s in 0..3 {
        read.push(staleness_sweeper::sweep_once(&ctx, t(s)).await.unwrap().node_health.read);
    }
    assert_eq!(read, [window, 1, window], "a full window, the rest, then from the start");
}
