//! Every Kubernetes manifest under `infra/k8s` parses into the k8s-openapi types with no field
//! left over (a typo'd or unknown field fails), every worker has its Deployment with probes and
//! resource requests, RBAC grants each worker only what it calls (and no worker may read a
//! Secret), the ValidatingAdmissionPolicies narrow every write RBAC lets a worker make to the
//! objects it writes itself, and a bound policy keeps everyone else (a provider's kubelet above
//! all) off the `worldland.io/` keys of Nodes, by which jobs select their provider's Node; the
//! Deployments stay off providers' nodes (`pinning`), and the NVIDIA device plugin's DaemonSet
//! runs there only (`device_plugin`). The CEL is checked here for what it names, not run:
//! `real_cluster_rbac/` runs it, and asks RBAC, on the private API server `scripts/test` starts
//! (these tests need none, so they run everywhere).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicySpec,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, NodeConfigSource, NodeSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worldland_core::cluster::bootstrap::{secret_name, TOKEN_NAMESPACE, TOKEN_SECRET_PREFIX, TOKEN_SECRET_TYPE};
use worldland_core::cluster::{BootstrapToken, Taint};
use worldland_core::labels;

mod bootstrap;
mod device_plugin;
mod pinning;

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
pub(crate) struct Parsed {
    deployments: Vec<Deployment>,
    pub(crate) daemon_sets: Vec<DaemonSet>,
    pub(crate) service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub(crate) policies: Vec<ValidatingAdmissionPolicy>,
    policy_bindings: Vec<ValidatingAdmissionPolicyBinding>,
    config_maps: Vec<ConfigMap>,
}

pub(crate) fn parse_all() -> Parsed {
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
                ("v1", "ConfigMap") => parsed.config_maps.push(strict(&doc, &file)),
                ("v1", "Namespace") => drop(strict::<Namespace>(&doc, &file)),
                ("v1", "ServiceAccount") => parsed.service_accounts.push(strict(&doc, &file)),
                ("apps/v1", "Deployment") => parsed.deployments.push(strict(&doc, &file)),
                ("apps/v1", "DaemonSet") => parsed.daemon_sets.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "Role") => parsed.roles.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => parsed.role_bindings.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => parsed.cluster_roles.push(strict(&doc, &file)),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => parsed.cluster_role_bindings.push(strict(&doc, &file)),
                ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => parsed.policies.push(strict(&doc, &file)),
                ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => parsed.policy_bindings.push(strict(&doc, &file)),
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

/// A resource as `grants` and `policy_sees` name it: `resource` in the core API group,
/// `group:resource` in any other.
pub(crate) fn grouped(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{group}:{resource}")
    }
}

/// (namespace or "cluster", resource (see [`grouped`]), verb, resource name or "*"), flattened.
pub(crate) fn grants(p: &Parsed, subject: &str) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for (ns, r) in rules_of(p, subject) {
        assert_eq!(r.api_groups.as_ref().map(Vec::len), Some(1), "{subject}: one API group a rule");
        let group = r.api_groups.as_ref().and_then(|g| g.first()).cloned().unwrap_or_default();
        for res in r.resources.iter().flatten() {
            let res = grouped(&group, res);
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
            ("kube-system", "secrets", "delete", "*"),
            ("kube-public", "configmaps", "get", "cluster-info")
        ])
    );
    let marker = g(&[
        ("kube-system", "secrets", "delete", "*"),
        ("cluster", "nodes", "get", "*"),
        ("cluster", "nodes", "patch", "*"),
        ("kube-node-lease", "coordination.k8s.io:leases", "get", "*"),
    ]);
    assert_eq!(grants(&p, "heartbeat-recorder"), marker);
    // The sweeper's node-health pass lists the providers' Nodes too.
    let mut sweeper = marker.clone();
    sweeper.extend(g(&[("cluster", "nodes", "list", "*")]));
    assert_eq!(grants(&p, "staleness-sweeper"), sweeper);
    assert_eq!(
        grants(&p, "csr-approver"),
        g(&[
            ("cluster", "certificates.k8s.io:certificatesigningrequests", "get", "*"),
            ("cluster", "certificates.k8s.io:certificatesigningrequests", "list", "*"),
            ("cluster", "certificates.k8s.io:certificatesigningrequests", "watch", "*"),
            ("cluster", "certificates.k8s.io:certificatesigningrequests/approval", "patch", "*"),
            (
                "cluster",
                "certificates.k8s.io:signers",
                "approve",
                "kubernetes.io/kube-apiserver-client-kubelet"
            ),
            ("cluster", "certificates.k8s.io:signers", "approve", "kubernetes.io/kubelet-serving"),
            ("cluster", "nodes", "get", "*"),
            ("cluster", "nodes", "create", "*"),
            ("cluster", "nodes", "patch", "*"),
        ])
    );
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

