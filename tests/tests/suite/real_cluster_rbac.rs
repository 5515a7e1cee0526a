//! The RBAC and the ValidatingAdmissionPolicies `infra/k8s/base` ships, on a real API server:
//! `scripts/control_plane.sh` applies the kustomization (the policies as `v1beta1`, as 1.28
//! serves them) and waits until every policy refuses what it must. `manifests.rs` checks the same
//! manifests statically (what each grant and expression names); here RBAC answers and the CEL
//! runs. Every identity is the admin impersonating it, which goes through RBAC, the Node
//! authorizer, NodeRestriction and the policies as the real one would; writes that are not the
//! point of a test are server-side dry runs (admission runs, nothing is stored). Each test makes
//! its own Nodes, Secrets and Namespaces under fresh names and removes them, failed or not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use http::{Request, Response};
use k8s_openapi::api::admissionregistration::v1beta1::ValidatingAdmissionPolicy;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectRulesReview, SelfSubjectRulesReviewSpec, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeSpec, Secret, Taint as KubeTaint};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::client::Body;
use serde_json::json;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_core::cluster::bootstrap::{random_token_chars, BootstrapToken, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE};
use worldland_core::cluster::{Cluster, ClusterError, Created, NodeInfo};
use worldland_core::labels;
use worldland_tests::real_cluster::{admin, as_worker, impersonating, unique, until, worker_user, Cleanup};

use crate::manifests;

const ISSUER: &str = "join-token-issuer";
const RECORDER: &str = "heartbeat-recorder";
const SWEEPER: &str = "staleness-sweeper";

pub(crate) fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: None,
    }
}

pub(crate) fn dry_patch() -> PatchParams {
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
pub(crate) fn denial(policy: &str, needle: &str) -> String {
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
pub(crate) fn admitted<T>(r: kube::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: refused: {e}"))
}

/// Refused with 403 and a message containing `expected`.
#[track_caller]
pub(crate) fn refused<T: Debug>(r: kube::Result<T>, what: &str, expected: &str) {
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

// ---------------------------------------------------------------------------------------------
// RBAC

/// (namespace, or "cluster" for a cluster-wide grant; resource[/subresource]; verb; name or "*").
type Grant = (String, String, String, String);

/// (namespace or "cluster", resource, verb, name or "*"): a grant as `manifests::grants` lists it.
type Call<'a> = (&'a str, &'a str, &'a str, &'a str);
/// (verb, API group, resource[/subresource], namespace, name): a request put to RBAC.
type Ask<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// (API group, resource) of a resource as `manifests::grants` names it (`group:resource`).
fn split_group(res: &str) -> (&str, &str) {
    res.split_once(':').unwrap_or(("", res))
}

/// The groups the API server gives a ServiceAccount's token.
fn sa_groups() -> Vec<String> {
    ["system:serviceaccounts", "system:serviceaccounts:worldland", "system:authenticated"]
        .map(String::from)
        .into()
}

/// A SubjectAccessReview, as the admin: may the worker `sa` do it? `group` is the API group.
async fn may(client: &kube::Client, sa: &str, verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(worker_user(sa)),
            groups: Some(sa_groups()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: ns.map(str::to_string),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

/// Every worker ServiceAccount infra/k8s/base deploys.
fn worker_accounts() -> Vec<String> {
    let p = manifests::parse_all();
    let sas: Vec<String> = p
        .service_accounts
        .iter()
        .inspect(|s| assert_eq!(s.metadata.namespace.as_deref(), Some("worldland")))
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    for w in [ISSUER, RECORDER, SWEEPER] {
        assert!(sas.iter().any(|s| s == w), "{w} is deployed");
    }
    sas
}

/// The resource rules RBAC gives `client`'s user in `ns` (namespaced ones and cluster-wide ones
/// alike), flattened to (API group, resource, verb, name or "*").
async fn rules(client: kube::Client, ns: &str) -> BTreeSet<(String, String, String, String)> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(ns.into()),
        },
        ..Default::default()
    };
    let status = Api::<SelfSubjectRulesReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(!status.incomplete, "{ns}: {:?}", status.evaluation_error);
    let mut out = BTreeSet::new();
    for r in status.resource_rules {
        let names = r.resource_names.unwrap_or_else(|| vec!["*".into()]);
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    for n in &names {
                        out.insert((g.clone(), res.clone(), verb.clone(), n.clone()));
                    }
                }
            }
        }
    }
    out
}

