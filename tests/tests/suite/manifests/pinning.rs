//! Every broker Deployment is pinned off providers' nodes. A provider is root on its machine: its
//! kubelet registers and labels its own Node, and could draw a broker pod there and read its
//! ServiceAccount token. So each Deployment requires the node label
//! `node-restriction.kubernetes.io/worldland-broker=true`, which NodeRestriction forbids a kubelet
//! to set on itself (only an administrator can), and tolerates no taint of a provider's node.

use k8s_openapi::api::core::v1::PodSpec;
use worldland_core::labels::{BROKER_NODE_LABEL, PROVIDER_TAINT};
use worldland_tests::scheduling::{broker_node, fits, provider_node, provider_taint, tolerates, Unfit};

use super::parse_all;

/// Each Deployment's name and pod template.
fn pods() -> Vec<(String, PodSpec)> {
    let p = parse_all();
    assert!(!p.deployments.is_empty());
    p.deployments
        .into_iter()
        .map(|d| {
            let name = d.metadata.name.clone().unwrap();
            (name, d.spec.unwrap().template.spec.unwrap())
        })
        .collect()
}

#[test]
fn every_deployment_requires_the_admin_only_broker_label() {
    // NodeRestriction refuses a kubelet every label under this prefix on its own Node.
    assert!(BROKER_NODE_LABEL.starts_with("node-restriction.kubernetes.io/"));
    for (name, pod) in pods() {
        let terms = pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|s| s.node_selector_terms.clone())
            .unwrap_or_default();
        assert!(!terms.is_empty(), "{name}: no required node affinity");
        // Terms are ORed: every one of them must require the label.
        for term in &terms {
            let requires = term
                .match_expressions
                .iter()
                .flatten()
                .any(|r| r.key == BROKER_NODE_LABEL && r.operator == "In" && r.values.as_deref() == Some(&["true".to_string()][..]));
            assert!(
                requires,
                "{name}: a node-affinity term without {BROKER_NODE_LABEL} In [true]: {term:?}"
            );
        }
    }
}

#[test]
fn no_deployment_tolerates_a_providers_taint() {
    let mut execute = provider_taint();
    execute.effect = "NoExecute".into();
    for (name, pod) in pods() {
        for t in pod.tolerations.iter().flatten() {
            let key = t.key.as_deref().unwrap_or_default();
            assert!(!key.is_empty(), "{name}: a toleration of every taint: {t:?}");
            assert!(!key.starts_with("worldland.io/"), "{name}: tolerates {key}");
            for taint in [provider_taint(), execute.clone()] {
                assert!(!tolerates(t, &taint), "{name}: {t:?} tolerates {PROVIDER_TAINT}");
            }
        }
    }
}

/// As the scheduler's NodeAffinity and TaintToleration filters decide: no broker pod fits a
/// provider's node (with every label its kubelet may set, tainted or not), nor a node that carries
/// the broker label but the provider taint; each fits a node an administrator labelled.
#[test]
fn no_deployment_fits_a_providers_node_and_each_fits_a_broker_node() {
    for (name, pod) in pods() {
        assert_eq!(fits(&pod, &provider_node("provider", true)), Err(Unfit::NodeAffinity), "{name}");
        assert_eq!(fits(&pod, &provider_node("provider", false)), Err(Unfit::NodeAffinity), "{name}");
        assert_eq!(
            fits(&pod, &broker_node("tainted", true)),
            Err(Unfit::Taint(PROVIDER_TAINT.into())),
            "{name}"
        );
        assert_eq!(fits(&pod, &broker_node("broker", false)), Ok(()), "{name}");
    }
}