#[test]
fn every_base_manifest_is_in_its_kustomization() {
    let base = root().join("base");
    let k: Kustomization = serde_saphyr::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap()).unwrap();
    let listed: BTreeSet<String> = k.resources.into_iter().collect();
    let present: BTreeSet<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "a manifest left out of the kustomization is never applied");
}

const ISSUER: &str = "join-token-issuer";
const RECORDER: &str = "heartbeat-recorder";
const SWEEPER: &str = "staleness-sweeper";
const APPROVER: &str = "csr-approver";
/// The policy that bounds the CSRs join tokens and kubelets may create.
const KUBELET_CSRS: &str = "worldland-kubelet-csrs";
/// The prefix of every Node label, annotation and taint key the project writes.
const OURS: &str = "worldland.io/";
/// The policy that keeps everyone but the recorder and the sweeper off our keys on Nodes.
const NODE_KEYS: &str = "worldland-node-keys";
/// The one group `worldland-node-keys` exempts, for an admin's emergency fix.
const BREAK_GLASS: &str = "system:masters";

#[test]
fn no_worker_can_read_a_secret() {
    let p = parse_all();
    for sa in &p.service_accounts {
        let name = sa.metadata.name.as_deref().unwrap();
        for (ns, res, verb, _) in grants(&p, name) {
            if res == "secrets" || res == "*" {
                assert!(
                    !["get", "list", "watch", "*"].contains(&verb.as_str()),
                    "{name} may {verb} Secrets in {ns}: kubeadm-certs, ServiceAccount tokens and every bootstrap token"
                );
            }
        }
    }
    let secret_grants = |sa: &str| {
        grants(&p, sa)
            .into_iter()
            .filter(|(_, res, _, _)| res == "secrets")
            .map(|(ns, _, verb, name)| format!("{verb} {ns}/{name}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        secret_grants(ISSUER),
        ["create kube-system/*", "delete kube-system/*"],
        "the issuer only creates and deletes"
    );
    for sa in [RECORDER, SWEEPER] {
        assert_eq!(secret_grants(sa), ["delete kube-system/*"], "{sa} only deletes");
    }
}

/// The username the API server gives a worker's ServiceAccount token.
fn username(p: &Parsed, sa: &str) -> String {
    let acct = p
        .service_accounts
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(sa))
        .unwrap_or_else(|| panic!("no ServiceAccount {sa}"));
    format!("system:serviceaccount:{}:{sa}", acct.metadata.namespace.as_deref().unwrap())
}

pub(crate) fn policy<'a>(p: &'a Parsed, name: &str) -> &'a ValidatingAdmissionPolicySpec {
    p.policies
        .iter()
        .find(|x| x.metadata.name.as_deref() == Some(name))
        .and_then(|x| x.spec.as_ref())
        .unwrap_or_else(|| panic!("no ValidatingAdmissionPolicy {name}"))
}

/// The users a policy applies to: its one matchCondition on `request.userInfo.username`, and
/// every quoted string in it.
fn policy_users(spec: &ValidatingAdmissionPolicySpec) -> BTreeSet<String> {
    let conditions = spec.match_conditions.as_deref().unwrap_or_default();
    assert_eq!(conditions.len(), 1, "one matchCondition, on the username");
    let expr = one_line(&conditions[0].expression);
    assert!(
        expr.starts_with("request.userInfo.username == '") || expr.starts_with("request.userInfo.username in ['"),
        "{expr}"
    );
    expr.split('\'').skip(1).step_by(2).map(str::to_string).collect()
}

/// (resource, operation) pairs a policy sees.
fn policy_sees(spec: &ValidatingAdmissionPolicySpec) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for r in spec.match_constraints.iter().flat_map(|m| m.resource_rules.iter().flatten()) {
        assert_eq!(r.api_groups.as_ref().map(Vec::len), Some(1), "one API group a rule");
        assert!(r.resource_names.is_none(), "every object of the resource");
        let group = r.api_groups.as_ref().and_then(|g| g.first()).cloned().unwrap_or_default();
        for res in r.resources.iter().flatten() {
            for op in r.operations.iter().flatten() {
                out.insert((grouped(&group, res), op.clone()));
            }
        }
    }
    out
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether one of the policy's validations contains `text` (whitespace folded).
fn validates(spec: &ValidatingAdmissionPolicySpec, text: &str) -> bool {
    spec.validations.iter().flatten().any(|v| one_line(&v.expression).contains(text))
}

