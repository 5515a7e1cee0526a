//! The NVIDIA device plugin (`infra/k8s/base/nvidia-device-plugin.yaml`): the one workload we
//! ship that tolerates the provider taint, so it runs on providers' nodes and nowhere an
//! administrator marked (broker and control-plane nodes); its image pinned by version and
//! digest; no more privilege than NVIDIA's static manifest gives it, and no ServiceAccount token.
//! `real_cluster_device_plugin.rs` checks the same DaemonSet as a real API server stored it, and
//! where the DaemonSet controller puts its pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{PodSpec, Taint, Toleration};
use worldland_core::cluster::node::parse_quantity;
use worldland_core::labels::{self, BROKER_NODE_LABEL, OFFLINE_TAINT, PROVIDER_TAINT};
use worldland_tests::scheduling::{broker_node, fits, node, provider_node, provider_taint, tolerates, Unfit};

use super::parse_all;

const NAME: &str = "nvidia-device-plugin-daemonset";
const IMAGE_REPO: &str = "nvcr.io/nvidia/k8s-device-plugin";
/// The label kubeadm puts on a control-plane node (no kubelet may set it on itself).
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
const DEVICE_PLUGINS_DIR: &str = "/var/lib/kubelet/device-plugins";

fn daemon_set() -> DaemonSet {
    let p = parse_all();
    assert_eq!(p.daemon_sets.len(), 1, "one DaemonSet: the device plugin");
    p.daemon_sets.into_iter().next().unwrap()
}

fn pod() -> PodSpec {
    daemon_set().spec.unwrap().template.spec.unwrap()
}

fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.map(str::to_string),
        effect: effect.into(),
        time_added: None,
    }
}

fn toleration(key: &str, operator: &str, value: Option<&str>, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some(operator.into()),
        value: value.map(str::to_string),
        effect: Some(effect.into()),
        toleration_seconds: None,
    }
}

/// A control-plane node as kubeadm makes it: its label and its `NoSchedule` taint.
fn control_plane_node(name: &str) -> k8s_openapi::api::core::v1::Node {
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        (CONTROL_PLANE.to_string(), String::new()),
    ]);
    node(name, labels, vec![taint(CONTROL_PLANE, None, "NoSchedule")])
}

/// A provider's node once the recorder has labelled it (its kubelet's labels kept).
fn labelled_provider_node(name: &str, extra_taints: Vec<Taint>) -> k8s_openapi::api::core::v1::Node {
    let mut n = provider_node(name, true);
    let l = n.metadata.labels.get_or_insert_with(BTreeMap::new);
    l.extend(labels::provider_node_labels("sim-provider-00001", "NVIDIA GeForce RTX 4090", 4));
    n.spec.as_mut().unwrap().taints.as_mut().unwrap().extend(extra_taints);
    n
}

#[test]
fn it_is_one_daemonset_in_kube_system_selecting_its_own_pods() {
    let ds = daemon_set();
    assert_eq!(ds.metadata.name.as_deref(), Some(NAME));
    assert_eq!(
        ds.metadata.namespace.as_deref(),
        Some("kube-system"),
        "a node add-on, as upstream; `worldland` stays the broker's"
    );
    let spec = ds.spec.unwrap();
    let wanted = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(!wanted.is_empty() && spec.selector.match_expressions.is_none());
    let have = spec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
    for (k, v) in &wanted {
        assert_eq!(have.get(k), Some(v), "the template carries the selector's {k}");
    }
}

/// `nvcr.io/nvidia/k8s-device-plugin:v0.17.<patch>@sha256:<64 hex>`: a moved tag changes nothing.
#[test]
fn its_image_is_pinned_by_version_and_digest() {
    let p = pod();
    assert!(p.init_containers.is_none());
    assert_eq!(p.containers.len(), 1);
    let image = p.containers[0].image.clone().unwrap();
    let (tagged, digest) = image.split_once("@sha256:").unwrap_or_else(|| panic!("{image}: no digest"));
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{image}: a sha256 digest is 64 lower-case hex digits"
    );
    let (repo, tag) = tagged.rsplit_once(':').unwrap_or_else(|| panic!("{image}: no tag"));
    assert_eq!(repo, IMAGE_REPO);
    let patch = tag.strip_prefix("v0.17.").unwrap_or_else(|| panic!("{image}: not a v0.17.x tag"));
    assert!(
        !patch.is_empty() && patch.chars().all(|c| c.is_ascii_digit()),
        "{image}: a release tag"
    );
}

#[test]
fn it_tolerates_exactly_the_provider_taint_and_nvidias() {
    let p = pod();
    let tolerations = p.tolerations.clone().unwrap_or_default();
    assert_eq!(
        tolerations,
        vec![
            toleration(PROVIDER_TAINT, "Equal", Some("true"), "NoSchedule"),
            toleration("nvidia.com/gpu", "Exists", None, "NoSchedule"),
        ]
    );
    let any = |t: &Taint| tolerations.iter().any(|x| tolerates(x, t));
    assert!(any(&provider_taint()));
    assert!(any(&taint("nvidia.com/gpu", Some("present"), "NoSchedule")));
    for not in [
        taint(PROVIDER_TAINT, Some("true"), "NoExecute"),
        taint(PROVIDER_TAINT, Some("false"), "NoSchedule"),
        taint(OFFLINE_TAINT, Some("true"), "NoSchedule"),
        taint(CONTROL_PLANE, None, "NoSchedule"),
        taint("example.com/other", Some("x"), "NoSchedule"),
    ] {
        assert!(!any(&not), "tolerates {not:?}");
    }
}

