//! A node belongs to one provider (point 2 of "zero trust on the wire"). Anyone can run an agent
//! and claim any host name: a second provider (another wallet) claiming the host name of an
//! existing provider's machine must not be approved onto that node, nor take it over with its
//! heartbeats, nor end `available` on it beside its owner. The real registration handler, issuer
//! and recorder, on the in-memory store with the simulated cluster, and with the strict
//! Kubernetes API mock where the recorder's calls matter.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::{Cluster, NodeInfo};
use worldland_core::labels;
use worldland_core::messages::{Heartbeat, ProviderResponse, ProviderState, ProviderValidated, StreamEnvelope};
use worldland_core::provider::ProviderRecord;
use worldland_core::signature::{sign_personal, SignaturePolicy};
use worldland_core::state::{Cond, ItemStore, Op, Table};
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::kube_mock::{fixture, mock_client, ApiServerVerifier, Expect};
use worldland_tests::lifecycle::{fixture_shaped_provider, recorder};
use worldland_tests::{validated_sink, Outcome};

const WAIT: StdDuration = StdDuration::from_secs(5);
/// The host name both the owner and the squatter claim.
const HOST: &str = "gpu-server-01";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// Registers `p` through the real registration handler and issuer; its approval answer.
async fn approve_and_answer(
    p: &SimulatedProvider,
    store: Arc<dyn ItemStore>,
    cluster: Arc<dyn Cluster>,
    entry: &str,
    now: DateTime<Utc>,
) -> ProviderResponse {
    let replies = Arc::new(MemoryReplies::default());
    let reg_ctx = registration_handler::Context {
        store: store.clone(),
        bus: validated_sink(),
        replies: replies.clone(),
        policy: ValidationPolicy::default(),
        signatures: SignaturePolicy::Required,
    };
    let env = p.envelope("provider:registration", entry);
    assert_eq!(
        Outcome::from(registration_handler::handle(&env, &reg_ctx, now).await),
        Outcome::Done
    );
    let issuer = join_token_issuer::Context {
        store,
        cluster,
        replies: replies.clone(),
        token_ttl: Duration::hours(1),
        max_pending_per_wallet: 3,
        api_endpoint: None,
    };
    let msg = ProviderValidated {
        provider_id: p.provider_id.clone(),
        registration_id: entry.into(),
        enc_pubkey: p.registration.enc_pubkey.clone(),
    };
    assert_eq!(Outcome::from(join_token_issuer::handle(&msg, &issuer, now).await), Outcome::Done);
    let answers = replies.answers_for(&p.provider_id);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].success, "{:?}", answers[0]);
    answers[0].clone()
}

/// The machine of `p` as its kubelet registers it under `name`.
fn machine(p: &SimulatedProvider, name: &str, ready: bool) -> NodeInfo {
    let spec = &p.registration.spec;
    NodeInfo {
        name: name.into(),
        resource_version: "1".into(),
        ready,
        cpu_millis: Some(i64::from(spec.cpu_cores) * 1000),
        memory_bytes: Some(spec.total_memory_mb as i64 * 1024 * 1024),
        gpus: Some(i64::from(spec.total_gpus)),
        ..Default::default()
    }
}

/// A heartbeat of `p` naming `node`, signed by its wallet.
fn beat(p: &SimulatedProvider, node: &str, at: DateTime<Utc>) -> StreamEnvelope {
    let hb = Heartbeat {
        provider_id: p.provider_id.clone(),
        node_name: node.into(),
        status: "available".into(),
        gpu_usage: vec![50.0],
        cpu_usage: 10.0,
        memory_usage: 10.0,
        active_jobs: 0,
        timestamp: at,
        seq: None,
    };
    let data = serde_json::to_string(&hb).unwrap();
    StreamEnvelope {
        stream: "provider:heartbeat".into(),
        entry_id: format!("{}-0", at.timestamp_millis()),
        signature: Some(sign_personal(&p.key, data.as_bytes())),
        data,
        timestamp: None,
        received_at_ms: None,
    }
}

async fn record(store: &dyn ItemStore, id: &str) -> ProviderRecord {
    ProviderRecord::load(store, id).await.unwrap().unwrap()
}

fn refused_with(out: Outcome, reason: &str, what: &str) {
    match out {
        Outcome::Rejected(r) => assert_eq!(r.reason.code(), reason, "{what}: {}", r.message),
        other => panic!("{what}: expected {reason}, got {other:?}"),
    }
}

