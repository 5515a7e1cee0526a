//! The broker's join tokens carry a group of their own, bound (infra/k8s/base/bootstrap.yaml) to
//! what `kubeadm join` and the kubelet's TLS bootstrap need, as kubeadm 1.28 binds its own token
//! group, and to nothing more; no shipped manifest makes the controller manager's CSR approver
//! auto-approve a node certificate (the broker's approver decides).

use std::collections::BTreeSet;

use worldland_adapters::cluster::rbac_audit::snapshot_of;
use worldland_core::cluster::rbac_audit::{audit, RbacSnapshot, CSR_API_GROUP, JOIN_GRANTS, NODECLIENT_ROLE, SELFNODECLIENT_ROLE};

use super::parse_all;

/// The group the broker's bootstrap tokens carry (`auth-extra-groups`).
const BROKER_GROUP: &str = worldland_core::cluster::bootstrap::TOKEN_EXTRA_GROUPS;

fn shipped() -> RbacSnapshot {
    let p = parse_all();
    snapshot_of(&p.cluster_roles, &p.roles, &p.cluster_role_bindings, &p.role_bindings)
}

#[test]
fn no_shipped_binding_or_role_auto_approves_node_csrs() {
    let s = shipped();
    for b in &s.bindings {
        assert!(
            b.role_name != NODECLIENT_ROLE && b.role_name != SELFNODECLIENT_ROLE,
            "{} binds {}",
            b.describe(),
            b.role_name
        );
    }
    for r in &s.roles {
        for rule in &r.rules {
            for sub in ["nodeclient", "selfnodeclient"] {
                assert!(
                    !rule.allows(CSR_API_GROUP, "certificatesigningrequests", Some(sub), "create"),
                    "{}: {rule:?} grants create on certificatesigningrequests/{sub}",
                    r.name
                );
            }
        }
    }
    let found = audit(&s, BROKER_GROUP);
    assert!(found.iter().all(|f| !f.is_auto_approval()), "{found:?}");
}

#[test]
fn the_broker_token_group_is_bound_to_what_a_join_needs_and_no_more() {
    // Bootstrap-token groups must lie under system:bootstrappers: (the API server refuses others).
    assert!(BROKER_GROUP.starts_with("system:bootstrappers:"));
    let s = shipped();
    assert_eq!(audit(&s, BROKER_GROUP), vec![], "every join grant bound, nothing auto-approved");
    let bound: BTreeSet<(Option<String>, String, String)> = s
        .bindings
        .iter()
        .filter(|b| b.subjects.iter().any(|x| x.name == BROKER_GROUP))
        .map(|b| {
            assert!(
                b.subjects.iter().all(|x| x.kind == "Group" && x.name == BROKER_GROUP),
                "{}: binds the group and someone else",
                b.describe()
            );
            (b.namespace.clone(), b.role_kind.clone(), b.role_name.clone())
        })
        .collect();
    let want: BTreeSet<(Option<String>, String, String)> = JOIN_GRANTS
        .iter()
        .map(|g| {
            let kind = if g.namespace.is_some() { "Role" } else { "ClusterRole" };
            (g.namespace.map(String::from), kind.to_string(), g.role.to_string())
        })
        .collect();
    assert_eq!(bound, want, "{BROKER_GROUP}: exactly the join grants");
    assert!(bound.contains(&(None, "ClusterRole".into(), "system:node-bootstrapper".into())));
}
