//! Whether a cluster's RBAC still auto-approves bootstrap CSRs, and whether the broker's token
//! group may do what `kubeadm join` needs: a pure decision over plain data (the adapter lists the
//! (Cluster)Roles and (Cluster)RoleBindings; `worldland infra check` prints the findings).
//!
//! The controller manager's CSR approver approves a node-client CSR when its requester may
//! `create` `certificatesigningrequests/nodeclient` (group `certificates.k8s.io`): kubeadm grants
//! that to its token group (`kubeadm:node-autoapprove-bootstrap`), so whoever holds a join token
//! gets a node certificate without the broker's approver looking at it. The broker's own tokens
//! carry a group of their own, which must be bound to what a join needs — and nothing more.

use std::fmt;

/// The ClusterRole whose binding makes the CSR approver approve bootstrap (node-client) CSRs.
pub const NODECLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
/// The ClusterRole whose binding makes the CSR approver approve a node's renewal of its own
/// client certificate.
pub const SELFNODECLIENT_ROLE: &str = "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";
/// The group every bootstrap token authenticates in, whatever its extra groups.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The API group of CertificateSigningRequests.
pub const CSR_API_GROUP: &str = "certificates.k8s.io";
/// The namespace of kubeadm's join-time Roles.
pub const KUBE_SYSTEM: &str = "kube-system";

/// A role a joining node's bootstrap token must be bound to: `namespace` is `None` for a
/// ClusterRole (bound by a ClusterRoleBinding), the Role's namespace otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinGrant {
    /// Where the binding lives: `None` cluster-wide.
    pub namespace: Option<&'static str>,
    /// The role's name.
    pub role: &'static str,
    /// What it lets the token do.
    pub purpose: &'static str,
}

/// What `kubeadm join` (1.28) and the kubelet's TLS bootstrap read and write as the token, as
/// kubeadm binds them for its own token group.
pub const JOIN_GRANTS: [JoinGrant; 4] = [
    JoinGrant {
        namespace: None,
        role: "system:node-bootstrapper",
        purpose: "the kubelet posts and watches its CSR",
    },
    JoinGrant {
        namespace: None,
        role: "kubeadm:get-nodes",
        purpose: "kubeadm join checks no Node already has the name",
    },
    JoinGrant {
        namespace: Some(KUBE_SYSTEM),
        role: "kubeadm:kubelet-config",
        purpose: "kubeadm join reads the kubelet-config ConfigMap",
    },
    JoinGrant {
        namespace: Some(KUBE_SYSTEM),
        role: "kubeadm:nodes-kubeadm-config",
        purpose: "kubeadm join reads the kubeadm-config ConfigMap",
    },
];

/// One RBAC rule (resource rules only; non-resource URLs grant nothing here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is core, `"*"` all).
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `"*"` or `"*/subresource"`.
    pub resources: Vec<String>,
    /// Verbs, `"*"` all.
    pub verbs: Vec<String>,
    /// When not empty, only requests naming one of these.
    pub resource_names: Vec<String>,
}

impl Rule {
    /// Whether the rule allows `verb` on `group`'s `resource` (with its subresource, if any) in a
    /// request that names no object, as RBAC's matcher decides it.
    pub fn allows(&self, group: &str, resource: &str, subresource: Option<&str>, verb: &str) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        let combined = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        };
        let resource_matches = self
            .resources
            .iter()
            .any(|r| r == "*" || *r == combined || subresource.is_some_and(|sub| r.strip_prefix("*/") == Some(sub)));
        any(&self.verbs, verb) && any(&self.api_groups, group) && resource_matches && self.resource_names.is_empty()
    }
}

/// A ClusterRole (`namespace` `None`) or a Role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDef {
    /// `None` for a ClusterRole.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its rules (an aggregated ClusterRole's as the API server filled them in).
    pub rules: Vec<Rule>,
}

/// Who a binding binds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// A ServiceAccount's namespace.
    pub namespace: Option<String>,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A ClusterRoleBinding (`namespace` `None`) or a RoleBinding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// `None` for a ClusterRoleBinding.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// The role's name.
    pub role_name: String,
    /// Whom it binds.
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// `clusterrolebinding NAME` or `rolebinding NS/NAME`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("rolebinding {ns}/{}", self.name),
            None => format!("clusterrolebinding {}", self.name),
        }
    }

    /// The command that removes it.
    pub fn delete_command(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("kubectl -n {ns} delete rolebinding {}", self.name),
            None => format!("kubectl delete clusterrolebinding {}", self.name),
        }
    }

    fn binds_group(&self, groups: &[&str]) -> bool {
        self.subjects.iter().any(|s| s.kind == "Group" && groups.contains(&s.name.as_str()))
    }
}

/// Every role and binding of a cluster (or of a set of manifests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RbacSnapshot {
    /// ClusterRoles and Roles.
    pub roles: Vec<RoleDef>,
    /// ClusterRoleBindings and RoleBindings.
    pub bindings: Vec<Binding>,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `binding` makes the CSR approver approve bootstrap CSRs of its subjects.
    AutoApproval {
        /// The binding (subjects included).
        binding: Binding,
    },
    /// `binding` makes the controller manager approve kubelets' renewals of their own client
    /// certificates (kubeadm's `kubeadm:node-autoapprove-certificate-rotation`), ahead of the
    /// broker, which renews a provider's only while it is in the cluster.
    RenewalAutoApproval {
        /// The binding (subjects included).
        binding: Binding,
    },
    /// No binding gives the broker's token group `grant`: joins fail.
    JoinGrantMissing {
        /// The group the broker's tokens carry.
        group: String,
        /// What is missing.
        grant: JoinGrant,
    },
}

