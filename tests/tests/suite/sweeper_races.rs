//! Node marks follow the stored state whatever the interleaving of a sweep and a recovery. The
//! sweeper's cluster pauses before a chosen call; the heartbeat lands there, step by step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use tokio::sync::oneshot;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_core::cluster::bootstrap::BootstrapToken;
use worldland_core::cluster::{
    Cluster, ClusterInfo, ClusterResult, Created, Csr, CsrDecision, NodeHealth, NodeHealthPage, NodeInfo, Taint,
};
use worldland_core::labels;
use worldland_core::messages::ProviderState;
use worldland_core::provider::ProviderRecord;
use worldland_core::state::ItemStore;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::lifecycle::{available_provider, heartbeat, recorder};
use worldland_tests::{sweeper, Outcome};

/// The cluster calls a test can stop before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The `worldland.io/status=offline` label.
    OfflineLabel,
    /// Adding the offline taint.
    OfflineTaint,
}

type Gate = (At, oneshot::Sender<()>, oneshot::Receiver<()>);

/// A simulated cluster that stops once before the chosen call until the test lets it go on.
struct Pausing {
    inner: Arc<SimulatedCluster>,
    gate: Mutex<Option<Gate>>,
}

impl Pausing {
    fn new(inner: Arc<SimulatedCluster>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gate: Mutex::new(None),
        })
    }

    /// Arms the gate: the first call of `at` signals `reached`, then waits for `go`.
    fn pause_before(&self, at: At) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *self.gate.lock().unwrap() = Some((at, reached_tx, go_rx));
        (reached_rx, go_tx)
    }

    async fn pass(&self, at: At) {
        let gate = {
            let mut g = self.gate.lock().unwrap();
            if g.as_ref().is_some_and(|(a, _, _)| *a == at) {
                g.take()
            } else {
                None
            }
        };
        if let Some((_, reached, go)) = gate {
            let _ = reached.send(());
            let _ = go.await;
        }
    }
}

#[async_trait]
impl Cluster for Pausing {
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo> {
        self.inner.cluster_info().await
    }
    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        self.inner.create_bootstrap_token(token).await
    }
    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>> {
        self.inner.get_bootstrap_token(token_id).await
    }
    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()> {
        self.inner.delete_bootstrap_token(token_id).await
    }
    async fn get_node(&self, name: &str) -> ClusterResult<Option<NodeInfo>> {
        self.inner.get_node(name).await
    }
    async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> ClusterResult<()> {
        if labels
            .get(labels::STATUS)
            .is_some_and(|v| v.as_deref() == Some(labels::STATUS_OFFLINE))
        {
            self.pass(At::OfflineLabel).await;
        }
        self.inner.patch_node_metadata(name, labels, annotations).await
    }
    async fn set_offline_taint(&self, name: &str, offline: bool) -> ClusterResult<()> {
        if offline {
            self.pass(At::OfflineTaint).await;
        }
        self.inner.set_offline_taint(name, offline).await
    }
    async fn set_taint(&self, name: &str, taint: &Taint, present: bool) -> ClusterResult<()> {
        self.inner.set_taint(name, taint, present).await
    }
    async fn create_provider_node(&self, name: &str) -> ClusterResult<Created> {
        self.inner.create_provider_node(name).await
    }
    async fn undecided_kubelet_csrs(&self) -> ClusterResult<Vec<Csr>> {
        self.inner.undecided_kubelet_csrs().await
    }
    async fn decide_csr(&self, csr: &Csr, decision: &CsrDecision) -> ClusterResult<()> {
        self.inner.decide_csr(csr, decision).await
    }
    async fn csr_change(&self, limit: std::time::Duration) {
        self.inner.csr_change(limit).await
    }
    async fn provider_node_health(&self, cursor: Option<&str>, limit: u32) -> ClusterResult<NodeHealthPage> {
        self.inner.provider_node_health(cursor, limit).await
    }
    async fn node_health(&self, name: &str) -> ClusterResult<Option<NodeHealth>> {
        self.inner.node_health(name).await
    }
}

const STALE: i64 = 120;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn node_name(p: &SimulatedProvider) -> String {
    worldland_core::validation::node_name(&p.provider_id, &p.registration.spec.hostname)
}

