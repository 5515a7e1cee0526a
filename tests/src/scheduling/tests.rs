use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector};

use super::*;

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn term(exprs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(exprs),
        match_fields: None,
    }
}

fn pod(terms: Option<Vec<NodeSelectorTerm>>, tolerations: Vec<Toleration>) -> PodSpec {
    PodSpec {
        affinity: terms.map(|node_selector_terms| Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        ..Default::default()
    }
}

fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Toleration {
        key: opt(key),
        operator: opt(op),
        value: opt(value),
        effect: opt(effect),
        toleration_seconds: None,
    }
}

fn labelled(pairs: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    node("n", pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), taints)
}

#[test]
fn required_node_affinity() {
    let n = labelled(&[("a", "1"), ("b", "x")], vec![]);
    // (terms, fits)
    let table = [
        (None, true),
        (Some(vec![]), false),
        (Some(vec![term(vec![])]), false),
        (Some(vec![term(vec![req("a", "In", &["1", "2"])])]), true),
        (Some(vec![term(vec![req("a", "In", &["2"])])]), false),
        (Some(vec![term(vec![req("c", "In", &["1"])])]), false),
        (Some(vec![term(vec![req("a", "NotIn", &["2"])])]), true),
        (Some(vec![term(vec![req("a", "NotIn", &["1"])])]), false),
        (Some(vec![term(vec![req("c", "NotIn", &["1"])])]), true),
        (Some(vec![term(vec![req("b", "Exists", &[])])]), true),
        (Some(vec![term(vec![req("c", "Exists", &[])])]), false),
        (Some(vec![term(vec![req("c", "DoesNotExist", &[])])]), true),
        (Some(vec![term(vec![req("a", "DoesNotExist", &[])])]), false),
        (Some(vec![term(vec![req("a", "Gt", &["0"])])]), true),
        (Some(vec![term(vec![req("a", "Gt", &["1"])])]), false),
        (Some(vec![term(vec![req("a", "Lt", &["2"])])]), true),
        (Some(vec![term(vec![req("b", "Lt", &["2"])])]), false),
        (Some(vec![term(vec![req("a", "Bogus", &["1"])])]), false),
        // ANDed within a term, ORed across terms.
        (Some(vec![term(vec![req("a", "In", &["1"]), req("b", "In", &["y"])])]), false),
        (
            Some(vec![term(vec![req("a", "In", &["2"])]), term(vec![req("b", "In", &["x"])])]),
            true,
        ),
    ];
    for (terms, want) in table {
        let got = fits(&pod(terms.clone(), vec![]), &n);
        assert_eq!(got.is_ok(), want, "{terms:?}: {got:?}");
        if !want {
            assert_eq!(got, Err(Unfit::NodeAffinity));
        }
    }
    // matchFields: only metadata.name.
    let by_name = |names: &[&str]| {
        pod(
            Some(vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req("metadata.name", "In", names)]),
            }]),
            vec![],
        )
    };
    assert!(fits(&by_name(&["n"]), &n).is_ok());
    assert!(fits(&by_name(&["m"]), &n).is_err());
}

#[test]
fn node_selector() {
    let n = labelled(&[("a", "1")], vec![]);
    let mut p = pod(None, vec![]);
    p.node_selector = Some([("a".to_string(), "1".to_string())].into());
    assert!(fits(&p, &n).is_ok());
    p.node_selector = Some([("a".to_string(), "2".to_string())].into());
    assert_eq!(fits(&p, &n), Err(Unfit::NodeSelector("a=2".into())));
}

#[test]
fn taints_and_tolerations() {
    let taint = |effect: &str| Taint {
        key: "k".into(),
        value: Some("v".into()),
        effect: effect.into(),
        time_added: None,
    };
    // (taint effect, tolerations, fits)
    let table = [
        ("NoSchedule", vec![], false),
        ("NoExecute", vec![], false),
        ("PreferNoSchedule", vec![], true),
        ("NoSchedule", vec![tol("k", "Equal", "v", "NoSchedule")], true),
        ("NoSchedule", vec![tol("k", "", "v", "")], true),
        ("NoSchedule", vec![tol("k", "Equal", "w", "NoSchedule")], false),
        ("NoSchedule", vec![tol("k", "Exists", "", "")], true),
        ("NoSchedule", vec![tol("k", "Exists", "", "NoExecute")], false),
        ("NoSchedule", vec![tol("j", "Exists", "", "")], false),
        ("NoSchedule", vec![tol("", "Exists", "", "")], true),
        ("NoExecute", vec![tol("", "Exists", "", "NoExecute")], true),
        ("NoSchedule", vec![tol("", "Exists", "", "NoExecute")], false),
        ("NoSchedule", vec![tol("", "Equal", "", "")], false),
        ("NoSchedule", vec![tol("j", "Exists", "", ""), tol("k", "Equal", "v", "")], true),
    ];
    for (effect, tolerations, want) in table {
        let got = fits(&pod(None, tolerations.clone()), &labelled(&[], vec![taint(effect)]));
        assert_eq!(got.is_ok(), want, "{effect} {tolerations:?}: {got:?}");
        if !want {
            assert_eq!(got, Err(Unfit::Taint("k".into())));
        }
    }
}

/// The broker's requirement against the nodes a provider can present, and against a broker node.
#[test]
fn the_broker_label_requirement_against_provider_and_broker_nodes() {
    let broker = pod(Some(vec![term(vec![req(BROKER_NODE_LABEL, "In", &["true"])])]), vec![]);
    assert_eq!(fits(&broker, &provider_node("p", true)), Err(Unfit::NodeAffinity));
    assert_eq!(fits(&broker, &provider_node("p", false)), Err(Unfit::NodeAffinity));
    assert_eq!(fits(&broker, &broker_node("b", true)), Err(Unfit::Taint(PROVIDER_TAINT.into())));
    assert_eq!(fits(&broker, &broker_node("b", false)), Ok(()));
    // Without the requirement, an untainted provider node would take the pod.
    assert_eq!(fits(&pod(None, vec![]), &provider_node("p", false)), Ok(()));
    assert!(!kubelet_settable_labels("p").contains_key(BROKER_NODE_LABEL));
}
