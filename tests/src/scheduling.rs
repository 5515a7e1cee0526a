//! Whether kube-scheduler could place a Pod on a Node, as far as its `NodeAffinity` filter
//! (`nodeSelector` and the required node-affinity terms) and its `TaintToleration` filter
//! (`NoSchedule` and `NoExecute` taints against the Pod's tolerations) decide. The test control
//! plane runs no scheduler, so the tests ask this instead; the nodes a provider can present are
//! built here too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, PodSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use worldland_core::labels::{BROKER_NODE_LABEL, PROVIDER_TAINT};

/// Why a Pod does not fit a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// A `nodeSelector` entry the Node's labels lack.
    NodeSelector(String),
    /// No required node-affinity term matches the Node.
    NodeAffinity,
    /// A `NoSchedule` or `NoExecute` taint no toleration tolerates (its key).
    Taint(String),
}

/// `Ok` when both filters let `pod` onto `node`; the first reason otherwise.
pub fn fits(pod: &PodSpec, node: &Node) -> Result<(), Unfit> {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    for (k, v) in pod.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Err(Unfit::NodeSelector(format!("{k}={v}")));
        }
    }
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    if let Some(selector) = required {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if !selector.node_selector_terms.iter().any(|t| term_matches(t, labels, name)) {
            return Err(Unfit::NodeAffinity);
        }
    }
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    for taint in node.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        let filters = taint.effect == "NoSchedule" || taint.effect == "NoExecute";
        if filters && !tolerations.iter().any(|t| tolerates(t, taint)) {
            return Err(Unfit::Taint(taint.key.clone()));
        }
    }
    Ok(())
}

/// Terms are ORed, a term's requirements ANDed; a term with none matches no Node.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let field_value = |key: &str| (key == "metadata.name").then_some(name);
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| requirement_matches(r, field_value(&r.key)))
}

/// One requirement against the Node's value for its key (`None`: no such label).
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    let compare = |ord: std::cmp::Ordering| match (value.and_then(number), values) {
        (Some(have), [bound]) => number(bound).is_some_and(|b| have.cmp(&b) == ord),
        _ => false,
    };
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        _ => false,
    }
}

/// As `v1.Toleration.ToleratesTaint`: an empty effect tolerates every effect, an empty key (with
/// `Exists`) every key; `Exists` ignores the value, `Equal` (the default) compares it.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    let operator = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

/// The taint every provider's node carries: `worldland.io/provider=true:NoSchedule`.
pub fn provider_taint() -> Taint {
    Taint {
        key: PROVIDER_TAINT.into(),
        value: Some("true".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    }
}

/// Labels a kubelet may put on its own Node (NodeRestriction lets it set these `kubernetes.io/`
/// ones, and any key outside `kubernetes.io/` and `k8s.io/`), including look-alikes of the broker
/// label; never a `node-restriction.kubernetes.io/` one, and no `worldland.io/` key (the
/// `worldland-node-keys` policy refuses those).
pub fn kubelet_settable_labels(name: &str) -> BTreeMap<String, String> {
    let bare = BROKER_NODE_LABEL.rsplit('/').next().unwrap_or(BROKER_NODE_LABEL);
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "gpu"),
        ("topology.kubernetes.io/zone", "z"),
        ("topology.kubernetes.io/region", "r"),
        ("kubelet.kubernetes.io/worldland-broker", "true"),
        ("node.kubernetes.io/worldland-broker", "true"),
        (bare, "true"),
        ("example.com/worldland-broker", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A Node named `name` with these labels and taints.
pub fn node(name: &str, labels: BTreeMap<String, String>, taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A provider's Node: every label its kubelet may set, and the provider taint when `tainted` (a
/// provider whose kubelet registered before the broker tainted it, or removed the taint, has none).
pub fn provider_node(name: &str, tainted: bool) -> Node {
    let taints = if tainted { vec![provider_taint()] } else { vec![] };
    node(name, kubelet_settable_labels(name), taints)
}

/// A Node an administrator labelled for the broker (with the provider taint when `tainted`, as a
/// provider's node would be if it somehow carried the label).
pub fn broker_node(name: &str, tainted: bool) -> Node {
    let mut labels = BTreeMap::from([("kubernetes.io/hostname".to_string(), name.to_string())]);
    labels.insert(BROKER_NODE_LABEL.into(), "true".into());
    let taints = if tainted { vec![provider_taint()] } else { vec![] };
    node(name, labels, taints)
}

#[cfg(test)]
mod tests;
