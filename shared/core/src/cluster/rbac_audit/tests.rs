use super::*;

const GROUP: &str = "system:bootstrappers:worldland";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
    Rule {
        api_groups: s(groups),
        resources: s(resources),
        verbs: s(verbs),
        resource_names: s(names),
    }
}

fn group(name: &str) -> Subject {
    Subject {
        kind: "Group".into(),
        name: name.into(),
        namespace: None,
    }
}

fn crb(name: &str, role: &str, subjects: Vec<Subject>) -> Binding {
    Binding {
        namespace: None,
        name: name.into(),
        role_kind: "ClusterRole".into(),
        role_name: role.into(),
        subjects,
    }
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Vec<Subject>) -> Binding {
    Binding {
        namespace: Some(ns.into()),
        name: name.into(),
        role_kind: kind.into(),
        role_name: role.into(),
        subjects,
    }
}

/// What infra/k8s/base/bootstrap.yaml binds: every join grant, to the broker's group.
fn join_bindings(group_name: &str) -> Vec<Binding> {
    JOIN_GRANTS
        .iter()
        .map(|g| match g.namespace {
            None => crb(&format!("worldland:{}", g.role), g.role, vec![group(group_name)]),
            Some(ns) => rb(ns, &format!("worldland:{}", g.role), "Role", g.role, vec![group(group_name)]),
        })
        .collect()
}

#[test]
fn rbac_rule_matching() {
    let csr = |r: &Rule| r.allows(CSR_API_GROUP, "certificatesigningrequests", Some("nodeclient"), "create");
    let table = [
        (
            rule(&[CSR_API_GROUP], &["certificatesigningrequests/nodeclient"], &["create"], &[]),
            true,
        ),
        (rule(&["*"], &["certificatesigningrequests/nodeclient"], &["create"], &[]), true),
        (rule(&[CSR_API_GROUP], &["*"], &["*"], &[]), true),
        (rule(&[CSR_API_GROUP], &["*/nodeclient"], &["create"], &[]), true),
        (rule(&["*"], &["*"], &["*"], &[]), true), // cluster-admin
        // Not it: another subresource, the resource alone, another group or verb, names.
        (
            rule(&[CSR_API_GROUP], &["certificatesigningrequests/selfnodeclient"], &["create"], &[]),
            false,
        ),
        (rule(&[CSR_API_GROUP], &["certificatesigningrequests"], &["create"], &[]), false),
        (rule(&[CSR_API_GROUP], &["certificatesigningrequests/*"], &["create"], &[]), false),
        (rule(&[""], &["certificatesigningrequests/nodeclient"], &["create"], &[]), false),
        (
            rule(&[CSR_API_GROUP], &["certificatesigningrequests/nodeclient"], &["get"], &[]),
            false,
        ),
        (
            rule(&[CSR_API_GROUP], &["certificatesigningrequests/nodeclient"], &["create"], &["x"]),
            false,
        ),
        (rule(&[CSR_API_GROUP], &["*/selfnodeclient"], &["create"], &[]), false),
        (Rule::default(), false),
    ];
    for (r, want) in table {
        assert_eq!(csr(&r), want, "{r:?}");
    }
    assert!(rule(&[""], &["nodes"], &["get"], &[]).allows("", "nodes", None, "get"));
    assert!(!rule(&[""], &["*/status"], &["get"], &[]).allows("", "nodes", None, "get"));
}

#[test]
fn a_clean_cluster_has_no_finding() {
    let snap = RbacSnapshot {
        roles: vec![],
        bindings: join_bindings(GROUP),
    };
    assert_eq!(audit(&snap, GROUP), vec![]);
    // The parent group (every token is in it) satisfies the join grants as well.
    let parent = RbacSnapshot {
        roles: vec![],
        bindings: join_bindings(BOOTSTRAPPERS_GROUP),
    };
    assert_eq!(audit(&parent, GROUP), vec![]);
}