fn variable(spec: &ValidatingAdmissionPolicySpec, name: &str) -> String {
    spec.variables
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .map(|v| one_line(&v.expression))
        .unwrap_or_else(|| panic!("no variable {name}"))
}

/// The policy is bound exactly once, to deny (not only warn or audit), everywhere, and refuses
/// when an expression errors.
fn assert_enforced(p: &Parsed, name: &str) {
    let spec = policy(p, name);
    assert_eq!(
        spec.failure_policy.as_deref(),
        Some("Fail"),
        "{name}: an expression that errors refuses"
    );
    if let Some(kind) = &spec.param_kind {
        // The only parameter is the workers' own ConfigMap, and a missing one refuses.
        assert_eq!(
            (kind.api_version.as_deref(), kind.kind.as_deref()),
            (Some("v1"), Some("ConfigMap")),
            "{name}"
        );
    }
    let bound: Vec<_> = p
        .policy_bindings
        .iter()
        .filter_map(|b| b.spec.as_ref())
        .filter(|b| b.policy_name.as_deref() == Some(name))
        .collect();
    assert_eq!(bound.len(), 1, "{name}: one binding");
    assert_eq!(
        bound[0].validation_actions.as_deref(),
        Some(&["Deny".to_string()][..]),
        "{name}: denies, not only warns"
    );
    assert!(bound[0].match_resources.is_none(), "{name}: the binding narrows nothing");
    match (&spec.param_kind, &bound[0].param_ref) {
        (None, None) => {}
        (Some(_), Some(r)) => {
            assert_eq!(
                (r.name.as_deref(), r.namespace.as_deref()),
                (Some("worldland-config"), Some("worldland")),
                "{name}"
            );
            assert!(r.selector.is_none(), "{name}: one parameter object");
            assert_eq!(
                r.parameter_not_found_action.as_deref(),
                Some("Deny"),
                "{name}: a missing parameter refuses"
            );
            // infra/k8s/base's worldland-config (an overlay's patch of it may leave the key out).
            let ttl = p
                .config_maps
                .iter()
                .filter(|c| c.metadata.name.as_deref() == Some("worldland-config"))
                .filter_map(|c| c.data.as_ref()?.get("WORLDLAND_TOKEN_TTL_S"))
                .collect::<Vec<_>>();
            assert!(
                !ttl.is_empty() && ttl.iter().all(|v| v.parse::<u32>().is_ok()),
                "{name}: worldland-config gives WORLDLAND_TOKEN_TTL_S: {ttl:?}"
            );
        }
        _ => panic!("{name}: a parameter kind and a parameter reference go together"),
    }
    for v in spec.validations.iter().flatten() {
        assert_eq!(v.reason.as_deref(), Some("Forbidden"), "{name}: {}", v.expression);
    }
}

/// The policies that narrow the workers, each matched on their usernames (not `NODE_KEYS`,
/// which matches everyone but them).
fn worker_policies(p: &Parsed) -> impl Iterator<Item = &ValidatingAdmissionPolicySpec> {
    p.policies
        .iter()
        .filter(|x| ![Some(NODE_KEYS), Some(KUBELET_CSRS)].contains(&x.metadata.name.as_deref()))
        .filter_map(|x| x.spec.as_ref())
}

