//! Against the real control plane `scripts/test` starts (`scripts/control_plane.sh`, which
//! applies `infra/k8s/base` with `kubectl kustomize` + `kubectl apply`): the NVIDIA device
//! plugin's DaemonSet as the API server stored it, and the pods kube-controller-manager's
//! DaemonSet controller makes from it — one for each provider's node (as the broker creates it,
//! before and after the recorder labels it), none for a broker node or a control-plane node. No
//! scheduler and no kubelet run here: the pods stay unbound, and the nodes are marked Ready by
//! hand (the controller skips a node that is not). Ignored without a control plane (counted as
//! skipped, never as passed). The cluster is shared by tests running in parallel: this test
//! asserts only about the nodes it made, under names of its own.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_core::cluster::Cluster;
use worldland_core::labels::{provider_node_labels, BROKER_NODE_LABEL, PROVIDER_TAINT};
use worldland_tests::real_cluster::{admin, as_worker, impersonating, unique, until, Cleanup};
use worldland_tests::scheduling::{broker_node, fits, kubelet_settable_labels, node, Unfit};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "nvidia-device-plugin-daemonset";
const POD_SELECTOR: &str = "name=nvidia-device-plugin-ds";
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
/// What the TaintNodesByCondition admission plugin and the node lifecycle controller put on a
/// Node whose kubelet has not reported it Ready.
const LIFECYCLE: &str = "node.kubernetes.io/";

/// The kubelet of Node `name` (user `system:node:<name>`, group `system:nodes`), impersonated.
async fn kubelet(name: &str) -> kube::Client {
    impersonating(&format!("system:node:{name}"), &["system:nodes", "system:authenticated"]).await
}

/// Reports the Node Ready, as its kubelet would.
async fn report_ready(client: kube::Client, name: &str) {
    let now = Utc::now().to_rfc3339();
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "test kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    Api::<Node>::all(client)
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&ready))
        .await
        .unwrap();
}

/// A provider's Node as the broker and its kubelet make it: the CSR approver creates it with the
/// provider taint, the kubelet adds every label it may set and reports Ready; with `labelled`,
/// the recorder then puts the provider's `worldland.io/` labels on it.
async fn provider(name: &str, labelled: bool) {
    let approver = KubeCluster::new(as_worker("csr-approver").await);
    approver.create_provider_node(name).await.unwrap();
    let kubelet = kubelet(name).await;
    let labels = json!({"metadata": {"labels": kubelet_settable_labels(name)}});
    Api::<Node>::all(kubelet.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    report_ready(kubelet, name).await;
    if labelled {
        let recorder = KubeCluster::new(as_worker("heartbeat-recorder").await);
        let wanted = provider_node_labels(&unique("sim-provider"), "NVIDIA GeForce RTX 4090", 4)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        recorder.patch_node_metadata(name, &wanted, &BTreeMap::new()).await.unwrap();
    }
}

/// A Node the administrator made: a broker node, or a control-plane node as kubeadm labels and
/// taints it; reported Ready.
async fn administrators(client: &kube::Client, n: Node) {
    let name = n.metadata.name.clone().unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &n).await.unwrap();
    report_ready(client.clone(), &name).await;
}

/// The node a DaemonSet pod is for: the controller pins each pod with a `metadata.name` field
/// selector in its required node affinity.
fn target(pod: &Pod) -> Option<String> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// The device plugin's pods, by the node each is for.
async fn pods_by_node(client: &kube::Client) -> BTreeMap<String, Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(POD_SELECTOR))
        .await
        .unwrap();
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods.items {
        if let Some(n) = target(&pod) {
            out.entry(n).or_default().push(pod);
        }
    }
    out
}

/// Waits until the lifecycle controller has taken its not-ready taint off the Node, and returns
/// it as stored.
async fn settled(client: &kube::Client, name: &str) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    until(&format!("{name}: the lifecycle taints go once it is Ready"), 60, || async {
        let n = nodes.get(name).await.ok()?;
        let lifecycle = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key.starts_with(LIFECYCLE)));
        (!lifecycle).then_some(n)
    })
    .await
}

