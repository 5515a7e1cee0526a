//! The CSR approver's Node writes, as its ServiceAccount on the real control plane (dry runs, so
//! the shipped admission policy `worldland-csr-approver` counts): it may create a Node carrying
//! only the provider taint and add that taint to an existing Node, and nothing else — a stolen
//! approver token cannot label a Node for a provider, cordon it, or strip its taints. And what a
//! join token may ask of the certificates API: only small kubelet CSRs (`worldland-kubelet-csrs`).

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PostParams};
use worldland_core::certificates::{CLIENT_SIGNER, SERVING_SIGNER};
use worldland_tests::kubelet;
use worldland_tests::real_cluster::{admin, as_worker, unique, Cleanup};
use worldland_tests::real_cluster::{impersonating, until};

use super::{admitted, denial, dry_patch, dry_post, refused};

const POLICY: &str = "worldland-csr-approver";

fn node(name: &str, extra: serde_json::Value) -> Node {
    let mut v = serde_json::json!({"metadata": {"name": name}, "spec": {"taints": [
        {"key": "worldland.io/provider", "value": "true", "effect": "NoSchedule"}]}});
    json_merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_approver_may_only_create_tainted_nodes_and_add_the_provider_taint() {
    let cleanup = Cleanup::default();
    let approver: Api<Node> = Api::all(as_worker("csr-approver").await);
    let name = unique("wl-approver-node");
    admitted(
        approver.create(&dry_post(), &node(&name, serde_json::json!({}))).await,
        "a tainted Node",
    );
    let create_refusal = denial(POLICY, "carries the worldland.io/provider taint and nothing else");
    let bad_creates = [
        (
            "with a label",
            serde_json::json!({"metadata": {"labels": {"worldland.io/provider-id": "victim"}}}),
        ),
        ("with an annotation", serde_json::json!({"metadata": {"annotations": {"a": "b"}}})),
        ("cordoned", serde_json::json!({"spec": {"unschedulable": true}})),
        ("without the taint", serde_json::json!({"spec": {"taints": []}})),
        (
            "with a NoExecute taint",
            serde_json::json!({"spec": {"taints": [{"key": "worldland.io/provider", "value": "true", "effect": "NoExecute"}]}}),
        ),
    ];
    for (what, extra) in bad_creates {
        refused(approver.create(&dry_post(), &node(&name, extra)).await, what, &create_refusal);
    }
    // An existing Node (an admin's, with a taint of its own): the approver may add the provider
    // taint and nothing else.
    let existing = unique("wl-approver-existing");
    let admin_nodes: Api<Node> = Api::all(admin().await);
    let mut theirs = node(&existing, serde_json::json!({"metadata": {"labels": {"team": "a"}}}));
    theirs.spec.as_mut().unwrap().taints = Some(vec![serde_json::from_value(
        serde_json::json!({"key": "example.com/dedicated", "value": "x", "effect": "NoSchedule"}),
    )
    .unwrap()]);
    admin_nodes.create(&PostParams::default(), &theirs).await.unwrap();
    cleanup.node(&existing);
    // As `KubeCluster::set_taint` writes it: every taint read (the API server's not-ready one
    // included) kept, the provider taint added.
    let mut taints = serde_json::to_value(admin_nodes.get(&existing).await.unwrap().spec.unwrap().taints).unwrap();
    taints
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"key": "worldland.io/provider", "value": "true", "effect": "NoSchedule"}));
    let both = serde_json::json!({"spec": {"taints": taints}});
    admitted(
        approver.patch(&existing, &dry_patch(), &Patch::Merge(&both)).await,
        "adding the provider taint",
    );
    let patch_refusal = denial(POLICY, "may only add the worldland.io/provider=true:NoSchedule taint");
    let bad_patches = [
        (
            "dropping another taint",
            serde_json::json!({"spec": {"taints": [{"key": "worldland.io/provider", "value": "true", "effect": "NoSchedule"}]}}),
        ),
        (
            "a label",
            serde_json::json!({"metadata": {"labels": {"worldland.io/provider-id": "victim"}}}),
        ),
        ("cordoning", serde_json::json!({"spec": {"unschedulable": true}})),
    ];
    for (what, patch) in bad_patches {
        refused(
            approver.patch(&existing, &dry_patch(), &Patch::Merge(&patch)).await,
            what,
            &patch_refusal,
        );
    }
}

/// A join token (or a kubelet) may create CSRs only for the kubelet signers and only of a
/// kubelet's size, so a flood of them stays small (`worldland-kubelet-csrs`).
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn join_tokens_may_create_only_small_kubelet_csrs() {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let token_holder = impersonating(
        &format!("system:bootstrap:{}", &unique("t")[2..8]),
        &["system:bootstrappers", worldland_core::cluster::bootstrap::TOKEN_EXTRA_GROUPS],
    )
    .await;
    let key = kubelet::key();
    let subject = "/O=system:nodes/CN=system:node:wl-csr-size";
    let csr = |signer: &str, request: &str| -> CertificateSigningRequest {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": unique("wl-csr")},
            "spec": {"signerName": signer, "request": base64_of(request), "usages": ["digital signature", "client auth"]},
        }))
        .unwrap()
    };
    let api: Api<CertificateSigningRequest> = Api::all(token_holder);
    let small = kubelet::request(&key, subject, None);
    admitted(api.create(&dry_post(), &csr(CLIENT_SIGNER, &small)).await, "a kubelet's request");
    admitted(
        api.create(&dry_post(), &csr(SERVING_SIGNER, &small)).await,
        "a serving request (the approver denies it)",
    );
    let other_signer = denial("worldland-kubelet-csrs", "only the kubelet signers");
    // The API server loads a new policy a moment after it is applied.
    until("the kubelet-CSR policy is loaded", 30, || async {
        matches!(api.create(&dry_post(), &csr("kubernetes.io/kube-apiserver-client", &small)).await,
            Err(kube::Error::Api(ref s)) if s.message.contains(&other_signer))
        .then_some(())
    })
    .await;
    let names: Vec<String> = (0..120)
        .map(|i| format!("DNS:padding-{i:03}-{}.example.com", "x".repeat(12)))
        .collect();
    let big = kubelet::request(&key, subject, Some(&names.join(",")));
    assert!(big.len() > 4096, "{}", big.len());
    refused(
        api.create(&dry_post(), &csr(CLIENT_SIGNER, &big)).await,
        "a 4 KiB+ request",
        &denial("worldland-kubelet-csrs", "at most 4 KiB"),
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