/// RBAC gives each worker's ServiceAccount exactly the grants of `infra/k8s/base/rbac.yaml`:
/// what RBAC itself lists for the impersonated account, in every namespace the broker touches,
/// is the manifest's grants plus what every authenticated user has (measured on a user with no
/// binding at all), so a grant added anywhere else (another binding, a group binding) shows.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn rbac_gives_each_worker_exactly_the_grants_of_the_manifests() {
    let p = manifests::parse_all();
    let nobody = impersonating(&unique("wl-nobody"), &["system:authenticated"]).await;
    for ns in ["kube-system", "kube-public", "worldland", "default"] {
        let everyone = rules(nobody.clone(), ns).await;
        for sa in worker_accounts() {
            let granted: BTreeSet<_> = rules(as_worker(&sa).await, ns).await.difference(&everyone).cloned().collect();
            let expected: BTreeSet<_> = manifests::grants(&p, &sa)
                .into_iter()
                .filter(|(at, ..)| at == ns || at == "cluster")
                .map(|(_, res, verb, name)| {
                    let (group, res) = split_group(&res);
                    (group.to_string(), res.to_string(), verb, name)
                })
                .collect();
            assert_eq!(granted, expected, "{sa} in {ns}: RBAC's rules beyond everyone's, against rbac.yaml");
        }
    }
}