/// The DaemonSet as `scripts/control_plane.sh` applied it: accepted by the API server with what
/// the manifest says (no token, the digest-pinned image, our tolerations).
fn check_stored_template(pod: &PodSpec) {
    assert_eq!(pod.automount_service_account_token, Some(false));
    let image = pod.containers[0].image.as_deref().unwrap();
    assert!(
        image.starts_with("nvcr.io/nvidia/k8s-device-plugin:v0.17.") && image.contains("@sha256:"),
        "{image}"
    );
    let keys: Vec<&str> = pod.tolerations.iter().flatten().filter_map(|t| t.key.as_deref()).collect();
    assert_eq!(keys, [PROVIDER_TAINT, "nvidia.com/gpu"]);
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_device_plugin_gets_a_pod_on_each_providers_node_and_none_elsewhere() {
    let client = admin().await;
    let cleanup = Cleanup::default();
    let ds = Api::<DaemonSet>::namespaced(client.clone(), NAMESPACE)
        .get(NAME)
        .await
        .expect("scripts/control_plane.sh applied infra/k8s/base, the device plugin with it");
    let template = ds.spec.unwrap().template.spec.unwrap();
    check_stored_template(&template);

    let names = BTreeMap::from([
        ("provider", unique("wl-dp-provider")),
        ("labelled", unique("wl-dp-labelled")),
        ("broker", unique("wl-dp-broker")),
        ("control-plane", unique("wl-dp-control-plane")),
    ]);
    for n in names.values() {
        cleanup.node(n);
    }
    provider(&names["provider"], false).await;
    provider(&names["labelled"], true).await;
    administrators(&client, broker_node(&names["broker"], false)).await;
    let cp = &names["control-plane"];
    let cp_labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cp.clone()),
        (CONTROL_PLANE.to_string(), String::new()),
    ]);
    let cp_taint = k8s_openapi::api::core::v1::Taint {
        key: CONTROL_PLANE.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    administrators(&client, node(cp, cp_labels, vec![cp_taint])).await;
    let mut stored = BTreeMap::new();
    for (role, name) in &names {
        stored.insert(*role, settled(&client, name).await);
    }

    // The controller's own decision: a pod for each provider's node...
    let providers = [names["provider"].clone(), names["labelled"].clone()];
    let pods = until("the DaemonSet controller makes a pod for each provider's node", 60, || async {
        let pods = pods_by_node(&client).await;
        providers.iter().all(|n| pods.contains_key(n)).then_some(pods)
    })
    .await;
    for n in &providers {
        assert_eq!(pods[n].len(), 1, "{n}: one pod");
        let spec = pods[n][0].spec.as_ref().unwrap();
        assert_eq!(spec.node_name, None, "no scheduler runs here");
        // No ServiceAccount admission token volume: the one hostPath only.
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["device-plugin"], "{n}");
        assert_eq!(spec.priority_class_name.as_deref(), Some("system-node-critical"));
        assert!(spec.priority.is_some_and(|p| p >= 2_000_000_000), "{n}: a critical pod's priority");
    }
    // ...and none for the broker or the control plane. Awaited on the controller's own account:
    // once its status counts as many nodes to run on as there are pods, it has decided for
    // every node it knows — a broker or control-plane node it found eligible would be counted,
    // and its pod made, before the two agree.
    let settled = until("the DaemonSet controller's status agrees with its pods", 60, || async {
        let desired = Api::<DaemonSet>::namespaced(client.clone(), NAMESPACE)
            .get(NAME)
            .await
            .ok()?
            .status?
            .desired_number_scheduled;
        let pods = pods_by_node(&client).await;
        (usize::try_from(desired).ok()? == pods.values().map(Vec::len).sum::<usize>()).then_some(pods)
    })
    .await;
    for n in [&names["broker"], &names["control-plane"]] {
        let pods: Vec<_> = settled.get(n).into_iter().flatten().map(|p| p.metadata.name.clone()).collect();
        assert!(pods.is_empty(), "{n}: device-plugin pods {pods:?}");
    }

    // And the scheduler's filters, on the template as stored, against the nodes as stored.
    assert_eq!(fits(&template, &stored["provider"]), Ok(()));
    assert_eq!(fits(&template, &stored["labelled"]), Ok(()));
    assert_eq!(fits(&template, &stored["broker"]), Err(Unfit::NodeAffinity));
    assert_eq!(fits(&template, &stored["control-plane"]), Err(Unfit::NodeAffinity));
    let provider_taints = stored["provider"].spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    assert!(provider_taints.iter().any(|t| t.key == PROVIDER_TAINT), "{provider_taints:?}");
    let broker_label = stored["broker"].metadata.labels.as_ref().and_then(|l| l.get(BROKER_NODE_LABEL));
    assert_eq!(broker_label.map(String::as_str), Some("true"));
}
