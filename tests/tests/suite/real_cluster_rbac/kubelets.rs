//! Kubelets and admins on Nodes: NodeRestriction keeps a kubelet to its own Node and off the
//! broker label, and `worldland-node-keys` keeps it (and any admin outside `system:masters`) off
//! the `worldland.io/` labels, annotations and taints, on registration as after it.

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint as KubeTaint};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PostParams};
use serde_json::json;
use worldland_core::labels;
use worldland_tests::real_cluster::{admin, impersonating, unique, until, Cleanup};

use super::{admitted, denial, dry_patch, dry_post, refused};

fn node_object(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)], taint: Option<&str>) -> Node {
    let map = |kv: &[(&str, &str)]| (!kv.is_empty()).then(|| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        },
        spec: taint.map(|key| NodeSpec {
            taints: Some(vec![KubeTaint {
                key: key.into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_kubelet_cannot_mark_its_node_for_worldland() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let (own, other) = (unique("wl-kubelet"), unique("wl-victim"));
    for n in [&own, &other] {
        cleanup.node(n);
        let node = node_object(n, &[(labels::PROVIDER_ID, "sim-provider-00001")], &[], None);
        Api::<Node>::all(admin.clone()).create(&PostParams::default(), &node).await.unwrap();
    }
    let kubelet = impersonating(&format!("system:node:{own}"), &["system:nodes"]).await;
    let nodes: Api<Node> = Api::all(kubelet.clone());
    let keys = "worldland-node-keys";
    let label = |k: &str, v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {k: v}}}));

    // Not vacuous: the kubelet writes its own Node, other keys included.
    admitted(
        nodes.patch(&own, &dry_patch(), &label("example.com/probe", Some("1"))).await,
        "an ordinary label",
    );
    admitted(
        nodes
            .patch(
                &own,
                &dry_patch(),
                &Patch::Merge(json!({"metadata": {"annotations": {"example.com/probe": "1"}}})),
            )
            .await,
        "an ordinary annotation",
    );
    // NodeRestriction: the admin-only broker label.
    refused(
        nodes
            .patch(&own, &dry_patch(), &label(labels::BROKER_NODE_LABEL, Some("true")))
            .await,
        "the broker node label",
        &format!("is not allowed to modify labels: {}", labels::BROKER_NODE_LABEL),
    );
    // worldland-node-keys: our labels and annotations, added, changed or removed.
    let labels_denied = denial(keys, "labels");
    refused(
        nodes
            .patch(&own, &dry_patch(), &label(labels::PROVIDER_ID, Some("sim-provider-00002")))
            .await,
        "changing its provider id",
        &labels_denied,
    );
    refused(
        nodes
            .patch(&own, &dry_patch(), &label(labels::RENTAL_TYPE, Some(labels::RENTAL_TYPE_GPU)))
            .await,
        "adding a worldland.io/ label",
        &labels_denied,
    );
    refused(
        nodes.patch(&own, &dry_patch(), &label(labels::PROVIDER_ID, None)).await,
        "removing its provider id",
        &labels_denied,
    );
    refused(
        nodes
            .patch(
                &own,
                &dry_patch(),
                &Patch::Merge(json!({"metadata": {"annotations": {labels::LAST_HEARTBEAT_ANNOTATION: "x"}}})),
            )
            .await,
        "a worldland.io/ annotation",
        &denial(keys, "annotations"),
    );
    // Through nodes/status too (its strategy keeps metadata changes).
    refused(
        nodes
            .patch_status(&own, &dry_patch(), &label(labels::PROVIDER_ID, Some("sim-provider-00002")))
            .await,
        "its provider id through nodes/status",
        &labels_denied,
    );
    // Taints after registration: NodeRestriction refuses before the policy is asked.
    let taint = Patch::Merge(json!({"spec": {"taints": [{"key": labels::OFFLINE_TAINT, "value": "true", "effect": "NoSchedule"}]}}));
    refused(
        nodes.patch(&own, &dry_patch(), &taint).await,
        "a worldland.io/ taint",
        &format!("node \"{own}\" is not allowed to modify taints"),
    );
    // Another node: NodeRestriction (the Node authorizer lets a kubelet write Nodes at all).
    refused(
        nodes.patch(&other, &dry_patch(), &label("example.com/probe", Some("1"))).await,
        "another node",
        &format!("node \"{own}\" is not allowed to modify node \"{other}\""),
    );

    // Registration, as `kubelet --node-labels` / `--register-with-taints` would make it.
    let fresh = unique("wl-joining");
    cleanup.node(&fresh);
    let joining: Api<Node> = Api::all(impersonating(&format!("system:node:{fresh}"), &["system:nodes"]).await);
    admitted(
        joining
            .create(&dry_post(), &node_object(&fresh, &[("example.com/pool", "a")], &[], None))
            .await,
        "a plain registration",
    );
    refused(
        joining
            .create(
                &dry_post(),
                &node_object(
                    &fresh,
                    &[(labels::PROVIDER_ID, "sim-provider-00001"), (labels::RENTAL_TYPE, "gpu")],
                    &[],
                    None,
                ),
            )
            .await,
        "registering with worldland.io/ labels",
        &labels_denied,
    );
    refused(
        joining
            .create(
                &dry_post(),
                &node_object(&fresh, &[], &[(labels::LAST_HEARTBEAT_ANNOTATION, "x")], None),
            )
            .await,
        "registering with a worldland.io/ annotation",
        &denial(keys, "annotations"),
    );
    refused(
        joining
            .create(&dry_post(), &node_object(&fresh, &[], &[], Some(labels::OFFLINE_TAINT)))
            .await,
        "registering with a worldland.io/ taint",
        &denial(keys, "taints"),
    );
    refused(
        joining
            .create(&dry_post(), &node_object(&fresh, &[(labels::BROKER_NODE_LABEL, "true")], &[], None))
            .await,
        "registering with the broker node label",
        &format!("is not allowed to set the following labels: {}", labels::BROKER_NODE_LABEL),
    );
    refused(
        joining.create(&dry_post(), &node_object(&other, &[], &[], None)).await,
        "registering as another node",
        "is not allowed to modify node",
    );

    // Admins: one outside system:masters is held too; system:masters is the break-glass group.
    let group = unique("wl-admins");
    let binding = unique("wl-admins");
    cleanup.cluster_role_binding(&binding);
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(binding.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: "cluster-admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "Group".into(),
                    name: group.clone(),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    namespace: None,
                }]),
            },
        )
        .await
        .unwrap();
    let cluster_admin: Api<Node> = Api::all(impersonating("someone", &[&group]).await);
    let probe = label(labels::STATUS, Some(labels::STATUS_OFFLINE));
    // RBAC picks up a new binding a moment later.
    until("the cluster-admin binding takes effect", 10, || async {
        match cluster_admin.patch(&own, &dry_patch(), &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains(&labels_denied) => Some(()),
            _ => None,
        }
    })
    .await;
    admitted(
        cluster_admin
            .patch(&own, &dry_patch(), &label("example.com/probe", Some("1")))
            .await,
        "a cluster admin, another label",
    );
    let break_glass: Api<Node> = Api::all(impersonating("someone", &["system:masters"]).await);
    admitted(break_glass.patch(&own, &dry_patch(), &probe).await, "system:masters");
}