/// Every grant the manifests make works (a SubjectAccessReview for each, as the workers call
/// it), the ones the workers' code needs among them; and an explicit table of what no worker may
/// do, each asked of RBAC for every worker.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn rbac_allows_what_each_worker_calls_and_refuses_the_rest() {
    let p = manifests::parse_all();
    let client = admin().await;
    // What the workers' code calls (shared/adapters/src/cluster/kube_api.rs): must be among the grants.
    let calls: [(&str, &[Call]); 3] = [
        (
            ISSUER,
            &[
                ("kube-system", "secrets", "create", "*"),
                ("kube-public", "configmaps", "get", "cluster-info"),
            ],
        ),
        (
            RECORDER,
            &[
                ("kube-system", "secrets", "delete", "*"),
                ("cluster", "nodes", "get", "*"),
                ("cluster", "nodes", "patch", "*"),
            ],
        ),
        (
            SWEEPER,
            &[
                ("kube-system", "secrets", "delete", "*"),
                ("cluster", "nodes", "get", "*"),
                ("cluster", "nodes", "patch", "*"),
            ],
        ),
    ];
    let mut checked = 0;
    for (sa, needed) in calls {
        let grants = manifests::grants(&p, sa);
        for (ns, res, verb, name) in needed {
            let g: Grant = (ns.to_string(), res.to_string(), verb.to_string(), name.to_string());
            assert!(
                grants.contains(&g),
                "{sa} calls {verb} {res} in {ns} and rbac.yaml does not grant it"
            );
        }
    }
    // Each grant of the manifests, as RBAC answers it (a named grant for that name, a grant on
    // every name for a fresh one).
    for sa in worker_accounts() {
        for (ns, res, verb, name) in manifests::grants(&p, &sa) {
            let ns = (ns != "cluster").then_some(ns.as_str());
            let name = if name == "*" { unique("wl-any") } else { name };
            let (group, res) = split_group(&res);
            assert!(
                may(&client, &sa, &verb, group, res, ns, Some(&name)).await,
                "{sa}: RBAC refuses {verb} {res}/{name} in {ns:?}, which rbac.yaml grants"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "the issuer's two grants, the recorder's and the sweeper's three each");

    // What no worker may do, whatever it is granted: (verb, API group, resource, namespace, name).
    let never: &[Ask] = &[
        // No Secret is ever read: kubeadm-certs, ServiceAccount tokens, bootstrap tokens.
        ("get", "", "secrets", Some("kube-system"), None),
        ("get", "", "secrets", Some("kube-system"), Some("kubeadm-certs")),
        ("list", "", "secrets", Some("kube-system"), None),
        ("watch", "", "secrets", Some("kube-system"), None),
        ("list", "", "secrets", None, None),
        ("get", "", "secrets", Some("worldland"), Some("worldland-credentials")),
        ("list", "", "secrets", Some("worldland"), None),
        ("get", "", "secrets", Some("default"), None),
        // Secrets elsewhere, and rewriting one.
        ("create", "", "secrets", Some("default"), None),
        ("create", "", "secrets", Some("worldland"), None),
        ("create", "", "secrets", Some("kube-public"), None),
        ("delete", "", "secrets", Some("default"), None),
        ("delete", "", "secrets", Some("worldland"), None),
        ("deletecollection", "", "secrets", Some("kube-system"), None),
        ("update", "", "secrets", Some("kube-system"), None),
        ("patch", "", "secrets", Some("kube-system"), None),
        // Credentials of others.
        ("create", "", "serviceaccounts/token", Some("kube-system"), None),
        ("create", "", "serviceaccounts/token", Some("worldland"), None),
        ("impersonate", "", "users", None, None),
        ("impersonate", "", "groups", None, None),
        ("impersonate", "", "serviceaccounts", Some("worldland"), None),
        ("create", "certificates.k8s.io", "certificatesigningrequests", None, None),
        ("update", "certificates.k8s.io", "certificatesigningrequests/approval", None, None),
        // Nodes: no list or watch, no update, create or delete, no subresource.
        ("list", "", "nodes", None, None),
        ("watch", "", "nodes", None, None),
        ("create", "", "nodes", None, None),
        ("update", "", "nodes", None, None),
        ("delete", "", "nodes", None, None),
        ("deletecollection", "", "nodes", None, None),
        ("patch", "", "nodes/status", None, None),
        ("update", "", "nodes/status", None, None),
        ("get", "", "nodes/proxy", None, None),
        ("create", "", "nodes/proxy", None, None),
        // Workloads: running something anywhere would reach whatever it mounts.
        ("create", "", "pods", Some("worldland"), None),
        ("create", "", "pods", Some("kube-system"), None),
        ("create", "", "pods/exec", Some("worldland"), None),
        ("create", "", "pods/eviction", Some("default"), None),
        ("create", "apps", "deployments", Some("worldland"), None),
        ("patch", "apps", "deployments", Some("worldland"), None),
        // cluster-info: read, never written; no other ConfigMap of kube-public.
        ("update", "", "configmaps", Some("kube-public"), Some("cluster-info")),
        ("patch", "", "configmaps", Some("kube-public"), Some("cluster-info")),
        ("delete", "", "configmaps", Some("kube-public"), Some("cluster-info")),
        ("get", "", "configmaps", Some("kube-public"), Some("kube-root-ca.crt")),
        ("get", "", "configmaps", Some("kube-system"), Some("kubeadm-config")),
        // Its own leash: the policies, their bindings, RBAC.
        (
            "delete",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
            None,
            Some("worldland-node-keys"),
        ),
        (
            "update",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            None,
            Some("worldland-node-marker"),
        ),
        (
            "patch",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            None,
            Some("worldland-join-token-issuer"),
        ),
        (
            "create",
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            None,
            None,
        ),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", None, None),
        ("create", "rbac.authorization.k8s.io", "rolebindings", Some("kube-system"), None),
        (
            "update",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
            Some("worldland-node-marker"),
        ),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", None, Some("cluster-admin")),
        ("escalate", "rbac.authorization.k8s.io", "roles", Some("kube-system"), None),
    ];
    for sa in worker_accounts() {
        for (verb, group, res, ns, name) in never {
            // The CSR approver creates each provider's Node (its policy narrows that to a Node
            // carrying only the provider taint).
            if sa == "csr-approver" && (*verb, *res) == ("create", "nodes") {
                continue;
            }
            assert!(
                !may(&client, &sa, verb, group, res, *ns, *name).await,
                "{sa} may {verb} {group}/{res} {name:?} in {ns:?}"
            );
        }
    }
    // What only some may do, refused to the others: the grants of one worker are not another's.
    let only: [(&str, Ask); 5] = [
        (ISSUER, ("create", "", "secrets", Some("kube-system"), None)),
        (ISSUER, ("get", "", "configmaps", Some("kube-public"), Some("cluster-info"))),
        (ISSUER, ("delete", "", "secrets", Some("kube-system"), None)),
        (RECORDER, ("get", "", "nodes", None, None)),
        (RECORDER, ("patch", "", "nodes", None, None)),
    ];
    for sa in worker_accounts() {
        for (owner, (verb, _, res, ns, name)) in only {
            let node_reader = sa == "csr-approver" && res == "nodes";
            // Deleting tokens: the issuer (the one it replaces), the recorder and the sweeper.
            let token_deleter = verb == "delete" && [RECORDER, SWEEPER].contains(&sa.as_str());
            let expected = sa == owner || (owner == RECORDER && sa == SWEEPER) || node_reader || token_deleter;
            assert_eq!(
                may(&client, &sa, verb, "", res, ns, name).await,
                expected,
                "{sa}: {verb} {res} {name:?} in {ns:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Admission: what each worker writes, and what each policy refuses

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

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_issuer_may_create_only_expiring_bootstrap_tokens_in_kube_system() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let other_ns = unique("wl-rbac");
    cleanup.namespace(&other_ns);
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(other_ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let issuer = as_worker(ISSUER).await;
    let secrets: Api<Secret> = Api::namespaced(issuer.clone(), TOKEN_NAMESPACE);
    let policy = "worldland-join-token-issuer";

    let made = admitted(secrets.create(&dry_post(), &token_secret(&fresh_token())).await, "a proper token");
    assert_eq!(made.type_.as_deref(), Some(TOKEN_SECRET_TYPE));

    let mut opaque = token_secret(&fresh_token());
    opaque.type_ = Some("Opaque".into());
    refused(
        secrets.create(&dry_post(), &opaque).await,
        "an Opaque Secret",
        &denial(policy, "create only Secrets of type"),
    );

    let mut untyped = token_secret(&fresh_token());
    untyped.type_ = None;
    refused(
        secrets.create(&dry_post(), &untyped).await,
        "a Secret with no type",
        &denial(policy, "create only Secrets of type"),
    );

    let mut sa_token = token_secret(&fresh_token());
    sa_token.type_ = Some("kubernetes.io/service-account-token".into());
    sa_token.metadata.annotations = Some(BTreeMap::from([("kubernetes.io/service-account.name".into(), "default".into())]));
    refused(
        secrets.create(&dry_post(), &sa_token).await,
        "a ServiceAccount token Secret",
        &denial(policy, "create only Secrets of type"),
    );

    for name in [
        "worldland-credentials",
        "bootstrap-token-abc",
        "bootstrap-token-abc-de",
        "bootstrap-token-abcdefg",
    ] {
        let mut renamed = token_secret(&fresh_token());
        renamed.metadata.name = Some(name.into());
        refused(secrets.create(&dry_post(), &renamed).await, name, &denial(policy, "named"));
    }

    let mut everlasting = token_secret(&fresh_token());
    everlasting.data.as_mut().unwrap().remove("expiration");
    refused(
        secrets.create(&dry_post(), &everlasting).await,
        "a token with no expiration",
        &denial(policy, "expiration"),
    );

    // Elsewhere RBAC refuses first (the policy would too).
    for ns in [other_ns.as_str(), "default", "worldland"] {
        let mut moved = token_secret(&fresh_token());
        moved.metadata.namespace = Some(ns.into());
        refused(
            Api::<Secret>::namespaced(issuer.clone(), ns).create(&dry_post(), &moved).await,
            &format!("a token in {ns}"),
            &rbac_forbids("create", "secrets"),
        );
    }

    // It may delete a token (the one it replaces), and only a token: the policy refuses any
    // other Secret. No update: RBAC refuses.
    let real = fresh_token();
    let name = real.secret_name();
    cleanup.kube_system_secret(&name);
    admitted(secrets.create(&PostParams::default(), &token_secret(&real)).await, "a real token");
    admitted(secrets.delete(&name, &dry_delete()).await, "deleting its token");
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), TOKEN_NAMESPACE);
    let other = unique("wl-not-a-token");
    let not_a_token: Secret =
        serde_json::from_value(json!({"metadata": {"name": other}, "type": "Opaque", "stringData": {"a": "b"}})).unwrap();
    admin_secrets.create(&PostParams::default(), &not_a_token).await.unwrap();
    cleanup.kube_system_secret(&other);
    refused(
        secrets.delete(&other, &dry_delete()).await,
        "deleting a Secret that is not a token",
        &denial(policy, "delete only"),
    );
    refused(
        secrets
            .patch(&name, &dry_patch(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await,
        "patching its token",
        &rbac_forbids("patch", "secrets"),
    );
    refused(secrets.get(&name).await, "reading its token back", &rbac_forbids("get", "secrets"));
}

/// For the recorder and the sweeper: a Secret the admin made in kube-system.
async fn admin_secret(admin: &kube::Client, cleanup: &Cleanup, name: &str, type_: &str, data: &[(&str, &str)]) {
    cleanup.kube_system_secret(name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), TOKEN_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_recorder_and_sweeper_may_delete_only_bootstrap_tokens() {
    let cleanup = Cleanup::default();
    let admin = admin().await;
    let token = fresh_token();
    Api::<Secret>::namespaced(admin.clone(), TOKEN_NAMESPACE)
        .create(&PostParams::default(), &token_secret(&token))
        .await
        .unwrap();
    cleanup.kube_system_secret(&token.secret_name());
    let opaque = unique("wl-probe");
    admin_secret(&admin, &cleanup, &opaque, "Opaque", &[("a", "b")]).await;
    // A bootstrap-token name on a Secret of another type.
    let disguised = format!("bootstrap-token-{}", random_token_chars(6));
    admin_secret(&admin, &cleanup, &disguised, "Opaque", &[("token-id", "x")]).await;
    let policy = "worldland-token-deleter";
    for sa in [RECORDER, SWEEPER] {
        let secrets: Api<Secret> = Api::namespaced(as_worker(sa).await, TOKEN_NAMESPACE);
        admitted(secrets.delete(&token.secret_name(), &dry_delete()).await, &format!("{sa}: a token"));
        for name in [&opaque, &disguised] {
            refused(
                secrets.delete(name, &dry_delete()).await,
                &format!("{sa}: deleting {name}"),
                &denial(policy, "may delete only"),
            );
        }
        // Reads and every other write are RBAC's to refuse.
        refused(
            secrets.get(&token.secret_name()).await,
            "reading a token",
            &rbac_forbids("get", "secrets"),
        );
        refused(
            secrets.create(&dry_post(), &token_secret(&fresh_token())).await,
            &format!("{sa}: creating a token"),
            &rbac_forbids("create", "secrets"),
        );
        refused(
            Api::<Secret>::namespaced(as_worker(sa).await, "default")
                .delete("anything", &dry_delete())
                .await,
            &format!("{sa}: deleting in default"),
            &rbac_forbids("delete", "secrets"),
        );
    }
    // And the real delete, as the recorder's code makes it.
    KubeCluster::new(as_worker(RECORDER).await)
        .delete_bootstrap_token(&token.id)
        .await
        .unwrap();
    assert!(Api::<Secret>::namespaced(admin, TOKEN_NAMESPACE)
        .get_opt(&token.secret_name())
        .await
        .unwrap()
        .is_none());
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

/// The node's taints as JSON, with `extra` appended: the list a merge patch replaces.
fn taints_with(node: &Node, extra: serde_json::Value) -> serde_json::Value {
    let mut taints = serde_json::to_value(node.spec.as_ref().unwrap().taints.clone().unwrap_or_default()).unwrap();
    taints.as_array_mut().unwrap().push(extra);
    taints
}

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
        // Everything else is RBAC's: no list, no delete, no status.
        let merge = |v: serde_json::Value| Patch::Merge(v);
        refused(
            nodes.list(&Default::default()).await,
            &what("listing"),
            &rbac_forbids("list", "nodes"),
        );
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

// ---------------------------------------------------------------------------------------------
// KubeCluster as the workers, on the real API server

/// Taints other than those the node lifecycle controller may add to a Node without a kubelet
/// (`node.kubernetes.io/…` once its grace period has run out), as (key, value, effect, timeAdded).
fn taints_of(node: &NodeInfo) -> Vec<(String, Option<String>, String, Option<String>)> {
    node.taints
        .iter()
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone(), t.time_added.clone()))
        .collect()
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

// ---------------------------------------------------------------------------------------------
// Kubelets: NodeRestriction and worldland-node-keys

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

// ---------------------------------------------------------------------------------------------
// The policies as the API server compiled them

/// The policies are all there, as the manifests declare them, and the type checker (run by
/// kube-controller-manager into `status.typeChecking`) finds nothing wrong in their expressions.
/// On 1.28 and 1.29 it does not know `variables` (kubernetes/kubernetes#122935, fixed in 1.30)
/// and reports every reference to one: those reports, and only those, are tolerated.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_policies_type_check_on_the_api_server() {
    let p = manifests::parse_all();
    let shipped: BTreeSet<String> = p.policies.iter().map(|x| x.metadata.name.clone().unwrap()).collect();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin().await);
    let checked = until("kube-controller-manager type-checks every policy", 30, || async {
        let all = policies.list(&Default::default()).await.unwrap().items;
        let ours: Vec<_> = all
            .into_iter()
            .filter(|x| shipped.contains(x.metadata.name.as_deref().unwrap()))
            .collect();
        (ours.len() == shipped.len()
            && ours.iter().all(|x| {
                x.status
                    .as_ref()
                    .is_some_and(|s| s.type_checking.is_some() && s.observed_generation == x.metadata.generation)
            }))
        .then_some(ours)
    })
    .await;
    let mut variables_only = 0;
    for x in checked {
        let name = x.metadata.name.clone().unwrap();
        let declared = manifests::policy(&p, &name);
        let spec = x.spec.as_ref().unwrap();
        assert_eq!(
            spec.validations.as_ref().map(Vec::len),
            declared.validations.as_ref().map(Vec::len),
            "{name}: every validation arrived"
        );
        assert_eq!(
            spec.variables
                .as_ref()
                .map(|v| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>()),
            declared
                .variables
                .as_ref()
                .map(|v| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>()),
            "{name}: every variable arrived"
        );
        let warnings = x.status.unwrap().type_checking.unwrap().expression_warnings.unwrap_or_default();
        for w in warnings {
            let errors: Vec<&str> = w.warning.split("ERROR: ").skip(1).collect();
            assert!(!errors.is_empty(), "{name} {}: {}", w.field_ref, w.warning);
            for e in errors {
                let first = e.lines().next().unwrap_or_default();
                assert!(
                    first.ends_with("undeclared reference to 'variables' (in container '')"),
                    "{name} {}: {first}",
                    w.field_ref
                );
            }
            variables_only += 1;
        }
    }
    // Only the expressions that use variables are reported, so the checker did read the others.
    let using_variables = p
        .policies
        .iter()
        .flat_map(|x| x.spec.as_ref().unwrap().validations.iter().flatten())
        .filter(|v| v.expression.contains("variables."))
        .count();
    assert!(
        variables_only <= using_variables,
        "{variables_only} warnings, {using_variables} expressions with variables"
    );
}