impl Finding {
    /// Whether this finding lets a token holder get a node certificate unseen.
    pub fn is_auto_approval(&self) -> bool {
        matches!(self, Finding::AutoApproval { .. } | Finding::RenewalAutoApproval { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::AutoApproval { binding } => {
                let subjects = subjects_of(binding);
                write!(
                    f,
                    "{} ({} {}) auto-approves bootstrap CSRs for {subjects}: whoever holds their token gets a \
                     node certificate without the broker's approval. Fix: {}",
                    binding.describe(),
                    binding.role_kind,
                    binding.role_name,
                    binding.delete_command()
                )
            }
            Finding::RenewalAutoApproval { binding } => write!(
                f,
                "{} ({} {}) auto-approves kubelets' renewals of their own certificates for {}: a provider's \
                 kubelet keeps renewing after the broker has expired or refused the provider. Fix: {}",
                binding.describe(),
                binding.role_kind,
                binding.role_name,
                subjects_of(binding),
                binding.delete_command()
            ),
            Finding::JoinGrantMissing { group, grant } => {
                let (kind, place) = match grant.namespace {
                    Some(ns) => ("Role", format!(" in {ns}")),
                    None => ("ClusterRole", String::new()),
                };
                write!(
                    f,
                    "group {group} is bound to no {kind} {}{place} ({}): joins with the broker's tokens fail. \
                     Fix: kubectl apply -k infra/k8s/overlays/example (infra/k8s/base/bootstrap.yaml)",
                    grant.role, grant.purpose
                )
            }
        }
    }
}

fn subjects_of(binding: &Binding) -> String {
    if binding.subjects.is_empty() {
        "no subjects".to_string()
    } else {
        binding.subjects.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// The role `b` refers to, if the snapshot has it (a RoleBinding may refer to a ClusterRole).
fn role_of<'a>(s: &'a RbacSnapshot, b: &Binding) -> Option<&'a RoleDef> {
    let namespace = if b.role_kind == "Role" { b.namespace.as_deref() } else { None };
    s.roles
        .iter()
        .find(|r| r.name == b.role_name && r.namespace.as_deref() == namespace)
}

/// Whether `b` grants create on `certificatesigningrequests/nodeclient` to anyone: it refers to
/// [`NODECLIENT_ROLE`] (reconciled by the API server, so never trusted to be absent), or to a
/// role with such a rule and binds at least one subject.
fn auto_approves(s: &RbacSnapshot, b: &Binding) -> bool {
    grants_auto_approval(s, b, NODECLIENT_ROLE, "nodeclient")
}

/// The same for `certificatesigningrequests/selfnodeclient` (renewals) and [`SELFNODECLIENT_ROLE`].
fn auto_approves_renewals(s: &RbacSnapshot, b: &Binding) -> bool {
    grants_auto_approval(s, b, SELFNODECLIENT_ROLE, "selfnodeclient")
}

fn grants_auto_approval(s: &RbacSnapshot, b: &Binding, cluster_role: &str, subresource: &str) -> bool {
    if b.role_kind == "ClusterRole" && b.role_name == cluster_role {
        return true;
    }
    let grants = role_of(s, b).is_some_and(|r| {
        r.rules
            .iter()
            .any(|rule| rule.allows(CSR_API_GROUP, "certificatesigningrequests", Some(subresource), "create"))
    });
    grants && !b.subjects.is_empty()
}

/// Every binding that auto-approves bootstrap CSRs, then every one that auto-approves kubelets'
/// renewals, then every [`JOIN_GRANTS`] entry no binding
/// gives `broker_group` (nor [`BOOTSTRAPPERS_GROUP`] or `system:authenticated`, which the
/// broker's tokens are also in). Empty when the cluster is as the broker needs it.
pub fn audit(snapshot: &RbacSnapshot, broker_group: &str) -> Vec<Finding> {
    let mut findings: Vec<Finding> = snapshot
        .bindings
        .iter()
        .filter(|b| auto_approves(snapshot, b))
        .map(|b| Finding::AutoApproval { binding: b.clone() })
        .collect();
    findings.extend(
        snapshot
            .bindings
            .iter()
            .filter(|b| auto_approves_renewals(snapshot, b))
            .map(|b| Finding::RenewalAutoApproval { binding: b.clone() }),
    );
    let groups = [broker_group, BOOTSTRAPPERS_GROUP, "system:authenticated"];
    for grant in JOIN_GRANTS {
        let kind = if grant.namespace.is_some() { "Role" } else { "ClusterRole" };
        let bound = snapshot.bindings.iter().any(|b| {
            b.namespace.as_deref() == grant.namespace && b.role_kind == kind && b.role_name == grant.role && b.binds_group(&groups)
        });
        if !bound {
            findings.push(Finding::JoinGrantMissing {
                group: broker_group.to_string(),
                grant,
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests;