#[test]
fn every_write_rbac_grants_is_narrowed_by_a_bound_policy() {
    let p = parse_all();
    let users = |sas: &[&str]| sas.iter().map(|sa| username(&p, sa)).collect::<BTreeSet<_>>();
    let expected = [
        ("worldland-join-token-issuer", users(&[ISSUER]), "secrets"),
        ("worldland-token-deleter", users(&[RECORDER, SWEEPER]), "secrets"),
        ("worldland-node-marker", users(&[RECORDER, SWEEPER]), "nodes"),
        ("worldland-csr-approver", users(&[APPROVER]), "nodes"),
    ];
    let names: BTreeSet<&str> = p.policies.iter().map(|x| x.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        expected.iter().map(|e| e.0).chain([NODE_KEYS, KUBELET_CSRS]).collect(),
        "the policies"
    );
    for (name, who, resource) in &expected {
        let spec = policy(&p, name);
        assert_eq!(&policy_users(spec), who, "{name}: whom it applies to");
        // Every write, not only the one allowed, so that a wider RBAC grant later is still refused.
        let sees = policy_sees(spec);
        for op in ["CREATE", "UPDATE", "DELETE"] {
            assert!(sees.contains(&(resource.to_string(), op.to_string())), "{name}: {op} {resource}");
        }
        assert_enforced(&p, name);
    }
    for b in &p.policy_bindings {
        let to = b.spec.as_ref().and_then(|s| s.policy_name.as_deref()).unwrap();
        assert!(names.contains(to), "binding to a missing policy {to}");
    }
    // Every write verb RBAC grants any worker reaches a policy that names that worker.
    let mut narrowed = 0;
    for sa in p.service_accounts.iter().map(|s| s.metadata.name.as_deref().unwrap()) {
        let user = username(&p, sa);
        for (ns, res, verb, _) in grants(&p, sa) {
            let op = match verb.as_str() {
                "get" | "list" | "watch" => continue,
                // An authorization check on a signer (limited to the kubelet signers by
                // resourceNames), not a write of an object.
                "approve" => continue,
                // A CSR decision: the API server takes it only on a CSR whose signer the
                // writer may `approve`, which RBAC limits to the kubelet signers.
                _ if res == "certificates.k8s.io:certificatesigningrequests/approval" => continue,
                "create" => "CREATE",
                "update" | "patch" => "UPDATE",
                "delete" => "DELETE",
                other => panic!("{sa}: verb {other} on {res}"),
            };
            let by =
                worker_policies(&p).find(|s| policy_users(s).contains(&user) && policy_sees(s).contains(&(res.clone(), op.to_string())));
            assert!(by.is_some(), "{sa} may {verb} {res} in {ns} and no policy narrows it");
            narrowed += 1;
        }
    }
    assert_eq!(
        narrowed, 8,
        "the issuer's create and delete; the recorder's and the sweeper's delete and patch; the approver's Node create and patch"
    );
}

#[test]
fn the_issuer_may_create_only_expiring_bootstrap_tokens_and_delete_only_bootstrap_tokens() {
    let p = parse_all();
    let spec = policy(&p, "worldland-join-token-issuer");
    for must in [
        "request.operation in ['CREATE', 'DELETE']".to_string(),
        format!("request.operation != 'CREATE' || request.namespace == '{TOKEN_NAMESPACE}'"),
        format!("object.type == '{TOKEN_SECRET_TYPE}'"),
        format!("object.metadata.name.matches('^{TOKEN_SECRET_PREFIX}[a-z0-9]{{6}}$')"),
        "'expiration' in object.data".to_string(),
        format!("request.operation != 'DELETE' || (request.namespace == '{TOKEN_NAMESPACE}'"),
        format!("oldObject.metadata.name.matches('^{TOKEN_SECRET_PREFIX}[a-z0-9]{{6}}$')"),
        format!("oldObject.type == '{TOKEN_SECRET_TYPE}'"),
    ] {
        assert!(validates(spec, &must), "the issuer's policy checks {must}");
    }
    // On DELETE `object` is null: every rule on it must hold for anything but a CREATE first,
    // or it would error and refuse every delete.
    for v in spec.validations.iter().flatten() {
        if v.expression.replace("oldObject", "").contains("object.") {
            assert!(
                one_line(&v.expression).starts_with("request.operation != 'CREATE' ||"),
                "{}",
                v.expression
            );
        }
    }
    // What the issuer writes passes: the name's id is 6 of [a-z0-9], and it carries an expiration.
    let token = BootstrapToken::generate(chrono::Utc::now() + chrono::Duration::minutes(10), "d".into());
    let id = secret_name(&token.id).strip_prefix(TOKEN_SECRET_PREFIX).unwrap().to_string();
    assert!(
        id.len() == 6 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{id}"
    );
    assert!(token.secret_data().contains_key("expiration"));
}

#[test]
fn the_recorder_and_sweeper_may_delete_only_bootstrap_tokens() {
    let p = parse_all();
    let spec = policy(&p, "worldland-token-deleter");
    for must in [
        "request.operation == 'DELETE'".to_string(),
        format!("request.namespace == '{TOKEN_NAMESPACE}'"),
        format!("oldObject.metadata.name.matches('^{TOKEN_SECRET_PREFIX}[a-z0-9]{{6}}$')"),
        format!("oldObject.type == '{TOKEN_SECRET_TYPE}'"),
    ] {
        assert!(validates(spec, &must), "the deleter's policy checks {must}");
    }
    // On DELETE `object` is null: a rule on it would error, and refuse every delete.
    for v in spec.validations.iter().flatten() {
        let e = v.expression.replace("oldObject", "");
        assert!(!e.contains("object."), "{}", v.expression);
    }
}