/// The owner's machine joined under its assigned name, heartbeating: available, its node
/// labelled with its id.
async fn owner_available(store: Arc<dyn ItemStore>, cluster: Arc<SimulatedCluster>, now: DateTime<Utc>) -> (SimulatedProvider, String) {
    let owner = fixture_shaped_provider(1, now);
    assert_eq!(owner.registration.spec.hostname, HOST);
    let answer = approve_and_answer(&owner, store.clone(), cluster.clone(), "100-0", now).await;
    let node = answer.node_name.clone().unwrap();
    cluster.add_node(machine(&owner, &node, true));
    let ctx = recorder(store.clone(), cluster.clone());
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&beat(&owner, &node, now), &ctx, now).await),
        Outcome::Done
    );
    assert_eq!(record(store.as_ref(), &owner.provider_id).await.state, ProviderState::Available);
    (owner, node)
}

/// The attack as reproduced: a second provider (another wallet) claims the owner's host name.
/// It must get a node name of its own at approval, and none of its heartbeats — naming the
/// owner's node, the bare host name, or its own name before its machine joined — may join,
/// label or make it available on the owner's node.
#[tokio::test]
async fn hostname_squatter_cannot_take_another_providers_node() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let (owner, owner_node) = owner_available(store.clone(), cluster.clone(), now).await;

    let squatter = fixture_shaped_provider(2, now);
    assert_eq!(squatter.registration.spec.hostname, HOST, "the same host name");
    assert_ne!(squatter.registration.wallet_addr, owner.registration.wallet_addr, "another wallet");
    let answer = approve_and_answer(&squatter, store.clone(), cluster.clone(), "200-0", now).await;
    let squatter_node = answer.node_name.clone().unwrap();
    assert_ne!(squatter_node, owner_node, "approved onto a node name of its own, never the owner's");
    assert_eq!(record(store.as_ref(), &squatter.provider_id).await.node_name, squatter_node);

    let ctx = recorder(store.clone(), cluster.clone());
    let writes = cluster.writes();
    for (i, (node, reason)) in [
        (owner_node.as_str(), "node_name_mismatch"),
        (HOST, "node_name_mismatch"),
        (squatter_node.as_str(), "node_not_found"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = now + Duration::seconds(30 * (i as i64 + 1));
        let out = Outcome::from(heartbeat_recorder::handle(&beat(&squatter, node, at), &ctx, at).await);
        refused_with(out, reason, &format!("squatter's heartbeat naming {node}"));
    }
    assert_eq!(cluster.writes(), writes, "the cluster was not written");
    let n = cluster.node(&owner_node).unwrap();
    assert_eq!(
        n.labels[labels::PROVIDER_ID],
        owner.provider_id,
        "the owner's node keeps the owner's id"
    );
    assert_eq!(record(store.as_ref(), &owner.provider_id).await.state, ProviderState::Available);
    assert_eq!(
        record(store.as_ref(), &squatter.provider_id).await.state,
        ProviderState::Approved,
        "never joined"
    );
    // The owner goes on as before.
    let at = now + Duration::seconds(120);
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&beat(&owner, &owner_node, at), &ctx, at).await),
        Outcome::Done
    );
}

/// The recorder's own guard, against the strict API mock: the squatter's node already carries
/// another provider's `worldland.io/provider-id` (however it got there). Its first heartbeat reads
/// the node and is refused with its own reason — no label patch — its token is deleted, and it
/// stays approved and unschedulable with the reason recorded.
#[tokio::test]
async fn a_squatters_heartbeat_cannot_relabel_a_node_that_carries_another_providers_id() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let squatter = fixture_shaped_provider(3, now);
    approve_and_answer(
        &squatter,
        store.clone(),
        Arc::new(SimulatedCluster::new("https://10.0.0.1:6443")),
        "300-0",
        now,
    )
    .await;
    let rec = record(store.as_ref(), &squatter.provider_id).await;
    let token_id = rec.token_id.clone().unwrap();
    let path = format!("/api/v1/nodes/{}", rec.node_name);
    let mut theirs = fixture("16-patch-node-labels.json").response_body;
    theirs["metadata"]["name"] = json!(rec.node_name);
    theirs["metadata"]["labels"]["worldland.io/provider-id"] = json!("sim-provider-00001");
    let mut deleted = fixture("11-delete-bootstrap-token.json").response_body;
    deleted["details"]["name"] = json!(format!("bootstrap-token-{token_id}"));
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(
        handle,
        vec![
            Expect::new("GET", path, "", 200, theirs),
            Expect::new(
                "DELETE",
                format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{token_id}"),
                "",
                200,
                deleted,
            )
            .exact_body("application/json", json!({})),
        ],
    );
    let ctx = recorder(store.clone(), Arc::new(KubeCluster::new(client)));
    let out = Outcome::from(heartbeat_recorder::handle(&beat(&squatter, &rec.node_name, now), &ctx, now).await);
    refused_with(out, "node_owned_by_another_provider", "first heartbeat");
    api.finish(WAIT).await;
    let rec = record(store.as_ref(), &squatter.provider_id).await;
    assert_eq!(rec.state, ProviderState::Approved, "neither joined nor available");
    let why = rec.unschedulable.unwrap_or_default();
    assert!(
        why.starts_with("node_owned_by_another_provider") && why.contains("sim-provider-00001"),
        "{why}"
    );
}