#[test]
fn auto_approval_is_found_whatever_role_carries_it() {
    let custom = |rules: Vec<Rule>| RoleDef {
        namespace: None,
        name: "custom".into(),
        rules,
    };
    let grant = rule(&[CSR_API_GROUP], &["certificatesigningrequests/nodeclient"], &["create"], &[]);
    let kubeadm = crb(
        "kubeadm:node-autoapprove-bootstrap",
        NODECLIENT_ROLE,
        vec![group("system:bootstrappers:kubeadm:default-node-token")],
    );
    // (roles, extra bindings, the names of the bindings reported)
    let table: Vec<(Vec<RoleDef>, Vec<Binding>, Vec<&str>)> = vec![
        (vec![], vec![kubeadm.clone()], vec!["kubeadm:node-autoapprove-bootstrap"]),
        // By name even when its subjects are none and the role is not listed.
        (vec![], vec![crb("empty", NODECLIENT_ROLE, vec![])], vec!["empty"]),
        (
            vec![custom(vec![grant.clone()])],
            vec![crb("c", "custom", vec![group("g")])],
            vec!["c"],
        ),
        // A custom role that grants it but binds nobody, or grants something else.
        (vec![custom(vec![grant.clone()])], vec![crb("c", "custom", vec![])], vec![]),
        (
            vec![custom(vec![rule(
                &[CSR_API_GROUP],
                &["certificatesigningrequests"],
                &["create"],
                &[],
            )])],
            vec![crb("c", "custom", vec![group("g")])],
            vec![],
        ),
        // Rotation of a node's own certificate: reported too (as a renewal auto-approval).
        (
            vec![],
            vec![crb("rotate", SELFNODECLIENT_ROLE, vec![group("system:nodes")])],
            vec!["rotate"],
        ),
        // A RoleBinding to the ClusterRole, and to a namespaced Role of the same rules.
        (
            vec![],
            vec![rb("kube-system", "r", "ClusterRole", NODECLIENT_ROLE, vec![group("g")])],
            vec!["r"],
        ),
        (
            vec![RoleDef {
                namespace: Some("ns".into()),
                name: "custom".into(),
                rules: vec![grant.clone()],
            }],
            vec![
                rb("ns", "r", "Role", "custom", vec![group("g")]),
                rb("other", "r2", "Role", "custom", vec![group("g")]),
            ],
            vec!["r"],
        ),
    ];
    for (roles, extra, want) in table {
        let mut bindings = join_bindings(GROUP);
        bindings.extend(extra.clone());
        let found: Vec<String> = audit(&RbacSnapshot { roles, bindings }, GROUP)
            .into_iter()
            .map(|f| match f {
                Finding::AutoApproval { binding } | Finding::RenewalAutoApproval { binding } => binding.name,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(found, want, "{extra:?}");
    }
}

#[test]
fn an_auto_approval_names_the_binding_its_subjects_and_the_fix() {
    let snap = RbacSnapshot {
        roles: vec![],
        bindings: [
            join_bindings(GROUP),
            vec![crb(
                "kubeadm:node-autoapprove-bootstrap",
                NODECLIENT_ROLE,
                vec![group("system:bootstrappers:kubeadm:default-node-token")],
            )],
        ]
        .concat(),
    };
    let found = audit(&snap, GROUP);
    assert_eq!(found.len(), 1);
    assert!(found[0].is_auto_approval());
    let text = found[0].to_string();
    for must in [
        "clusterrolebinding kubeadm:node-autoapprove-bootstrap",
        "Group system:bootstrappers:kubeadm:default-node-token",
        "kubectl delete clusterrolebinding kubeadm:node-autoapprove-bootstrap",
    ] {
        assert!(text.contains(must), "{text}");
    }
    let ns = rb("kube-system", "x", "ClusterRole", NODECLIENT_ROLE, vec![]);
    assert_eq!(ns.delete_command(), "kubectl -n kube-system delete rolebinding x");
}

#[test]
fn each_missing_join_grant_is_reported() {
    for missing in JOIN_GRANTS {
        let bindings: Vec<Binding> = join_bindings(GROUP).into_iter().filter(|b| b.role_name != missing.role).collect();
        let found = audit(&RbacSnapshot { roles: vec![], bindings }, GROUP);
        assert_eq!(
            found,
            vec![Finding::JoinGrantMissing {
                group: GROUP.into(),
                grant: missing
            }]
        );
        assert!(!found[0].is_auto_approval());
        assert!(found[0].to_string().contains(missing.role));
    }
    // Bound to another group, or in the wrong place, is not bound.
    let elsewhere: Vec<Binding> = join_bindings("system:bootstrappers:kubeadm:default-node-token")
        .into_iter()
        .chain(join_bindings(GROUP).into_iter().map(|mut b| {
            b.namespace = match b.namespace {
                Some(_) => Some("default".into()),
                None => Some(KUBE_SYSTEM.into()),
            };
            b
        }))
        .collect();
    let found = audit(
        &RbacSnapshot {
            roles: vec![],
            bindings: elsewhere,
        },
        GROUP,
    );
    assert_eq!(found.len(), JOIN_GRANTS.len(), "{found:?}");
    // An empty cluster misses them all, and auto-approves nothing.
    assert_eq!(audit(&RbacSnapshot::default(), GROUP).len(), JOIN_GRANTS.len());
}

#[test]
fn renewal_auto_approval_is_its_own_finding() {
    let snap = RbacSnapshot {
        roles: vec![],
        bindings: [
            join_bindings(GROUP),
            vec![crb(
                "kubeadm:node-autoapprove-certificate-rotation",
                SELFNODECLIENT_ROLE,
                vec![group("system:nodes")],
            )],
        ]
        .concat(),
    };
    let found = audit(&snap, GROUP);
    assert!(matches!(found.as_slice(), [Finding::RenewalAutoApproval { .. }]), "{found:?}");
    assert!(found[0].is_auto_approval());
    let text = found[0].to_string();
    assert!(
        text.contains("renewals") && text.contains("kubectl delete clusterrolebinding kubeadm:node-autoapprove-certificate-rotation"),
        "{text}"
    );
}