/// Required node affinity: every term (they are ORed) keeps off the nodes an administrator
/// marked for the broker or the control plane; no kubelet can set or remove either label.
#[test]
fn its_node_affinity_excludes_broker_and_control_plane_nodes() {
    let p = pod();
    assert!(p.node_selector.is_none());
    let terms = p
        .affinity
        .and_then(|a| a.node_affinity)
        .and_then(|n| n.required_during_scheduling_ignored_during_execution)
        .map(|s| s.node_selector_terms)
        .unwrap_or_default();
    assert!(!terms.is_empty(), "no required node affinity");
    for term in &terms {
        for key in [BROKER_NODE_LABEL, CONTROL_PLANE] {
            assert!(
                term.match_expressions
                    .iter()
                    .flatten()
                    .any(|r| r.key == key && r.operator == "DoesNotExist" && r.values.is_none()),
                "a term without {key} DoesNotExist: {term:?}"
            );
        }
    }
}

/// As the scheduler's NodeAffinity and TaintToleration filters (and the DaemonSet controller's
/// own check) decide: it fits a provider's node from the moment the broker created it (tainted,
/// with only its kubelet's labels, before the recorder labels it) and after; never a broker or
/// control-plane node, whatever their taints.
#[test]
fn it_fits_providers_nodes_and_no_broker_or_control_plane_node() {
    let p = pod();
    assert_eq!(fits(&p, &provider_node("provider", true)), Ok(()), "before the recorder's labels");
    assert_eq!(fits(&p, &labelled_provider_node("labelled", vec![])), Ok(()), "after them");
    assert_eq!(
        fits(&p, &provider_node("untainted", false)),
        Ok(()),
        "a provider's node that lost its taint still gets it"
    );
    assert_eq!(fits(&p, &broker_node("broker", false)), Err(Unfit::NodeAffinity));
    assert_eq!(fits(&p, &broker_node("tainted-broker", true)), Err(Unfit::NodeAffinity));
    assert_eq!(fits(&p, &control_plane_node("control-plane")), Err(Unfit::NodeAffinity));
    // An offline provider's node takes no new pod; one already running stays (NoSchedule).
    assert_eq!(
        fits(
            &p,
            &labelled_provider_node("offline", vec![taint(OFFLINE_TAINT, Some("true"), "NoSchedule")])
        ),
        Err(Unfit::Taint(OFFLINE_TAINT.into()))
    );
}

/// Nothing else we ship tolerates the provider taint (the Deployments' own rules are in
/// `pinning.rs`).
#[test]
fn it_is_the_only_workload_that_tolerates_the_provider_taint() {
    let p = parse_all();
    let tolerating = |t: &Option<Vec<Toleration>>| t.iter().flatten().any(|t| tolerates(t, &provider_taint()));
    let mut found: Vec<String> = p
        .deployments
        .iter()
        .filter(|d| tolerating(&d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().tolerations))
        .map(|d| d.metadata.name.clone().unwrap())
        .collect();
    found.extend(
        p.daemon_sets
            .iter()
            .filter(|d| tolerating(&d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().tolerations))
            .map(|d| d.metadata.name.clone().unwrap()),
    );
    assert_eq!(found, [NAME]);
}

/// NVIDIA's static manifest's security context (no privilege escalation, every capability
/// dropped, not privileged), nothing of the host's namespaces, a critical add-on's priority, and
/// no ServiceAccount token: the plain plugin never calls the API server.
#[test]
fn it_has_no_privilege_and_no_token() {
    let p = pod();
    assert_eq!(p.automount_service_account_token, Some(false), "no token");
    assert!(p.service_account_name.is_none(), "the namespace's default account, with no token");
    assert_eq!(p.priority_class_name.as_deref(), Some("system-node-critical"));
    for (what, v) in [("hostNetwork", p.host_network), ("hostPID", p.host_pid), ("hostIPC", p.host_ipc)] {
        assert_ne!(v, Some(true), "{what}");
    }
    assert!(p.security_context.is_none(), "nothing pod-wide beyond the defaults");
    let c = &p.containers[0];
    let sc = c.security_context.as_ref().expect("a security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(caps.add.is_none(), "no capability added back");
    let env: BTreeMap<_, _> = c.env.iter().flatten().map(|e| (e.name.as_str(), e.value.as_deref())).collect();
    assert_eq!(
        env,
        BTreeMap::from([("FAIL_ON_INIT_ERROR", Some("true"))]),
        "a plugin that finds no GPU on a provider's node crash-loops where it shows"
    );
}

/// One host path, the kubelet's device-plugin directory (where the plugin puts its socket),
/// and nothing else of the host.
#[test]
fn it_mounts_only_the_kubelets_device_plugin_directory() {
    let p = pod();
    let volumes = p.volumes.clone().unwrap_or_default();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let host = volumes[0].host_path.as_ref().expect("a hostPath volume");
    assert_eq!(host.path, DEVICE_PLUGINS_DIR);
    assert_eq!(host.type_.as_deref(), Some("Directory"), "never created if the kubelet has none");
    let mounts = p.containers[0].volume_mounts.clone().unwrap_or_default();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
        (volumes[0].name.as_str(), DEVICE_PLUGINS_DIR)
    );
}

#[test]
fn it_requests_and_limits_cpu_and_memory() {
    let p = pod();
    let r = p.containers[0].resources.clone().expect("resources");
    let (requests, limits) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
    for (what, scale) in [("cpu", 1000), ("memory", 1)] {
        let req = parse_quantity(&requests.get(what).unwrap_or_else(|| panic!("no {what} request")).0, scale).unwrap();
        let lim = parse_quantity(&limits.get(what).unwrap_or_else(|| panic!("no {what} limit")).0, scale).unwrap();
        assert!(0 < req && req <= lim, "{what}: request {req} within limit {lim}");
    }
}