/// An approval from before node names were assigned still names the owner's node (its host
/// name): the owner holds that name's reservation, so the recorder refuses to join the squatter
/// on it (`node_name_taken`) even though the owner's node carries no label yet — then the owner
/// joins it as usual.
#[tokio::test]
async fn a_legacy_approval_on_another_providers_reserved_node_name_is_refused_at_join() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let owner = fixture_shaped_provider(4, now);
    let owner_node = approve_and_answer(&owner, store.clone(), cluster.clone(), "400-0", now)
        .await
        .node_name
        .unwrap();
    let squatter = fixture_shaped_provider(5, now);
    approve_and_answer(&squatter, store.clone(), cluster.clone(), "500-0", now).await;
    // The squatter's record as an older broker would have written it: the owner's node name.
    assert!(store
        .update_if(
            Table::Providers,
            &squatter.provider_id,
            &Cond::ItemExists,
            &[Op::set("node_name", owner_node.as_str())]
        )
        .await
        .unwrap());
    cluster.add_node(machine(&owner, &owner_node, true));

    let ctx = recorder(store.clone(), cluster.clone());
    let out = Outcome::from(heartbeat_recorder::handle(&beat(&squatter, &owner_node, now), &ctx, now).await);
    refused_with(out, "node_name_taken", "squatter on the owner's reserved name");
    assert!(cluster.node(&owner_node).unwrap().labels.is_empty(), "not labelled");
    let rec = record(store.as_ref(), &squatter.provider_id).await;
    assert_eq!(rec.state, ProviderState::Approved);
    assert!(rec.unschedulable.unwrap_or_default().starts_with("node_name_taken"));

    let at = now + Duration::seconds(30);
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&beat(&owner, &owner_node, at), &ctx, at).await),
        Outcome::Done
    );
    assert_eq!(record(store.as_ref(), &owner.provider_id).await.state, ProviderState::Available);
    assert_eq!(cluster.node(&owner_node).unwrap().labels[labels::PROVIDER_ID], owner.provider_id);
}

/// A provider whose node, once joined, is relabelled with another provider's id never becomes
/// available on it: two providers are never available on one node.
#[tokio::test]
async fn a_node_relabelled_for_another_provider_makes_no_second_provider_available() {
    let now = t0();
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let p = fixture_shaped_provider(6, now);
    let node = approve_and_answer(&p, store.clone(), cluster.clone(), "600-0", now)
        .await
        .node_name
        .unwrap();
    // Joined while the node is not Ready yet: labelled, joined, not available.
    cluster.add_node(machine(&p, &node, false));
    let ctx = recorder(store.clone(), cluster.clone());
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&beat(&p, &node, now), &ctx, now).await),
        Outcome::Done
    );
    assert_eq!(record(store.as_ref(), &p.provider_id).await.state, ProviderState::Joined);
    // Then the node is Ready, but carries another provider's id.
    let mut n = cluster.node(&node).unwrap();
    n.ready = true;
    n.labels.insert(labels::PROVIDER_ID.into(), "sim-provider-00001".into());
    cluster.add_node(n);
    let at = now + Duration::seconds(30);
    assert_eq!(
        Outcome::from(heartbeat_recorder::handle(&beat(&p, &node, at), &ctx, at).await),
        Outcome::Done
    );
    assert_eq!(
        record(store.as_ref(), &p.provider_id).await.state,
        ProviderState::Joined,
        "not available on a node labelled for another provider"
    );
}
