//! The node-health pass against the real control plane `scripts/test` starts
//! (`scripts/control_plane.sh`): two providers' Nodes, made as the admin and joined by the real
//! heartbeat recorder, their Ready conditions written through the status subresource and their
//! kubelets' Leases in `kube-node-lease` with chosen renewal times; the sweeper, as its own
//! ServiceAccount (the shipped RBAC and admission policies apply), marks offline the one whose
//! kubelet died 16 minutes ago though it still heartbeats, its job billed to the kubelet's last
//! renewal, and keeps the one whose Lease renews. Ignored without a control plane (counted as
//! skipped, never as passed).
//!
//! kube-controller-manager runs there: its node lifecycle controller sets `Ready=Unknown` on a
//! Node whose Lease it has not seen renewed for ~40 s. That cannot make this test flaky: the dead
//! node is judged by its Lease (older than any Unknown it may get), and the healthy one would
//! need to stay Unknown for longer than the 120 s threshold, which this test never waits for.

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::health::NODE_LEASE_NAMESPACE;
use worldland_core::cluster::Cluster;
use worldland_core::job::attr as job_attr;
use worldland_core::labels;
use worldland_core::messages::jobs::AllocateRequest;
use worldland_core::messages::ProviderState;
use worldland_core::provider::ProviderRecord;
use worldland_core::state::{from_ms, ItemStore, Table, Value};
use worldland_core::validation::node_name;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::lifecycle::{approve, fixture_shaped_provider, heartbeat, recorder};
use worldland_tests::real_cluster::{admin, as_worker, unique, Cleanup};
use worldland_tests::{event_sink, sweeper, Outcome};

/// A provider of our own (unique id and host name: the cluster is shared), approved in `store`.
async fn provider(n: usize, store: Arc<dyn ItemStore>, at: DateTime<Utc>) -> SimulatedProvider {
    let mut p = fixture_shaped_provider(n, at);
    p.provider_id = unique("nh");
    p.registration.provider_id = p.provider_id.clone();
    p.registration.spec.hostname = unique("host");
    // Tokens in memory: the recorder's delete of the unknown Secret is a 404, which is fine.
    let sim = Arc::new(worldland_adapters::cluster::simulated::SimulatedCluster::new("https://x:6443"));
    approve(&p, store, sim, at).await;
    p
}

fn name_of(p: &SimulatedProvider) -> String {
    node_name(&p.provider_id, &p.registration.spec.hostname)
}

/// The Node as its kubelet registers it (no worldland.io key: the recorder labels it).
async fn register(client: &kube::Client, name: &str, cleanup: &Cleanup) {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
    cleanup.node(name);
}

/// What the kubelet writes through the status subresource: its Ready condition.
async fn set_ready(client: &kube::Client, name: &str, ready: bool, since: DateTime<Utc>) {
    let at = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, reason) = if ready {
        ("True", "KubeletReady")
    } else {
        ("False", "KubeletNotReady")
    };
    let patch = json!({"status": {"conditions": [{
        "type": "Ready", "status": status, "reason": reason, "message": "written by the test",
        "lastHeartbeatTime": at, "lastTransitionTime": at,
    }]}});
    Api::<Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The kubelet's Lease, last renewed at `renewed` (made the first time).
async fn set_lease(client: &kube::Client, name: &str, renewed: DateTime<Utc>, cleanup: &Cleanup) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": renewed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)},
    });
    let params = PatchParams::apply("worldland-test").force();
    leases.patch(name, &params, &Patch::Apply(&lease)).await.unwrap();
    cleanup.lease(name);
}

async fn beat(p: &SimulatedProvider, ctx: &heartbeat_recorder::Context, at: DateTime<Utc>) {
    let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(p, at, 0), ctx, at).await);
    assert_eq!(out, Outcome::Done, "{}", p.provider_id);
}

async fn record(store: &dyn ItemStore, p: &SimulatedProvider) -> ProviderRecord {
    ProviderRecord::load(store, &p.provider_id).await.unwrap().unwrap()
}

/// Whether the Node carries the offline label and taint.
async fn marked(client: &kube::Client, name: &str) -> bool {
    let node = Api::<Node>::all(client.clone()).get(name).await.unwrap();
    let label = node.metadata.labels.unwrap_or_default().get(labels::STATUS).cloned();
    let tainted = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .any(|t| t.key == labels::OFFLINE_TAINT);
    label.as_deref() == Some(labels::STATUS_OFFLINE) && tainted
}

async fn job(store: &dyn ItemStore, id: &str) -> std::collections::BTreeMap<String, Value> {
    store.get(Table::Jobs, id).await.unwrap().unwrap().into_iter().collect()
}

/// Two providers of our own, joined at `joined` by the real recorder: their Nodes registered,
/// Ready since then, their Leases renewed at `renewed`.
async fn two_joined(
    client: &kube::Client,
    store: &Arc<dyn ItemStore>,
    recorder_ctx: &heartbeat_recorder::Context,
    joined: DateTime<Utc>,
    renewed: DateTime<Utc>,
    cleanup: &Cleanup,
) -> [SimulatedProvider; 2] {
    let ps = [
        provider(901, store.clone(), joined).await,
        provider(902, store.clone(), joined).await,
    ];
    for p in &ps {
        register(client, &name_of(p), cleanup).await;
        set_ready(client, &name_of(p), true, joined).await;
        set_lease(client, &name_of(p), renewed, cleanup).await;
        beat(p, recorder_ctx, joined).await;
        assert_eq!(record(store.as_ref(), p).await.state, ProviderState::Available, "{}", p.provider_id);
    }
    ps
}

