//! The heartbeat recorder and the sweeper against the strict Kubernetes API mock (the exact
//! label patch, the token deletion, the taint with every other taint kept, no call at all in
//! steady state), and bad heartbeats refused with their reason, changing nothing.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::Cluster;
use worldland_core::messages::{ProviderState, StreamEnvelope};
use worldland_core::provider::ProviderRecord;
use worldland_core::signature::{sign_personal, SignaturePolicy};
use worldland_core::state::{ItemStore, Table};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::kube_mock::{fixture, mock_client, ApiServerVerifier, Expect, LEASES_PATH};
use worldland_tests::lifecycle::{approve, available_provider, fixture_shaped_provider, heartbeat, node_for, recorder};
use worldland_tests::Outcome;

/// The API path of the node the broker assigned `p` (fixture-shaped: host gpu-server-01).
fn node_of(p: &SimulatedProvider) -> String {
    format!("/api/v1/nodes/{}", node_for(p, true).name)
}
const MERGE: &str = "application/merge-patch+json";
const WAIT: StdDuration = StdDuration::from_secs(5);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn kube() -> (Arc<dyn Cluster>, worldland_tests::kube_mock::Handle) {
    let (client, handle) = mock_client();
    (Arc::new(KubeCluster::new(client)), handle)
}

fn node_body(name: &str) -> Value {
    fixture(name).response_body
}

/// The fixture node as labelled for `p` (the recording carries another provider's id).
fn labelled_for(p: &SimulatedProvider) -> Value {
    let mut node = node_body("16-patch-node-labels.json");
    node["metadata"]["name"] = json!(node_for(p, true).name);
    node["metadata"]["labels"]["worldland.io/provider-id"] = json!(p.provider_id);
    node
}

fn patch(node: &str, body: Value, response: Value) -> Expect {
    Expect::new("PATCH", node, "&fieldManager=worldland", 200, response).exact_body(MERGE, body)
}

/// The read of the node's Lease, answered as a node without a kubelet has none.
fn no_lease(p: &SimulatedProvider) -> Expect {
    let name = node_for(p, true).name;
    let mut body = fixture("40-get-lease-not-found.json").response_body;
    body["message"] = json!(format!("leases.coordination.k8s.io \"{name}\" not found"));
    body["details"]["name"] = json!(name);
    Expect::new("GET", format!("{LEASES_PATH}/{name}"), "", 404, body)
}

/// The node-health pass's list answered with `nodes` (shaped as the API server lists them).
fn provider_nodes(nodes: Vec<Value>) -> Value {
    let mut list = fixture("41-list-nodes-provider-id.json").response_body;
    list["items"] = json!(nodes
        .into_iter()
        .map(|mut n| {
            let o = n.as_object_mut().unwrap();
            o.remove("kind");
            o.remove("apiVersion");
            n
        })
        .collect::<Vec<_>>());
    list
}

async fn state_of(store: &dyn ItemStore, id: &str) -> ProviderRecord {
    ProviderRecord::load(store, id).await.unwrap().unwrap()
}