/// (the taint, the status label) on `p`'s node.
fn marks(sim: &SimulatedCluster, p: &SimulatedProvider) -> (bool, bool) {
    let node = sim.node(&node_name(p)).unwrap();
    (
        node.taints.iter().any(|t| t.key == labels::OFFLINE_TAINT),
        node.labels.get(labels::STATUS).map(String::as_str) == Some(labels::STATUS_OFFLINE),
    )
}

async fn state(store: &dyn ItemStore, p: &SimulatedProvider) -> ProviderState {
    ProviderRecord::load(store, &p.provider_id).await.unwrap().unwrap().state
}

/// The heartbeat that brings `p` back, through the recorder on the unpaused cluster.
async fn come_back(store: &Arc<dyn ItemStore>, sim: &Arc<SimulatedCluster>, p: &SimulatedProvider, at: DateTime<Utc>) {
    let ctx = recorder(store.clone(), sim.clone());
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(p, at, 0), &ctx, at).await),
        Outcome::Done
    );
}

/// A sweep that takes `p` offline stops before `at`; `p`'s heartbeat lands there. Afterwards
/// the provider is available and its node carries no offline mark.
async fn heartbeat_lands_during_the_sweep_before(at: At) {
    let (store, sim, p) = available_provider(40, t0()).await;
    let pausing = Pausing::new(sim.clone());
    let ctx = Arc::new(sweeper(store.clone(), pausing.clone(), Duration::seconds(STALE)));
    let now = t0() + Duration::seconds(STALE + 30);
    let (reached, go) = pausing.pause_before(at);
    let sweep = tokio::spawn({
        let ctx = ctx.clone();
        async move { staleness_sweeper::sweep_once(&ctx, now).await.unwrap() }
    });
    reached.await.unwrap();
    assert_eq!(
        state(store.as_ref(), &p).await,
        ProviderState::Offline,
        "{at:?}: the offline write came first"
    );
    come_back(&store, &sim, &p, now).await;
    assert_eq!(state(store.as_ref(), &p).await, ProviderState::Available, "{at:?}: recovered");
    go.send(()).unwrap();
    let report = sweep.await.unwrap();
    assert_eq!(report.marked_offline, 1, "{at:?}");
    assert_eq!(state(store.as_ref(), &p).await, ProviderState::Available, "{at:?}");
    assert_eq!(marks(&sim, &p), (false, false), "{at:?}: the sweeper undid its marks");
}

#[tokio::test]
async fn a_heartbeat_between_the_offline_write_and_the_label() {
    heartbeat_lands_during_the_sweep_before(At::OfflineLabel).await;
}

#[tokio::test]
async fn a_heartbeat_between_the_label_and_the_taint() {
    heartbeat_lands_during_the_sweep_before(At::OfflineTaint).await;
}

#[tokio::test]
async fn a_heartbeat_after_the_sweep_removes_the_marks() {
    let (store, sim, p) = available_provider(41, t0()).await;
    let ctx = sweeper(store.clone(), sim.clone(), Duration::seconds(STALE));
    let now = t0() + Duration::seconds(STALE + 30);
    assert_eq!(staleness_sweeper::sweep_once(&ctx, now).await.unwrap().marked_offline, 1);
    assert_eq!(marks(&sim, &p), (true, true));
    come_back(&store, &sim, &p, now + Duration::seconds(1)).await;
    assert_eq!(state(store.as_ref(), &p).await, ProviderState::Available);
    assert_eq!(marks(&sim, &p), (false, false));
    // Nothing for the reconcile pass to do.
    let mut cursor = 0;
    let r = staleness_sweeper::reconcile_marks(&ctx, 10, &mut cursor).await.unwrap();
    assert_eq!((r.checked, r.repaired), (1, 0));
}