/// A job taking all four GPUs of one provider, allocated at `at`; the provider it landed on.
async fn allocate(store: &Arc<dyn ItemStore>, job_id: &str, at: DateTime<Utc>) -> String {
    let replies = Arc::new(worldland_adapters::replies::MemoryReplies::default());
    let ctx = allocator::Context::new(store.clone(), event_sink(), replies);
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
    job(store.as_ref(), job_id).await[job_attr::PROVIDER].as_str().unwrap().to_string()
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_provider_whose_kubelet_died_is_marked_offline_and_a_healthy_one_kept() {
    let client = admin().await;
    let cleanup = Cleanup::default();
    let now = Utc::now().trunc_subsecs(0);
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let recorder_ctx = recorder(store.clone(), Arc::new(KubeCluster::new(as_worker("heartbeat-recorder").await)));
    // Half an hour ago two providers joined; twenty minutes ago each took a job of four GPUs.
    let ps = two_joined(&client, &store, &recorder_ctx, now - Duration::minutes(30), now, &cleanup).await;
    let on_a = allocate(&store, "job-a", now - Duration::minutes(20)).await;
    allocate(&store, "job-b", now - Duration::minutes(20)).await;
    let (dead, alive) = if on_a == ps[0].provider_id {
        (&ps[0], &ps[1])
    } else {
        (&ps[1], &ps[0])
    };
    let (dead_job, alive_job) = ("job-a", "job-b");

    // Sixteen minutes ago the dead one's kubelet renewed its Lease for the last time; a minute
    // later it was NotReady. Its agent still heartbeats; so does the healthy one's.
    let died = now - Duration::minutes(16);
    set_lease(&client, &name_of(dead), died, &cleanup).await;
    set_ready(&client, &name_of(dead), false, died + Duration::minutes(1)).await;
    for p in [dead, alive] {
        beat(p, &recorder_ctx, now - Duration::seconds(10)).await;
    }

    // The sweeper as its ServiceAccount. Its guard is off here: the shared cluster holds other
    // tests' provider nodes, no kubelet behind them.
    let sweeping = staleness_sweeper::Context {
        guard: staleness_sweeper::StallGuard { share: 1.0, min: 5 },
        ..sweeper(
            store.clone(),
            Arc::new(KubeCluster::new(as_worker("staleness-sweeper").await)) as Arc<dyn Cluster>,
            Duration::seconds(120),
        )
    };
    let r = staleness_sweeper::sweep_once(&sweeping, Utc::now()).await.unwrap();
    assert!(!r.node_health.read_failed, "{r:?}");
    assert!(r.node_health.read >= 2, "{r:?}");
    assert_eq!(r.marked_offline, 0, "heartbeats are fresh: {r:?}");
    let rec = record(store.as_ref(), dead).await;
    assert_eq!(rec.state, ProviderState::Offline);
    assert!(
        rec.offline_reason.as_deref().unwrap().starts_with("kubelet_lease_stale: "),
        "{rec:?}"
    );
    assert_eq!(rec.node_unhealthy_since, Some(died));
    assert!(marked(&client, &name_of(dead)).await);
    let j = job(store.as_ref(), dead_job).await;
    assert_eq!(j.get(job_attr::END_REASON).and_then(Value::as_str), Some("interrupted"));
    assert_eq!(j.get(job_attr::ENDED_AT).and_then(Value::as_i64).map(from_ms), Some(died));
    assert_eq!(
        j.get(job_attr::DURATION_MS).and_then(Value::as_i64),
        Some(4 * 60_000),
        "to its last renewal"
    );

    assert_eq!(record(store.as_ref(), alive).await.state, ProviderState::Available);
    assert!(!marked(&client, &name_of(alive)).await);
    assert_eq!(
        job(store.as_ref(), alive_job).await.get(job_attr::STATE).and_then(Value::as_str),
        Some("allocated")
    );

    // Its agent's next heartbeat does not bring it back onto a NotReady node.
    beat(dead, &recorder_ctx, now + Duration::seconds(15)).await;
    assert_eq!(record(store.as_ref(), dead).await.state, ProviderState::Offline);
    // The kubelet comes back: Ready, its Lease renewed. The next heartbeat brings it back.
    let back = Utc::now().trunc_subsecs(0);
    set_lease(&client, &name_of(dead), back, &cleanup).await;
    set_ready(&client, &name_of(dead), true, back).await;
    beat(dead, &recorder_ctx, back.max(now) + Duration::seconds(30)).await;
    let rec = record(store.as_ref(), dead).await;
    assert_eq!(rec.state, ProviderState::Available, "{rec:?}");
    assert_eq!(rec.offline_reason, None);
    assert!(!marked(&client, &name_of(dead)).await);
}