#[tokio::test]
async fn join_labels_the_node_deletes_the_token_and_steady_state_makes_no_call() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let p = fixture_shaped_provider(1, now);
    approve(&p, store.clone(), Arc::new(SimulatedCluster::new("https://10.0.0.1:6443")), now).await;
    let token_id = state_of(store.as_ref(), &p.provider_id).await.token_id.unwrap();

    // First heartbeat: node read, one label patch (with the first annotation), token deleted,
    // node read again (Ready and labelled), its health (the Node and its Lease: none, no kubelet
    // runs here) → available.
    let (cluster, handle) = kube();
    let labels = json!({
        "worldland.io/active-jobs": "0", "worldland.io/gpu-count": "4", "worldland.io/gpu-model": "RTX-4090",
        "worldland.io/provider-id": p.provider_id, "worldland.io/rental-type": "gpu"
    });
    let mut deleted = fixture("11-delete-bootstrap-token.json").response_body;
    deleted["details"]["name"] = json!(format!("bootstrap-token-{token_id}"));
    let api = ApiServerVerifier::run(
        handle,
        vec![
            Expect::new("GET", node_of(&p), "", 200, node_body("15-get-node.json")),
            patch(
                &node_of(&p),
                json!({"metadata": {"labels": labels, "annotations": {"worldland.io/last-heartbeat": "2026-11-27T12:00:00Z"}}}),
                node_body("16-patch-node-labels.json"),
            ),
            // kube-rs sends DeleteOptions as an empty JSON object.
            Expect::new(
                "DELETE",
                format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}"),
                "",
                200,
                deleted,
            )
            .exact_body("application/json", json!({})),
            Expect::new("GET", node_of(&p), "", 200, labelled_for(&p)),
            Expect::new("GET", node_of(&p), "", 200, labelled_for(&p)),
            no_lease(&p),
        ],
    );
    let ctx = recorder(store.clone(), cluster);
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, now, 0), &ctx, now).await),
        Outcome::Done
    );
    api.finish(WAIT).await;
    let rec = state_of(store.as_ref(), &p.provider_id).await;
    assert_eq!(rec.state, ProviderState::Available);
    assert_eq!(rec.heartbeat_status.as_deref(), Some("available"));

    // Steady state: ten heartbeats, no Kubernetes call at all.
    let (cluster, handle) = kube();
    let api = ApiServerVerifier::run(handle, vec![]);
    let ctx = recorder(store.clone(), cluster);
    for i in 1..=9 {
        let at = now + Duration::seconds(30 * i);
        assert_eq!(
            Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, at, 0), &ctx, at).await),
            Outcome::Done
        );
    }
    api.finish(WAIT).await;

    // Five minutes on, active jobs change too: both in one patch. Then nothing until the
    // annotation is due again.
    let (cluster, handle) = kube();
    let api = ApiServerVerifier::run(
        handle,
        vec![
            patch(
                &node_of(&p),
                json!({"metadata": {"labels": {"worldland.io/active-jobs": "1"}, "annotations": {"worldland.io/last-heartbeat": "2026-11-27T12:05:00Z"}}}),
                node_body("18-patch-node-annotation-heartbeat.json"),
            ),
            patch(
                &node_of(&p),
                json!({"metadata": {"annotations": {"worldland.io/last-heartbeat": "2026-11-27T12:10:00Z"}}}),
                node_body("18-patch-node-annotation-heartbeat.json"),
            ),
        ],
    );
    let ctx = recorder(store.clone(), cluster);
    for s in (300..=600).step_by(30) {
        let at = now + Duration::seconds(s);
        assert_eq!(
            Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, at, 1), &ctx, at).await),
            Outcome::Done
        );
    }
    api.finish(WAIT).await;
}