#[tokio::test]
async fn the_reconcile_pass_repairs_marks_that_disagree_with_the_state() {
    // An offline provider whose marks never reached its node (the cluster failed then).
    let (store, sim, p) = available_provider(42, t0()).await;
    let ctx = sweeper(store.clone(), sim.clone(), Duration::seconds(STALE));
    let now = t0() + Duration::seconds(STALE + 30);
    assert_eq!(staleness_sweeper::sweep_once(&ctx, now).await.unwrap().marked_offline, 1);
    sim.set_offline_taint(&node_name(&p), false).await.unwrap();
    let status = BTreeMap::from([(labels::STATUS.to_string(), None)]);
    sim.patch_node_metadata(&node_name(&p), &status, &BTreeMap::new()).await.unwrap();
    assert_eq!(marks(&sim, &p), (false, false));
    let mut cursor = 0;
    let r = staleness_sweeper::reconcile_marks(&ctx, 10, &mut cursor).await.unwrap();
    assert_eq!((r.checked, r.repaired), (1, 1));
    assert_eq!(marks(&sim, &p), (true, true), "offline without marks → marked");

    // An available provider whose node kept a taint (a late sweeper's, say).
    come_back(&store, &sim, &p, now + Duration::seconds(1)).await;
    sim.set_offline_taint(&node_name(&p), true).await.unwrap();
    assert_eq!(marks(&sim, &p), (true, false));
    let r = staleness_sweeper::reconcile_marks(&ctx, 10, &mut cursor).await.unwrap();
    assert_eq!((r.checked, r.repaired), (1, 1));
    assert_eq!(marks(&sim, &p), (false, false), "available with marks → unmarked");
    assert_eq!(state(store.as_ref(), &p).await, ProviderState::Available);
}

#[tokio::test]
async fn a_reconcile_pass_is_bounded_and_takes_turns() {
    let (store, sim, _) = available_provider(43, t0()).await;
    // Two more providers on the same store and cluster.
    let mut more = vec![];
    for n in [44, 45] {
        let p = worldland_tests::lifecycle::fixture_shaped_provider(n, t0());
        worldland_tests::lifecycle::approve(&p, store.clone(), sim.clone(), t0()).await;
        sim.add_node(worldland_tests::lifecycle::node_for(&p, true));
        come_back(&store, &sim, &p, t0()).await;
        more.push(p);
    }
    // Every node wrongly tainted.
    for p in &more {
        sim.set_offline_taint(&node_name(p), true).await.unwrap();
    }
    let ctx = sweeper(store.clone(), sim.clone(), Duration::seconds(STALE));
    let mut cursor = 0;
    let first = staleness_sweeper::reconcile_marks(&ctx, 2, &mut cursor).await.unwrap();
    assert_eq!(first.checked, 2, "at most the limit per pass");
    let second = staleness_sweeper::reconcile_marks(&ctx, 2, &mut cursor).await.unwrap();
    assert_eq!(second.checked, 2);
    assert_eq!(first.repaired + second.repaired, 2, "the next pass goes on where the last stopped");
    for p in &more {
        assert_eq!(marks(&sim, p), (false, false));
    }
}

#[tokio::test]
async fn a_recovery_during_a_reconcile_mark_is_followed() {
    // Offline, marks missing; the reconcile pass stops before its taint, the provider comes back.
    let (store, sim, p) = available_provider(46, t0()).await;
    let plain = sweeper(store.clone(), sim.clone(), Duration::seconds(STALE));
    let now = t0() + Duration::seconds(STALE + 30);
    assert_eq!(staleness_sweeper::sweep_once(&plain, now).await.unwrap().marked_offline, 1);
    sim.set_offline_taint(&node_name(&p), false).await.unwrap();
    let status = BTreeMap::from([(labels::STATUS.to_string(), None)]);
    sim.patch_node_metadata(&node_name(&p), &status, &BTreeMap::new()).await.unwrap();

    let pausing = Pausing::new(sim.clone());
    let ctx = Arc::new(sweeper(store.clone(), pausing.clone(), Duration::seconds(STALE)));
    let (reached, go) = pausing.pause_before(At::OfflineTaint);
    let pass = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut cursor = 0;
            staleness_sweeper::reconcile_marks(&ctx, 10, &mut cursor).await.unwrap()
        }
    });
    reached.await.unwrap();
    come_back(&store, &sim, &p, now + Duration::seconds(1)).await;
    go.send(()).unwrap();
    pass.await.unwrap();
    assert_eq!(state(store.as_ref(), &p).await, ProviderState::Available);
    assert_eq!(marks(&sim, &p), (false, false), "the pass read the state again and undid its marks");
}