#[test]
fn the_recorder_and_sweeper_may_change_only_worldland_keys_on_nodes() {
    let p = parse_all();
    let spec = policy(&p, "worldland-node-marker");
    assert!(validates(spec, "request.operation == 'UPDATE'"), "patch only");
    // Every key the workers write lies under the prefix the policy frees, and their taint is NoSchedule.
    let written = labels::provider_node_labels("p", "RTX 4090", 1).into_keys().chain(
        [
            labels::STATUS,
            labels::ACTIVE_JOBS,
            labels::LAST_HEARTBEAT_ANNOTATION,
            labels::OFFLINE_TAINT,
        ]
        .map(String::from),
    );
    for key in written {
        assert!(key.starts_with(OURS), "{key}");
    }
    assert_eq!(Taint::offline().effect, "NoSchedule");
    // Labels and annotations: a key outside ours keeps its value, and none appears or goes.
    for kind in ["labels", "annotations"] {
        assert!(variable(spec, &format!("{kind}New")).contains(&format!("object.metadata.{kind}")));
        assert!(variable(spec, &format!("{kind}Old")).contains(&format!("oldObject.metadata.{kind}")));
        for must in [
            format!("variables.{kind}New.all(k, k.startsWith('{OURS}')"),
            format!("(k in variables.{kind}Old && variables.{kind}Old[k] == variables.{kind}New[k])"),
            format!("variables.{kind}Old.all(k, k.startsWith('{OURS}') || k in variables.{kind}New)"),
        ] {
            assert!(validates(spec, &must), "{kind}: {must}");
        }
    }
    // Taints: those outside ours are the same list, and ours may only be added as NoSchedule.
    assert!(variable(spec, "taintsNew").contains("object.spec.taints"));
    assert!(variable(spec, "taintsOld").contains("oldObject.spec.taints"));
    assert!(validates(
        spec,
        &format!("variables.taintsNew.filter(t, !t[0].startsWith('{OURS}')) == variables.taintsOld.filter(t, !t[0].startsWith('{OURS}'))")
    ));
    assert!(validates(spec, &format!("t[2] == '{}'", Taint::offline().effect)));
    // Everything else a client can write stays. A literal of every field (no `..Default`), so a
    // field added to NodeSpec or ObjectMeta fails to compile here until the policy says what of it.
    let every_spec_field = NodeSpec {
        config_source: Some(NodeConfigSource::default()),
        external_id: Some(String::new()),
        pod_cidr: Some(String::new()),
        pod_cidrs: Some(vec![]),
        provider_id: Some(String::new()),
        taints: Some(vec![]),
        unschedulable: Some(false),
    };
    let epoch = || Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let every_meta_field = ObjectMeta {
        annotations: Some(Default::default()),
        creation_timestamp: epoch(),
        deletion_grace_period_seconds: Some(0),
        deletion_timestamp: epoch(),
        finalizers: Some(vec![]),
        generate_name: Some(String::new()),
        generation: Some(0),
        labels: Some(Default::default()),
        managed_fields: Some(vec![]),
        name: Some(String::new()),
        namespace: Some(String::new()),
        owner_references: Some(vec![]),
        resource_version: Some(String::new()),
        self_link: Some(String::new()),
        uid: Some(String::new()),
    };
    let keys = |v: Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let not_compared = [
        // checked key by key above
        "labels",
        "annotations",
        "taints",
        // written by the server on every write
        "resourceVersion",
        "managedFields",
        // immutable, or kept by the server on update whatever the client sends
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ];
    let fields = keys(serde_json::to_value(&every_spec_field).unwrap())
        .into_iter()
        .map(|k| ("spec", k))
        .chain(
            keys(serde_json::to_value(&every_meta_field).unwrap())
                .into_iter()
                .map(|k| ("metadata", k)),
        );
    let mut compared = 0;
    for (part, field) in fields.filter(|(_, f)| !not_compared.contains(&f.as_str())) {
        let same = format!(
            "(has(object.{part}.{field}) ? [object.{part}.{field}] : []) == (has(oldObject.{part}.{field}) ? [oldObject.{part}.{field}] : [])"
        );
        assert!(validates(spec, &same), "{part}.{field} must stay as it was: {same}");
        compared += 1;
    }
    assert_eq!(compared, 9, "finalizers, ownerReferences, generateName and six spec fields");
}