#[tokio::test]
async fn offline_taint_keeps_other_taints_survives_a_conflict_and_is_removed_on_recovery() {
    let now = t0();
    let (store, _sim, p) = available_provider(2, now).await;

    // The sweeper, three minutes later: status label, then the taint by read-modify-write with
    // the resourceVersion as precondition; the first write meets a conflict and is redone.
    let labelled = node_body("16-patch-node-labels.json");
    let mut newer = labelled.clone();
    newer["metadata"]["resourceVersion"] = json!("204");
    let not_ready = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
    let offline = json!({"key": "worldland.io/offline", "value": "true", "effect": "NoSchedule"});
    let (cluster, handle) = kube();
    let conflict = fixture("26-patch-node-stale-resource-version.json").response_body;
    let api = ApiServerVerifier::run(
        handle,
        vec![
            patch(
                &node_of(&p),
                json!({"metadata": {"labels": {"worldland.io/status": "offline"}}}),
                labelled.clone(),
            ),
            Expect::new("GET", node_of(&p), "", 200, labelled.clone()),
            Expect::new("PATCH", node_of(&p), "&fieldManager=worldland", 409, conflict).exact_body(
                MERGE,
                json!({"metadata": {"resourceVersion": "203"}, "spec": {"taints": [not_ready, offline]}}),
            ),
            Expect::new("GET", node_of(&p), "", 200, newer.clone()),
            patch(
                &node_of(&p),
                json!({"metadata": {"resourceVersion": "204"}, "spec": {"taints": [not_ready, offline]}}),
                node_body("19-patch-node-add-taint.json"),
            ),
            // The node-health pass: the provider nodes not marked offline — none now (this one
            // was just marked: nobody judges it).
            Expect::new(
                "GET",
                "/api/v1/nodes",
                "&labelSelector=worldland.io%2Fprovider-id%2Cworldland.io%2Fstatus%21%3Doffline&limit=100",
                200,
                provider_nodes(vec![]),
            ),
        ],
    );
    let sweeper = worldland_tests::sweeper(store.clone(), cluster, Duration::seconds(120));
    let report = staleness_sweeper::sweep_once(&sweeper, now + Duration::minutes(3)).await.unwrap();
    assert_eq!(report.marked_offline, 1);
    api.finish(WAIT).await;
    assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Offline);

    // It comes back onto its own Ready node (checked first, then its health: no Lease here): our
    // taint goes (the other stays), the status label goes, available again.
    let mut tainted = labelled_for(&p);
    tainted["metadata"]["resourceVersion"] = json!("205");
    tainted["spec"]["taints"] = json!([not_ready, offline]);
    // Marked offline, as the sweeper left it: its Lease is read all the same (before, a node
    // carrying this label was returned without its Lease, and a dead kubelet came back).
    tainted["metadata"]["labels"]["worldland.io/status"] = json!("offline");
    let (cluster, handle) = kube();
    let api = ApiServerVerifier::run(
        handle,
        vec![
            Expect::new("GET", node_of(&p), "", 200, tainted.clone()),
            Expect::new("GET", node_of(&p), "", 200, tainted.clone()),
            no_lease(&p),
            Expect::new("GET", node_of(&p), "", 200, tainted),
            patch(
                &node_of(&p),
                json!({"metadata": {"resourceVersion": "205"}, "spec": {"taints": [not_ready]}}),
                labelled.clone(),
            ),
            patch(
                &node_of(&p),
                json!({"metadata": {"labels": {"worldland.io/status": null}}}),
                labelled,
            ),
        ],
    );
    let at = now + Duration::minutes(4);
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, at, 0), &recorder(store.clone(), cluster), at).await),
        Outcome::Done
    );
    api.finish(WAIT).await;
    assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Available);
}

#[tokio::test]
async fn a_node_that_contradicts_the_spec_leaves_the_provider_unschedulable() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let mut p = fixture_shaped_provider(3, now);
    p.registration.capacity.gpu_count = Some(8);
    p.registration.spec.total_gpus = 8;
    let gpu = p.registration.spec.gpus[0].clone();
    p.registration.spec.gpus = vec![gpu; 8];
    approve(&p, store.clone(), Arc::new(SimulatedCluster::new("https://10.0.0.1:6443")), now).await;
    let token_id = state_of(store.as_ref(), &p.provider_id).await.token_id.unwrap();
    // The fixture node reports 4 nvidia.com/gpu: no labels, the token still goes.
    let (cluster, handle) = kube();
    let api = ApiServerVerifier::run(
        handle,
        vec![
            Expect::new("GET", node_of(&p), "", 200, node_body("15-get-node.json")),
            Expect::new(
                "DELETE",
                format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}"),
                "",
                200,
                fixture("11-delete-bootstrap-token.json").response_body,
            )
            .exact_body("application/json", json!({})),
        ],
    );
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, now, 0), &recorder(store.clone(), cluster), now).await),
        Outcome::Done
    );
    api.finish(WAIT).await;
    let rec = state_of(store.as_ref(), &p.provider_id).await;
    assert_eq!(rec.state, ProviderState::Joined);
    assert_eq!(
        rec.unschedulable.as_deref(),
        Some("node reports 4 nvidia.com/gpu, the provider claimed 8")
    );
}

