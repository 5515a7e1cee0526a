//! The RBAC and the ValidatingAdmissionPolicies `infra/k8s/base` ships, on a real API server:
//! `scripts/control_plane.sh` applies the kustomization (the policies as `v1beta1`, as 1.28
//! serves them) and waits until every policy refuses what it must. `manifests.rs` checks the same
//! manifests statically (what each grant and expression names); here RBAC answers and the CEL
//! runs. Every identity is the admin impersonating it, which goes through RBAC, the Node
//! authorizer, NodeRestriction and the policies as the real one would; writes that are not the
//! point of a test are server-side dry runs (admission runs, nothing is stored). Each test makes
//! its own Nodes, Secrets and Namespaces under fresh names and removes them, failed or not.
//!
//! What each submodule proves:
//! - [`grants`]: RBAC gives each worker exactly the grants of `rbac.yaml`, every one of them
//!   works, and a table of what no worker may do is refused to all of them.
//! - [`issuer`]: the join-token issuer may create only expiring bootstrap tokens in kube-system
//!   (`worldland-join-token-issuer`), and delete only tokens.
//! - [`token_deleters`]: the recorder and the sweeper may delete only bootstrap tokens
//!   (`worldland-token-deleter`).
//! - [`node_markers`]: the recorder and the sweeper may change only `worldland.io/` keys on Nodes
//!   (`worldland-node-marker`).
//! - [`kube_cluster`]: `KubeCluster`, the workers' own code, passes RBAC and admission as each
//!   worker, and its taint update reads again on a conflict.
//! - [`kubelets`]: a kubelet cannot mark its Node for WorldLand (NodeRestriction and
//!   `worldland-node-keys`), nor can an admin outside `system:masters`.
//! - [`approver`]: the CSR approver may only create tainted Nodes and add the provider taint
//!   (`worldland-csr-approver`); join tokens may create only small kubelet CSRs
//!   (`worldland-kubelet-csrs`).
//! - [`type_check`]: the policies arrive whole and type-check on the API server.
//!
//! This module holds what they share: the workers' names, the dry-run parameters, how a refusal
//! by RBAC or by a policy reads, and the tokens and Nodes the tests write.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node, NodeSpec, Secret, Taint as KubeTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ObjectMeta, PatchParams, PostParams};
use worldland_core::cluster::bootstrap::{BootstrapToken, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE};
use worldland_core::labels;
use worldland_tests::real_cluster::Cleanup;

use crate::manifests;

mod approver;
mod grants;
mod issuer;
mod kube_cluster;
mod kubelets;
mod node_markers;
mod token_deleters;
mod type_check;

const ISSUER: &str = "join-token-issuer";
const RECORDER: &str = "heartbeat-recorder";
const SWEEPER: &str = "staleness-sweeper";

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: None,
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..Default::default()
    }
}

fn dry_delete() -> DeleteParams {
    DeleteParams {
        dry_run: true,
        ..Default::default()
    }
}

/// What the API server answers when `policy` refuses with the validation whose message contains
/// `needle`, the message read from the shipped manifest.
fn denial(policy: &str, needle: &str) -> String {
    let p = manifests::parse_all();
    let spec = manifests::policy(&p, policy);
    let messages: Vec<String> = spec
        .validations
        .iter()
        .flatten()
        .filter_map(|v| v.message.as_deref())
        .filter(|m| m.contains(needle))
        .map(|m| m.trim().to_string())
        .collect();
    assert_eq!(messages.len(), 1, "{policy}: one message with {needle:?}: {messages:?}");
    format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {}",
        messages[0]
    )
}

#[track_caller]
fn admitted<T>(r: kube::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: refused: {e}"))
}

/// Refused with 403 and a message containing `expected`.
#[track_caller]
fn refused<T: Debug>(r: kube::Result<T>, what: &str, expected: &str) {
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{what}: {s:?}");
            assert!(
                s.message.contains(expected),
                "{what}: refused, but not with {expected:?}: {}",
                s.message
            );
        }
        Ok(v) => panic!("{what}: admitted ({v:?}); expected a refusal with {expected:?}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// What RBAC says when it refuses (no policy is consulted).
fn rbac_forbids(verb: &str, resource: &str) -> String {
    format!("cannot {verb} resource \"{resource}\"")
}

/// A bootstrap-token Secret as the issuer writes it (`KubeCluster::create_bootstrap_token`).
fn token_secret(token: &BootstrapToken) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(token.secret_name()),
            namespace: Some(TOKEN_NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(TOKEN_SECRET_TYPE.into()),
        data: Some(
            token
                .secret_data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn fresh_token() -> BootstrapToken {
    BootstrapToken::generate(Utc::now() + chrono::Duration::minutes(10), "worldland rbac test".into())
}

/// A Node as a provider's would look once the recorder has labelled it, made by the admin:
/// kubelet-style labels and annotations, ours, and two taints of others (one `NoExecute` with
/// its `timeAdded`).
async fn admin_node(admin: &kube::Client, cleanup: &Cleanup, name: &str, time_added: Time) -> Node {
    cleanup.node(name);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".into(), name.into()),
                ("example.com/keep".into(), "1".into()),
                (labels::PROVIDER_ID.into(), "sim-provider-00001".into()),
                (labels::RENTAL_TYPE.into(), labels::RENTAL_TYPE_GPU.into()),
            ])),
            annotations: Some(BTreeMap::from([
                ("example.com/keep".into(), "1".into()),
                (labels::LAST_HEARTBEAT_ANNOTATION.into(), "2024-01-01T00:00:00Z".into()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![
                KubeTaint {
                    key: "example.com/keep".into(),
                    value: Some("1".into()),
                    effect: "NoSchedule".into(),
                    time_added: None,
                },
                KubeTaint {
                    key: "example.com/evict".into(),
                    value: None,
                    effect: "NoExecute".into(),
                    time_added: Some(time_added),
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Node>::all(admin.clone()).create(&PostParams::default(), &node).await.unwrap()
}

fn now_seconds() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap())
}
