//! `KubeCluster`, the workers' own code, as each worker on the real API server: the issuer's
//! cluster-info and tokens, the sweeper's deletes, the recorder's labels, annotations and offline
//! taint, and the taint update that reads the Node again when another writer got there first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::client::Body;
use serde_json::json;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_core::cluster::{Cluster, ClusterError, Created, NodeInfo};
use worldland_core::labels;
use worldland_tests::real_cluster::{admin, as_worker, unique, Cleanup};

use super::{admin_node, fresh_token, now_seconds, ISSUER, RECORDER, SWEEPER};

/// Taints other than those the node lifecycle controller may add to a Node without a kubelet
/// (`node.kubernetes.io/…` once its grace period has run out), as (key, value, effect, timeAdded).
fn taints_of(node: &NodeInfo) -> Vec<(String, Option<String>, String, Option<String>)> {
    node.taints
        .iter()
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone(), t.time_added.clone()))
        .collect()
}

/// The node's taints as JSON, with `extra` appended: the list a merge patch replaces.
fn taints_with(node: &Node, extra: serde_json::Value) -> serde_json::Value {
    let mut taints = serde_json::to_value(node.spec.as_ref().unwrap().taints.clone().unwrap_or_default()).unwrap();
    taints.as_array_mut().unwrap().push(extra);
    taints
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_workers_kube_cluster_calls_pass_rbac_and_admission() {
    let cleanup = Cleanup::default();
    // The issuer: cluster-info, and a token (twice: the second is "already exists", not an error).
    let issuer = KubeCluster::new(as_worker(ISSUER).await);
    issuer.cluster_info().await.expect("the issuer reads cluster-info");
    let token = fresh_token();
    cleanup.kube_system_secret(&token.secret_name());
    assert_eq!(issuer.create_bootstrap_token(&token).await.unwrap(), Created::New);
    assert_eq!(issuer.create_bootstrap_token(&token).await.unwrap(), Created::AlreadyExists);
    match issuer.get_bootstrap_token(&token.id).await {
        Err(ClusterError::Refused { status: Some(403), .. }) => {}
        other => panic!("the issuer must not read a token back: {other:?}"),
    }
    // The sweeper deletes it (an expired reservation), and again (gone is fine).
    let sweeper = KubeCluster::new(as_worker(SWEEPER).await);
    sweeper.delete_bootstrap_token(&token.id).await.unwrap();
    sweeper.delete_bootstrap_token(&token.id).await.unwrap();
    assert!(KubeCluster::new(admin().await)
        .get_bootstrap_token(&token.id)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn node_labels_annotations_and_the_offline_taint_as_the_recorder() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let name = unique("wl-node");
    let added = now_seconds();
    admin_node(&admin, &cleanup, &name, added.clone()).await;
    let recorder = KubeCluster::new(as_worker(RECORDER).await);
    let before = recorder.get_node(&name).await.unwrap().expect("the recorder reads the node");

    let wanted = BTreeMap::from([
        (labels::PROVIDER_ID.to_string(), Some("sim-provider-00001".to_string())),
        (labels::GPU_MODEL.to_string(), Some("RTX-4090".to_string())),
        (labels::STATUS.to_string(), Some(labels::STATUS_OFFLINE.to_string())),
        (labels::RENTAL_TYPE.to_string(), None),
    ]);
    let heartbeat = BTreeMap::from([(labels::LAST_HEARTBEAT_ANNOTATION.to_string(), Some(Utc::now().to_rfc3339()))]);
    recorder.patch_node_metadata(&name, &wanted, &heartbeat).await.unwrap();
    let after = recorder.get_node(&name).await.unwrap().unwrap();
    for (k, v) in &wanted {
        assert_eq!(after.labels.get(k), v.as_ref(), "{k}");
    }
    assert_eq!(after.labels.get("kubernetes.io/hostname"), Some(&name));
    assert_eq!(after.labels.get("example.com/keep").map(String::as_str), Some("1"));
    assert_eq!(
        after.annotations.get(labels::LAST_HEARTBEAT_ANNOTATION),
        heartbeat.values().next().unwrap().as_ref()
    );
    assert_eq!(after.annotations.get("example.com/keep").map(String::as_str), Some("1"));

    // The offline taint on: every other taint kept, the NoExecute one with its timeAdded.
    let others = taints_of(&before);
    assert_eq!(others.len(), 2);
    assert_eq!(
        others[1].3.as_deref(),
        Some(added.0.to_string().as_str()),
        "timeAdded as the admin set it"
    );
    recorder.set_offline_taint(&name, true).await.unwrap();
    let on = recorder.get_node(&name).await.unwrap().unwrap();
    let mut expected = others.clone();
    expected.push((labels::OFFLINE_TAINT.into(), Some("true".into()), "NoSchedule".into(), None));
    assert_eq!(taints_of(&on), expected);
    // Already on: it stays so.
    recorder.set_offline_taint(&name, true).await.unwrap();
    let again = recorder.get_node(&name).await.unwrap().unwrap();
    assert_eq!(taints_of(&again), expected);
    // Off again: the others as they were.
    recorder.set_offline_taint(&name, false).await.unwrap();
    assert_eq!(taints_of(&recorder.get_node(&name).await.unwrap().unwrap()), others);
    // The sweeper's code path is the same KubeCluster; it is held by the same policy.
    let sweeper = KubeCluster::new(as_worker(SWEEPER).await);
    sweeper.set_offline_taint(&name, true).await.unwrap();
    assert_eq!(taints_of(&sweeper.get_node(&name).await.unwrap().unwrap()), expected);
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_stale_resource_version_conflicts_and_the_taint_update_reads_again() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let name = unique("wl-race");
    admin_node(&admin, &cleanup, &name, now_seconds()).await;
    let admin_nodes: Api<Node> = Api::all(admin.clone());

    // A write with a resourceVersion another writer has since moved past is refused (409).
    let recorder_nodes: Api<Node> = Api::all(as_worker(RECORDER).await);
    let read = recorder_nodes.get(&name).await.unwrap();
    admin_nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/moved": "1"}}})),
        )
        .await
        .unwrap();
    let offline = json!({"key": labels::OFFLINE_TAINT, "value": "true", "effect": "NoSchedule"});
    let stale = json!({"metadata": {"resourceVersion": read.metadata.resource_version}, "spec": {"taints": taints_with(&read, offline)}});
    match recorder_nodes.patch(&name, &PatchParams::default(), &Patch::Merge(stale)).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale resourceVersion must conflict: {other:?}"),
    }

    // KubeCluster through a proxy that, on the recorder's first write, lets another writer add
    // a taint first: the write conflicts, it reads again, and the other writer's taint is kept.
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let real = as_worker(RECORDER).await;
    let writes = Arc::new(AtomicUsize::new(0));
    let proxy = {
        let (writes, name, admin_nodes) = (writes.clone(), name.clone(), admin_nodes.clone());
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                if req.method() == http::Method::PATCH && writes.fetch_add(1, Ordering::SeqCst) == 0 {
                    let node = admin_nodes.get(&name).await.unwrap();
                    let late = json!({"key": "example.com/late", "value": "1", "effect": "NoSchedule"});
                    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version},
                        "spec": {"taints": taints_with(&node, late)}});
                    admin_nodes
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .unwrap();
                }
                match real.send(req).await {
                    Ok(resp) => send.send_response(resp),
                    Err(e) => send.send_error(e),
                }
            }
        })
    };
    let recorder = KubeCluster::new(kube::Client::new(svc, "default"));
    recorder.set_offline_taint(&name, true).await.unwrap();
    // At least one conflict, then the write that held (kube-controller-manager may move the
    // Node on too, which only adds a round).
    assert!(
        writes.load(Ordering::SeqCst) >= 2,
        "the injected change made the first write conflict"
    );
    let node = KubeCluster::new(admin.clone()).get_node(&name).await.unwrap().unwrap();
    let keys: Vec<String> = taints_of(&node).into_iter().map(|t| t.0).collect();
    assert_eq!(
        keys,
        ["example.com/keep", "example.com/evict", "example.com/late", labels::OFFLINE_TAINT]
    );
    drop(recorder);
    proxy.abort();
}