#[tokio::test]
async fn a_heartbeat_before_the_node_exists_is_refused() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let p = fixture_shaped_provider(4, now);
    approve(&p, store.clone(), Arc::new(SimulatedCluster::new("https://10.0.0.1:6443")), now).await;
    let (cluster, handle) = kube();
    let mut missing = fixture("22-get-node-not-found.json").response_body;
    missing["details"]["name"] = json!("gpu-server-01");
    let api = ApiServerVerifier::run(handle, vec![Expect::new("GET", node_of(&p), "", 404, missing)]);
    let out = Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, now, 0), &recorder(store.clone(), cluster), now).await);
    assert!(matches!(out, Outcome::Rejected(r) if r.reason.code() == "node_not_found"));
    api.finish(WAIT).await;
    assert_eq!(state_of(store.as_ref(), &p.provider_id).await.state, ProviderState::Approved);
}

fn resign(env: &StreamEnvelope, data: String, key: &k256::ecdsa::SigningKey) -> StreamEnvelope {
    StreamEnvelope {
        signature: Some(sign_personal(key, data.as_bytes())),
        data,
        ..env.clone()
    }
}

#[tokio::test]
async fn bad_heartbeats_are_refused_with_their_reason_and_change_nothing() {
    let now = t0();
    let (store, sim, p) = available_provider(5, now).await;
    let ctx = recorder(store.clone(), sim.clone());
    let last = now + Duration::seconds(60);
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, last, 0), &ctx, last).await),
        Outcome::Done
    );
    // A second provider, registered but not approved.
    let pending = fixture_shaped_provider(6, now);
    let reg_ctx = registration_handler::Context {
        store: store.clone(),
        bus: worldland_tests::validated_sink(),
        replies: Arc::new(worldland_adapters::replies::MemoryReplies::default()),
        policy: Default::default(),
        signatures: SignaturePolicy::Required,
    };
    assert_eq!(
        Outcome::from(registration_handler::handle(&pending.envelope("provider:registration", "9-0"), &reg_ctx, now).await),
        Outcome::Done
    );

    let at = last + Duration::seconds(30);
    let good = heartbeat(&p, at, 0);
    let v: Value = serde_json::from_str(&good.data).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = v.clone();
        f(&mut v);
        resign(&good, v.to_string(), &p.key)
    };
    let thief = fixture_shaped_provider(7, now);
    let mut tampered = good.clone();
    tampered.data = tampered.data.replace("\"cpu_usage\":40.0", "\"cpu_usage\":1.0");
    let cases: Vec<(&str, StreamEnvelope, &str)> = vec![
        (
            "unknown provider",
            with(&|v| v["provider_id"] = json!("nobody-here")),
            "unknown_provider",
        ),
        (
            "invalid provider id",
            with(&|v| v["provider_id"] = json!("Not Valid")),
            "invalid_provider_id",
        ),
        (
            "signed by another wallet",
            resign(&good, good.data.clone(), &thief.key),
            "signature_mismatch",
        ),
        ("changed after signing", tampered, "signature_mismatch"),
        (
            "no signature",
            StreamEnvelope {
                signature: None,
                ..good.clone()
            },
            "signature_missing",
        ),
        (
            "signature not hex",
            StreamEnvelope {
                signature: Some("0xnothex".into()),
                ..good.clone()
            },
            "signature_malformed",
        ),
        (
            "outside the replay window",
            heartbeat(&p, at - Duration::minutes(10), 0),
            "timestamp_outside_window",
        ),
        (
            "from the future",
            heartbeat(&p, at + Duration::hours(1), 0),
            "timestamp_outside_window",
        ),
        (
            "active_jobs as a word",
            with(&|v| v["active_jobs"] = json!("one")),
            "malformed_json",
        ),
        ("negative active_jobs", with(&|v| v["active_jobs"] = json!(-1)), "malformed_json"),
        ("gpu_usage as a string", with(&|v| v["gpu_usage"] = json!("93%")), "malformed_json"),
        (
            "no timestamp",
            with(&|v| drop(v.as_object_mut().unwrap().remove("timestamp"))),
            "malformed_json",
        ),
        (
            "not the provider's node",
            with(&|v| v["node_name"] = json!("someone-elses-node")),
            "node_name_mismatch",
        ),
        ("before approval", heartbeat(&pending, at, 0), "not_approved"),
        ("not JSON", resign(&good, "{heartbeat".into(), &p.key), "malformed_json"),
        ("oversize", with(&|v| v["status"] = json!("x".repeat(70 * 1024))), "entry_too_large"),
    ];
    assert!(cases.len() >= 11);
    let before = store.scan(Table::Providers).await.unwrap();
    let writes = sim.writes();
    for (name, env, reason) in cases {
        match Outcome::from(heartbeat_recorder::handle(&env, &ctx, at).await) {
            Outcome::Rejected(r) => assert_eq!(r.reason.code(), reason, "{name}: {}", r.message),
            other => panic!("{name}: expected {reason}, got {other:?}"),
        }
        assert_eq!(store.scan(Table::Providers).await.unwrap(), before, "{name}: the store changed");
        assert_eq!(sim.writes(), writes, "{name}: the cluster was written");
    }
    // The same heartbeat delivered twice, or an older one overtaken by a later: nothing changes
    // and neither is an error (settled as done, never dead-lettered).
    for (name, older) in [("the same again", last), ("older than the last one", last - Duration::seconds(30))] {
        assert_eq!(
            Outcome::from(heartbeat_recorder::handle(&heartbeat(&p, older, 0), &ctx, at).await),
            Outcome::Done,
            "{name}"
        );
        assert_eq!(store.scan(Table::Providers).await.unwrap(), before, "{name}: the store changed");
        assert_eq!(sim.writes(), writes, "{name}: the cluster was written");
    }
}

