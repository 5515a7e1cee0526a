//! Every Kubernetes manifest under `infra/k8s` parses into the k8s-openapi types with no field
//! left over (a typo'd or unknown field fails), every worker has its Deployment with probes and
//! resource requests, and RBAC grants each worker only what it calls.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/k8s")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

/// Parses into `T` and back: anything `T` does not know is lost, and the comparison fails.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value, file: &Path) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, doc, "{}: a field the type does not know (or a wrong type)", file.display());
    typed
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct Kustomization {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<Value>,
    #[serde(default)]
    patches: Vec<KustomizePatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizePatch {
    path: String,
}

#[derive(Default)]
struct Parsed {
    deployments: Vec<Deployment>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
}

fn parse_all() -> Parsed {
    let mut files = vec![];
    yaml_files(&root(), &mut files);
    assert!(!files.is_empty());
    let mut parsed = Parsed::default();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in docs {
            match (doc["apiVersion"].as_str().unwrap_or(""), doc["kind"].as_str().unwrap_or("")) {
                (_, "Kustomization") => {
                    let k: Kustomization = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    let dir = file.parent().unwrap();
                    for r in k.resources.iter().chain(k.patches.iter().map(|p| &p.path)) {
                        assert!(dir.join(r).exists(), "{}: {r} does not exist", file.display());
                    }
                }
                ("v1", "ConfigMap") => drop(strict::<ConfigMap>(&doc, &file)),
                ("v1", "Namespace") => drop(strict::<Namespace>(&doc, &file)),
                ("v1", "ServiceAccount") => parsed.service_accounts.push(strict(&doc, &file)),
                ("apps/v1", "Deployment") => parsed.deployments.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "Role") => parsed.roles.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => parsed.role_bindings.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => parsed.cluster_roles.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => parsed.cluster_role_bindings.push(strict(&doc, &file)),
                (v, k) => panic!("{}: unexpected {v} {k}", file.display()),
            }
        }
    }
    parsed
}

#[test]
fn every_manifest_parses_with_no_unknown_field() {
    parse_all();
}

#[test]
fn unknown_fields_are_caught() {
    let doc: Value = serde_saphyr::from_str("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  nmespace: typo\n").unwrap();
    let caught = std::panic::catch_unwind(|| strict::<ServiceAccount>(&doc, Path::new("inline")));
    assert!(caught.is_err(), "a misspelt field must fail");
}

#[test]
fn every_worker_has_a_probed_deployment_with_requests() {
    let p = parse_all();
    let workers: BTreeSet<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let deployed: BTreeSet<String> = p.deployments.iter().map(|d| d.metadata.name.clone().unwrap()).collect();
    assert_eq!(deployed, workers, "one Deployment per worker");
    let accounts: BTreeSet<String> = p.service_accounts.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    for d in &p.deployments {
        let name = d.metadata.name.as_deref().unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(
            accounts.contains(pod.service_account_name.as_deref().unwrap()),
            "{name}: its ServiceAccount"
        );
        let c = &pod.containers[0];
        assert_eq!(c.command.as_ref().unwrap()[0], format!("/usr/local/bin/{name}"));
        let path =
            |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"), "{name}");
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"), "{name}");
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("resource requests");
        assert!(req.contains_key("cpu") && req.contains_key("memory"), "{name}");
    }
}

fn rules_of(p: &Parsed, subject: &str) -> Vec<(Option<String>, PolicyRule)> {
    let bound = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| s.kind == "ServiceAccount" && s.name == subject)
    };
    let mut out = vec![];
    for b in p.role_bindings.iter().filter(|b| bound(&b.subjects)) {
        let role = p
            .roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()) && r.metadata.namespace == b.metadata.namespace)
            .expect("bound Role exists");
        out.extend(role.rules.iter().flatten().map(|r| (role.metadata.namespace.clone(), r.clone())));
    }
    for b in p.cluster_role_bindings.iter().filter(|b| bound(&b.subjects)) {
        let role = p
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(b.role_ref.name.as_str()))
            .expect("bound ClusterRole exists");
        out.extend(role.rules.iter().flatten().map(|r| (None, r.clone())));
    }
    out
}

/// (namespace or "cluster", resource, verb, resource name or "*"), flattened.
fn grants(p: &Parsed, subject: &str) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for (ns, r) in rules_of(p, subject) {
        assert_eq!(
            r.api_groups.as_deref(),
            Some(&[String::new()][..]),
            "{subject}: core API group only"
        );
        for res in r.resources.iter().flatten() {
            for verb in &r.verbs {
                let names = r.resource_names.clone().unwrap_or_else(|| vec!["*".into()]);
                for n in names {
                    out.insert((ns.clone().unwrap_or_else(|| "cluster".into()), res.clone(), verb.clone(), n));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_each_worker_only_what_it_calls() {
    let p = parse_all();
    let g = |v: &[(&str, &str, &str, &str)]| {
        v.iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        grants(&p, "join-token-issuer"),
        g(&[
            ("kube-system", "secrets", "create", "*"),
            ("kube-system", "secrets", "get", "*"),
            ("kube-public", "configmaps", "get", "cluster-info")
        ])
    );
    let marker = g(&[
        ("kube-system", "secrets", "delete", "*"),
        ("cluster", "nodes", "get", "*"),
        ("cluster", "nodes", "patch", "*"),
    ]);
    assert_eq!(grants(&p, "heartbeat-recorder"), marker);
    assert_eq!(grants(&p, "staleness-sweeper"), marker);
    for none in ["redis-bridge", "registration-handler", "allocator"] {
        assert!(grants(&p, none).is_empty(), "{none} calls no Kubernetes API");
        let sa = p
            .service_accounts
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(none))
            .unwrap();
        assert_eq!(sa.automount_service_account_token, Some(false), "{none} gets no token");
    }
}
