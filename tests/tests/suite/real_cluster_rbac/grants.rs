//! RBAC exactly as the manifests: what RBAC itself lists for each worker's ServiceAccount is the
//! grants of `infra/k8s/base/rbac.yaml` and nothing more, every one of those grants works, and
//! what no worker may do (read a Secret, mint credentials, touch its own leash) is refused to all.

use std::collections::BTreeSet;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectRulesReview, SelfSubjectRulesReviewSpec, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use worldland_tests::real_cluster::{admin, as_worker, impersonating, unique, worker_user};

use super::{ISSUER, RECORDER, SWEEPER};
use crate::manifests;

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
    for ns in ["kube-system", "kube-public", "kube-node-lease", "worldland", "default"] {
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
                ("kube-node-lease", "coordination.k8s.io:leases", "get", "*"),
            ],
        ),
        (
            SWEEPER,
            &[
                ("kube-system", "secrets", "delete", "*"),
                ("cluster", "nodes", "get", "*"),
                ("cluster", "nodes", "list", "*"),
                ("cluster", "nodes", "patch", "*"),
                ("kube-node-lease", "coordination.k8s.io:leases", "get", "*"),
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
    assert!(
        checked >= 11,
        "the issuer's three grants, the recorder's four and the sweeper's five"
    );

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
        // Nodes: no watch, no update, create or delete, no subresource (list: the sweeper only).
        ("watch", "", "nodes", None, None),
        ("create", "", "nodes", None, None),
        ("update", "", "nodes", None, None),
        ("delete", "", "nodes", None, None),
        ("deletecollection", "", "nodes", None, None),
        ("patch", "", "nodes/status", None, None),
        ("update", "", "nodes/status", None, None),
        ("get", "", "nodes/proxy", None, None),
        ("create", "", "nodes/proxy", None, None),
        // Leases: the kubelets' are read one by one, never written nor listed; no other is read
        // (leader elections live in kube-system).
        ("create", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
        ("update", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
        ("patch", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
        ("delete", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
        ("list", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
        ("watch", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
        ("get", "coordination.k8s.io", "leases", Some("kube-system"), None),
        ("list", "coordination.k8s.io", "leases", None, None),
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
    let only: [(&str, Ask); 7] = [
        (ISSUER, ("create", "", "secrets", Some("kube-system"), None)),
        (ISSUER, ("get", "", "configmaps", Some("kube-public"), Some("cluster-info"))),
        (ISSUER, ("delete", "", "secrets", Some("kube-system"), None)),
        (RECORDER, ("get", "", "nodes", None, None)),
        (RECORDER, ("patch", "", "nodes", None, None)),
        (RECORDER, ("get", "coordination.k8s.io", "leases", Some("kube-node-lease"), None)),
        (SWEEPER, ("list", "", "nodes", None, None)),
    ];
    for sa in worker_accounts() {
        for (owner, (verb, group, res, ns, name)) in only {
            // The approver reads and patches Nodes too (it lists none).
            let node_reader = sa == "csr-approver" && res == "nodes" && verb != "list";
            // Deleting tokens: the issuer (the one it replaces), the recorder and the sweeper.
            let token_deleter = verb == "delete" && [RECORDER, SWEEPER].contains(&sa.as_str());
            let expected = sa == owner || (owner == RECORDER && sa == SWEEPER) || node_reader || token_deleter;
            assert_eq!(
                may(&client, &sa, verb, group, res, ns, name).await,
                expected,
                "{sa}: {verb} {res} {name:?} in {ns:?}"
            );
        }
    }
}
