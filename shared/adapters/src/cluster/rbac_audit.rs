//! Lists a cluster's (Cluster)Roles and (Cluster)RoleBindings for
//! [`worldland_core::cluster::rbac_audit`], page by page, each request bounded by a timeout; and
//! turns the k8s-openapi objects (listed, or parsed from manifests) into its plain data.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::ListParams;
use kube::{Api, Client};

use worldland_core::cluster::rbac_audit::{self, Binding, Finding, RbacSnapshot, RoleDef, Rule, Subject};
use worldland_core::cluster::{ClusterError, ClusterResult};

/// Objects per list page.
const PAGE: u32 = 500;
/// Pages per kind at most: a bound on a server that keeps answering with a continue token.
const MAX_PAGES: usize = 1000;

/// Lists every role and binding, then audits them for `broker_group` (see
/// [`rbac_audit::audit`]). Each request is abandoned after `timeout`.
pub async fn audit_cluster(client: &Client, broker_group: &str, timeout: Duration) -> ClusterResult<Vec<Finding>> {
    let snapshot = snapshot(client, timeout).await?;
    Ok(rbac_audit::audit(&snapshot, broker_group))
}

/// Every ClusterRole, Role, ClusterRoleBinding and RoleBinding of the cluster, as plain data.
pub async fn snapshot(client: &Client, timeout: Duration) -> ClusterResult<RbacSnapshot> {
    let cluster_roles: Vec<ClusterRole> = list_all(Api::all(client.clone()), timeout).await?;
    let roles: Vec<Role> = list_all(Api::all(client.clone()), timeout).await?;
    let cluster_bindings: Vec<ClusterRoleBinding> = list_all(Api::all(client.clone()), timeout).await?;
    let bindings: Vec<RoleBinding> = list_all(Api::all(client.clone()), timeout).await?;
    Ok(snapshot_of(&cluster_roles, &roles, &cluster_bindings, &bindings))
}

async fn list_all<K>(api: Api<K>, timeout: Duration) -> ClusterResult<Vec<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut out = vec![];
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = tokio::time::timeout(timeout, api.list(&params))
            .await
            .map_err(|_| ClusterError::unavailable(format!("listing {} took over {timeout:?}", K::plural(&()))))?
            .map_err(classify)?;
        out.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(out);
        }
    }
    Err(ClusterError::unavailable(format!(
        "listing {} did not end within {MAX_PAGES} pages",
        K::plural(&())
    )))
}

/// Retryable or not, as the workers' cluster adapter sorts kube errors.
fn classify(e: kube::Error) -> ClusterError {
    match &e {
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => ClusterError::unavailable(e),
        kube::Error::Api(status) => ClusterError::refused(Some(status.code), e),
        _ => ClusterError::unavailable(e),
    }
}

fn rules(rules: Option<&Vec<PolicyRule>>) -> Vec<Rule> {
    rules
        .into_iter()
        .flatten()
        .map(|r| Rule {
            api_groups: r.api_groups.clone().unwrap_or_default(),
            resources: r.resources.clone().unwrap_or_default(),
            verbs: r.verbs.clone(),
            resource_names: r.resource_names.clone().unwrap_or_default(),
        })
        .collect()
}

fn subjects(subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>) -> Vec<Subject> {
    subjects
        .into_iter()
        .flatten()
        .map(|s| Subject {
            kind: s.kind.clone(),
            name: s.name.clone(),
            namespace: s.namespace.clone(),
        })
        .collect()
}

/// The plain data of these objects (from a cluster, or parsed from manifests).
pub fn snapshot_of(
    cluster_roles: &[ClusterRole],
    roles: &[Role],
    cluster_bindings: &[ClusterRoleBinding],
    bindings: &[RoleBinding],
) -> RbacSnapshot {
    let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap_or_default();
    let role_defs = cluster_roles
        .iter()
        .map(|r| RoleDef {
            namespace: None,
            name: name(&r.metadata),
            rules: rules(r.rules.as_ref()),
        })
        .chain(roles.iter().map(|r| RoleDef {
            namespace: r.metadata.namespace.clone(),
            name: name(&r.metadata),
            rules: rules(r.rules.as_ref()),
        }));
    let binding_defs = cluster_bindings
        .iter()
        .map(|b| Binding {
            namespace: None,
            name: name(&b.metadata),
            role_kind: b.role_ref.kind.clone(),
            role_name: b.role_ref.name.clone(),
            subjects: subjects(b.subjects.as_ref()),
        })
        .chain(bindings.iter().map(|b| Binding {
            namespace: b.metadata.namespace.clone(),
            name: name(&b.metadata),
            role_kind: b.role_ref.kind.clone(),
            role_name: b.role_ref.name.clone(),
            subjects: subjects(b.subjects.as_ref()),
        }));
    RbacSnapshot {
        roles: role_defs.collect(),
        bindings: binding_defs.collect(),
    }
}