/// A provider is root on its machine and holds its kubelet's credentials (`system:node:<name>`,
/// group `system:nodes`); NodeRestriction guards only `kubernetes.io/` and `k8s.io/` labels. A
/// kubelet that could put `worldland.io/provider-id=<victim>` on its Node (`--node-labels` at
/// registration, or a patch of `nodes` or `nodes/status` later) would draw the victim's jobs.
#[test]
fn nobody_but_the_recorder_and_sweeper_may_touch_worldland_keys_on_nodes() {
    let p = parse_all();
    let spec = policy(&p, NODE_KEYS);
    assert_enforced(&p, NODE_KEYS);
    // Registration (CREATE) and every later write, through any subresource (the nodes/status
    // strategy keeps label and annotation changes); not DELETE, so Nodes can still be removed.
    let sees: BTreeSet<(String, String)> = policy_sees(spec);
    let want: BTreeSet<(String, String)> = ["nodes", "nodes/*"]
        .into_iter()
        .flat_map(|r| ["CREATE", "UPDATE"].map(|op| (r.to_string(), op.to_string())))
        .collect();
    assert_eq!(sees, want, "{NODE_KEYS}: CREATE and UPDATE of nodes and of nodes/status");
    // Everyone is matched but the workers worldland-node-marker narrows instead, and the
    // break-glass group: kubelets (system:nodes), the issuer, controllers, admins outside it.
    let workers = policy_users(policy(&p, "worldland-node-marker"));
    assert_eq!(
        workers,
        [RECORDER, SWEEPER].map(|sa| username(&p, sa)).into(),
        "the workers exempted"
    );
    // The CSR approver, whose Node writes worldland-csr-approver narrows to the provider taint.
    let approver = policy_users(policy(&p, "worldland-csr-approver"));
    assert_eq!(approver, [username(&p, APPROVER)].into(), "the approver exempted");
    let quoted = [RECORDER, SWEEPER, APPROVER].map(|sa| format!("'{}'", username(&p, sa))).join(", ");
    let conditions: Vec<String> = spec.match_conditions.iter().flatten().map(|m| one_line(&m.expression)).collect();
    assert_eq!(
        conditions,
        [
            format!("!(request.userInfo.username in [{quoted}])"),
            format!("!(has(request.userInfo.groups) && '{BREAK_GLASS}' in request.userInfo.groups)"),
        ],
        "{NODE_KEYS}: exempts exactly the node-marker workers and {BREAK_GLASS}, nobody else"
    );
    for c in &conditions {
        for exempt in c.split('\'').skip(1).step_by(2) {
            assert!(
                exempt != "system:nodes" && !exempt.starts_with("system:node:"),
                "kubelets exempted: {c}"
            );
        }
    }
    // Of our ServiceAccounts, only those exempted here get any grant on Nodes.
    for sa in p.service_accounts.iter().map(|s| s.metadata.name.as_deref().unwrap()) {
        if grants(&p, sa).iter().any(|(_, res, _, _)| res.starts_with("nodes")) {
            let user = username(&p, sa);
            assert!(
                workers.contains(&user) || approver.contains(&user),
                "{sa} may write Nodes and is not narrowed"
            );
        }
    }
    // Labels and annotations: on CREATE oldObject is null, so the old keys are read only on
    // UPDATE (an unguarded read would error and, failing closed, refuse every registration) and
    // a CREATE compares against none: any key of ours in it is an addition.
    let mut names = vec![];
    for kind in ["labels", "annotations"] {
        assert_eq!(
            variable(spec, &format!("{kind}New")),
            format!("has(object.metadata.{kind}) ? object.metadata.{kind} : {{}}")
        );
        assert_eq!(
            variable(spec, &format!("{kind}Old")),
            format!("request.operation == 'UPDATE' && has(oldObject.metadata.{kind}) ? oldObject.metadata.{kind} : {{}}")
        );
        // None of ours appears or changes value, and none goes.
        let rule = format!(
            "variables.{kind}New.all(k, !k.startsWith('{OURS}') || (k in variables.{kind}Old && variables.{kind}Old[k] == variables.{kind}New[k])) && variables.{kind}Old.all(k, !k.startsWith('{OURS}') || k in variables.{kind}New)"
        );
        assert!(
            spec.validations.iter().flatten().any(|v| one_line(&v.expression) == rule),
            "{kind}: {rule}"
        );
        names.extend([format!("{kind}New"), format!("{kind}Old")]);
    }
    // Taints: ours are the same list before and after (none added, changed or removed).
    let tuple = "map(t, [t.key, has(t.value) ? t.value : '', t.effect])";
    assert_eq!(
        variable(spec, "taintsNew"),
        format!("(has(object.spec.taints) ? object.spec.taints : []) .{tuple}")
    );
    assert_eq!(
        variable(spec, "taintsOld"),
        format!("(request.operation == 'UPDATE' && has(oldObject.spec.taints) ? oldObject.spec.taints : []) .{tuple}")
    );
    let rule =
        format!("variables.taintsNew.filter(t, t[0].startsWith('{OURS}')) == variables.taintsOld.filter(t, t[0].startsWith('{OURS}'))");
    assert!(
        spec.validations.iter().flatten().any(|v| one_line(&v.expression) == rule),
        "taints: {rule}"
    );
    names.extend(["taintsNew".to_string(), "taintsOld".to_string()]);
    let declared: Vec<String> = spec.variables.iter().flatten().map(|v| v.name.clone()).collect();
    assert_eq!(declared, names, "{NODE_KEYS}: its variables");
    // The three rules and nothing else; none spares CREATE (a kubelet's --node-labels) or UPDATE.
    assert_eq!(
        spec.validations.iter().flatten().count(),
        3,
        "{NODE_KEYS}: labels, annotations, taints"
    );
    assert!(
        !validates(spec, "request.operation"),
        "{NODE_KEYS}: every rule holds on CREATE and UPDATE alike"
    );
    for v in spec.validations.iter().flatten() {
        assert!(v.message.as_deref().is_some_and(|m| m.contains(OURS)), "{}", v.expression);
    }
}

