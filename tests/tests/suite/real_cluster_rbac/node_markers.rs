//! The recorder and the sweeper mark Nodes (`worldland-node-marker`): `worldland.io/` labels,
//! annotations and `NoSchedule` taints, every other key and taint kept; no cordon, no delete, no
//! status, and no list but the sweeper's.

use chrono::Utc;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch};
use serde_json::json;
use worldland_core::labels;
use worldland_tests::real_cluster::{admin, as_worker, unique, Cleanup};

use super::{admin_node, admitted, denial, dry_delete, dry_patch, now_seconds, rbac_forbids, refused, RECORDER, SWEEPER};

/// A dry-run merge patch built from the Node as it is now, with its resourceVersion as the
/// precondition (a taint list is replaced whole), read again on a conflict: kube-controller-manager
/// writes a new Node too (its TTL annotation, its lifecycle taints).
async fn dry_patch_fresh(nodes: &Api<Node>, name: &str, build: impl Fn(&Node) -> serde_json::Value) -> kube::Result<Node> {
    for _ in 0..10 {
        let node = nodes.get(name).await?;
        let mut patch = build(&node);
        patch["metadata"]["resourceVersion"] = json!(node.metadata.resource_version);
        match nodes.patch(name, &dry_patch(), &Patch::Merge(patch)).await {
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            other => return other,
        }
    }
    panic!("{name} kept changing");
}

/// The node's taints as JSON.
fn taints_of_node(node: &Node) -> Vec<serde_json::Value> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect()
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_recorder_and_sweeper_may_change_only_worldland_keys_on_nodes() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let name = unique("wl-marked");
    let node = admin_node(&admin, &cleanup, &name, now_seconds()).await;
    let policy = "worldland-node-marker";
    type Build = Box<dyn Fn(&Node) -> serde_json::Value>;
    let with_taint = |extra: serde_json::Value| -> Build {
        Box::new(move |n: &Node| {
            let mut taints = taints_of_node(n);
            taints.push(extra.clone());
            json!({"spec": {"taints": taints}})
        })
    };
    let fixed = |patch: serde_json::Value| -> Build { Box::new(move |_: &Node| patch.clone()) };
    for sa in [RECORDER, SWEEPER] {
        let nodes: Api<Node> = Api::all(as_worker(sa).await);
        admitted(nodes.get(&name).await, &format!("{sa}: reading the node"));
        let what = |w: &str| format!("{sa}: {w}");

        // What the workers write.
        let allowed: Vec<(&str, Build)> = vec![
            (
                "worldland.io/ labels added, changed and removed",
                fixed(json!({"metadata": {"labels": {
                    labels::PROVIDER_ID: "sim-provider-00002", labels::GPU_MODEL: "RTX-4090",
                    labels::GPU_COUNT: "1", labels::STATUS: labels::STATUS_OFFLINE, labels::RENTAL_TYPE: null}}})),
            ),
            (
                "the heartbeat annotation",
                fixed(json!({"metadata": {"annotations": {labels::LAST_HEARTBEAT_ANNOTATION: Utc::now().to_rfc3339()}}})),
            ),
            (
                "the offline taint, every other taint kept",
                with_taint(json!({"key": labels::OFFLINE_TAINT, "value": "true", "effect": "NoSchedule"})),
            ),
        ];
        for (w, build) in allowed {
            admitted(dry_patch_fresh(&nodes, &name, build).await, &what(w));
        }

        // What the policy refuses.
        let cases: Vec<(&str, Build, String)> = vec![
            (
                "changing kubernetes.io/hostname",
                fixed(json!({"metadata": {"labels": {"kubernetes.io/hostname": "elsewhere"}}})),
                denial(policy, "only worldland.io/ labels may"),
            ),
            (
                "adding another label",
                fixed(json!({"metadata": {"labels": {"example.com/probe": "1"}}})),
                denial(policy, "only worldland.io/ labels may"),
            ),
            (
                "removing another label",
                fixed(json!({"metadata": {"labels": {"example.com/keep": null}}})),
                denial(policy, "only worldland.io/ labels may"),
            ),
            (
                "adding another annotation",
                fixed(json!({"metadata": {"annotations": {"example.com/probe": "1"}}})),
                denial(policy, "only worldland.io/ annotations may"),
            ),
            (
                "a NoExecute worldland.io/ taint",
                with_taint(json!({"key": labels::OFFLINE_TAINT, "value": "true", "effect": "NoExecute"})),
                denial(policy, "only be NoSchedule"),
            ),
            (
                "adding another taint",
                with_taint(json!({"key": "example.com/probe", "effect": "NoSchedule"})),
                denial(policy, "only worldland.io/ taints may"),
            ),
            (
                "changing another taint",
                Box::new(|n: &Node| {
                    let mut taints = taints_of_node(n);
                    for t in &mut taints {
                        if t["key"] == "example.com/keep" {
                            t["value"] = json!("2");
                        }
                    }
                    json!({"spec": {"taints": taints}})
                }),
                denial(policy, "only worldland.io/ taints may"),
            ),
            (
                "dropping the NoExecute taint",
                Box::new(|n: &Node| {
                    let taints: Vec<_> = taints_of_node(n).into_iter().filter(|t| t["key"] != "example.com/evict").collect();
                    json!({"spec": {"taints": taints}})
                }),
                denial(policy, "only worldland.io/ taints may"),
            ),
            (
                "cordoning",
                fixed(json!({"spec": {"unschedulable": true}})),
                denial(policy, "cordon"),
            ),
            (
                "setting the provider id",
                fixed(json!({"spec": {"providerID": "aws:///us-east-1a/i-0"}})),
                denial(policy, "cordon"),
            ),
            (
                "adding a finalizer",
                fixed(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
                denial(policy, "cordon"),
            ),
        ];
        for (w, build, expected) in cases {
            refused(dry_patch_fresh(&nodes, &name, build).await, &what(w), &expected);
        }
        // Everything else is RBAC's: no list (but the sweeper's node-health pass), no delete, no
        // status.
        let merge = |v: serde_json::Value| Patch::Merge(v);
        let listed = nodes.list(&Default::default()).await;
        if sa == SWEEPER {
            admitted(listed, &what("listing"));
        } else {
            refused(listed, &what("listing"), &rbac_forbids("list", "nodes"));
        }
        refused(
            nodes.delete(&name, &dry_delete()).await,
            &what("deleting"),
            &rbac_forbids("delete", "nodes"),
        );
        refused(
            nodes
                .patch_status(&name, &dry_patch(), &merge(json!({"metadata": {"labels": {labels::STATUS: "x"}}})))
                .await,
            &what("patching nodes/status"),
            &rbac_forbids("patch", "nodes/status"),
        );
    }
    assert_eq!(
        Api::<Node>::all(admin).get(&name).await.unwrap().metadata.labels,
        node.metadata.labels,
        "dry runs only"
    );
}