async fn placement_model(store: &dyn ItemStore, id: &str) -> Option<String> {
    let item = store.get(Table::Providers, id).await.unwrap().unwrap();
    item.get(worldland_core::state::PLACEMENT_MODEL_ATTR)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// The placement index holds available providers only: a provider is filed when it becomes
/// available, and one available before the index existed (no `place_model`) is filed by its next
/// heartbeat, once; a job naming its model then finds it.
#[tokio::test]
async fn an_available_provider_stored_before_the_placement_index_is_filed_by_its_next_heartbeat() {
    use worldland_core::state::{Cond, Op, PlacementQuery, PLACEMENT_MODEL_ATTR};
    let now = t0();
    let (store, cluster, p) = available_provider(1, now).await;
    let id = p.provider_id.as_str();
    assert_eq!(
        placement_model(store.as_ref(), id).await.as_deref(),
        Some("rtx-4090"),
        "filed once available"
    );
    // As stored by an earlier version.
    store
        .update(Table::Providers, id, &Cond::Always, &[Op::Remove(PLACEMENT_MODEL_ATTR.into())])
        .await
        .unwrap();
    let q = PlacementQuery {
        model: "rtx-4090",
        state: "available",
        max_price_micros: None,
        after: None,
        limit: 10,
        attrs: &[],
    };
    assert!(store.placement_page(&q).await.unwrap().items.is_empty());

    let ctx = recorder(store.clone(), cluster.clone());
    let next = heartbeat_recorder::handle(&heartbeat(&p, now + Duration::seconds(30), 0), &ctx, now + Duration::seconds(30)).await;
    assert_eq!(Outcome::from(next), Outcome::Done);
    assert_eq!(placement_model(store.as_ref(), id).await.as_deref(), Some("rtx-4090"));
    assert_eq!(store.placement_page(&q).await.unwrap().items.len(), 1);
    assert!(state_of(store.as_ref(), id).await.placement_filed);
}