/// Not a CEL parser: brackets that close in order and strings that end, in every expression.
#[test]
fn policy_expressions_are_balanced() {
    let p = parse_all();
    for x in &p.policies {
        let spec = x.spec.as_ref().unwrap();
        let exprs = spec
            .match_conditions
            .iter()
            .flatten()
            .map(|m| &m.expression)
            .chain(spec.variables.iter().flatten().map(|v| &v.expression))
            .chain(spec.validations.iter().flatten().map(|v| &v.expression));
        for e in exprs {
            let mut open = vec![];
            let mut quoted = false;
            for c in e.chars() {
                match c {
                    '\'' => quoted = !quoted,
                    _ if quoted => {}
                    '(' | '[' | '{' => open.push(c),
                    ')' | ']' | '}' => {
                        let want = match c {
                            ')' => '(',
                            ']' => '[',
                            _ => '{',
                        };
                        assert_eq!(open.pop(), Some(want), "{e}");
                    }
                    _ => {}
                }
            }
            assert!(open.is_empty() && !quoted, "{e}");
        }
    }
}

/// The SAM template's placement index projects exactly what placement reads (its sort key aside):
/// a missing attribute would make every provider look unfit, an extra one would let heartbeats
/// write to the index.
#[test]
fn the_sam_placement_index_projects_what_placement_reads() {
    let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml")).unwrap();
    let at = template
        .find("IndexName: model-price-index")
        .expect("the placement index in the template");
    let projected: BTreeSet<&str> = template[at..]
        .lines()
        .skip_while(|l| !l.trim().starts_with("NonKeyAttributes:"))
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "))
        .collect();
    let wanted: BTreeSet<&str> = worldland_core::placement::PLACEMENT_ATTRS
        .iter()
        .copied()
        .filter(|a| *a != worldland_core::state::PLACEMENT_SORT_ATTR)
        .collect();
    assert_eq!(projected, wanted);
}

/// The SAM template as JSON, its CloudFormation short tags (`!GetAtt`, `!Sub`, `!Ref`) dropped:
/// what they tag stays as a plain string (`AllocatorQueue.Arn`, `${QueuePrefix}allocator`).
fn sam_resources() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml")).unwrap();
    let untagged = text.replace("!GetAtt ", "").replace("!Sub ", "").replace("!Ref ", "");
    let doc: Value = serde_saphyr::from_str(&untagged).unwrap();
    doc["Resources"].as_object().unwrap().clone()
}

/// Logical id of the SQS queue named `${QueuePrefix}<name>`.
fn sam_queue(resources: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    let want = format!("${{QueuePrefix}}{name}");
    resources
        .iter()
        .find(|(_, r)| r["Type"] == "AWS::SQS::Queue" && r["Properties"]["QueueName"] == want.as_str())
        .map(|(id, _)| id.clone())
}

/// The queues (`<Id>.Arn`) a function may send to.
fn sam_sends(function: &Value) -> BTreeSet<String> {
    let statements = function["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["Statement"].as_array().cloned().unwrap_or_default());
    statements
        .filter(|s| s["Action"].as_array().is_some_and(|a| a.iter().any(|x| x == "sqs:SendMessage")))
        .flat_map(|s| s["Resource"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

/// What each worker publishes, by message type: its function must be allowed to send to the
/// queue the routing table binds that message to.
fn publishes() -> Vec<(&'static str, Vec<&'static str>)> {
    use worldland_core::bus::Message;
    use worldland_core::messages::jobs::{JobAllocated, JobRejected, JobReleased};
    use worldland_core::messages::ProviderValidated;
    vec![
        ("registration-handler", vec![ProviderValidated::ROUTING_KEY]),
        (
            "allocator",
            vec![JobAllocated::ROUTING_KEY, JobRejected::ROUTING_KEY, JobReleased::ROUTING_KEY],
        ),
        ("staleness-sweeper", vec![JobReleased::ROUTING_KEY]),
    ]
}

/// Every queue of the routing table (`routes::ALL`) is in the SAM template with a dead-letter
/// queue; each worker's queue feeds exactly its own Lambda (built from its `<worker>-lambda`
/// binary), which may park refused records on that dead-letter queue; each publisher may send
/// to the queue its messages are routed to; and each worker has its Deployment in `infra/k8s`.
/// A worker, queue or binding added to the table but not to infra fails here.
#[test]
fn infra_has_every_queue_and_subscription_of_the_routing_table() {
    use worldland_core::bus::routes;
    let resources = sam_resources();
    let functions: Vec<(&String, &Value)> = resources.iter().filter(|(_, r)| r["Type"] == "AWS::Serverless::Function").collect();
    let deployed: BTreeSet<String> = parse_all().deployments.iter().map(|d| d.metadata.name.clone().unwrap()).collect();
    for (name, _) in routes::ALL {
        let queue = sam_queue(&resources, name).unwrap_or_else(|| panic!("no SQS queue for {name}"));
        let dlq = resources[&queue]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]
            .as_str()
            .unwrap_or_else(|| panic!("{queue}: no dead-letter queue"))
            .to_string();
        assert!(
            resources.contains_key(dlq.trim_end_matches(".Arn")),
            "{queue}: {dlq} is not in the template"
        );
        if name == routes::JOB_EVENTS.0 {
            continue; // read by customers and billing, not by a worker
        }
        let arn = format!("{queue}.Arn");
        let feeds: Vec<&String> = functions
            .iter()
            .filter(|(_, f)| {
                f["Properties"]["Events"]
                    .as_object()
                    .is_some_and(|e| e.values().any(|e| e["Type"] == "SQS" && e["Properties"]["Queue"] == arn.as_str()))
            })
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(feeds.len(), 1, "{name}: its queue must feed one function, feeds {feeds:?}");
        let function = &resources[feeds[0]];
        let code = function["Properties"]["CodeUri"].as_str().unwrap_or_default();
        assert!(code.ends_with(&format!("/{name}-lambda/")), "{name}: its function runs {code}");
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../functions/{name}/Cargo.toml"))).unwrap();
        assert!(
            manifest.contains(&format!("name = \"{name}-lambda\"")),
            "{name}: no {name}-lambda binary"
        );
        assert!(sam_sends(function).contains(&dlq), "{name}: its function cannot park on {dlq}");
        assert!(deployed.contains(name), "{name}: no Deployment in infra/k8s");
    }
    for (worker, keys) in publishes() {
        let (id, function) = functions
            .iter()
            .find(|(_, f)| {
                f["Properties"]["CodeUri"]
                    .as_str()
                    .is_some_and(|c| c.ends_with(&format!("/{worker}-lambda/")))
            })
            .unwrap_or_else(|| panic!("no function for {worker}"));
        for key in keys {
            for (queue, bindings) in routes::ALL {
                if bindings.iter().any(|b| worldland_core::bus::topic_matches(b, key)) {
                    let arn = format!("{}.Arn", sam_queue(&resources, queue).unwrap());
                    assert!(sam_sends(function).contains(&arn), "{id}: publishes {key} but cannot send to {arn}");
                }
            }
        }
    }
}
