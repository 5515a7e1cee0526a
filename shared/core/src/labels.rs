//! Every Kubernetes label key and value the project writes or selects on comes from here, so the
//! labeler and the selectors can never disagree.

use std::collections::BTreeMap;

/// Label key marking a provider's node as rentable; its value is [`RENTAL_TYPE_GPU`].
pub const RENTAL_TYPE: &str = "worldland.io/rental-type";
/// Label key holding the provider's id, unchanged: a canonical id
/// ([`crate::validation::is_canonical_provider_id`]) is its own label value, so two providers
/// never share one. The recorder joins and labels a node only if this label is absent or its
/// own, and makes a provider available only on a node that carries its own id here.
pub const PROVIDER_ID: &str = "worldland.io/provider-id";
/// Label key holding the node's GPU model label (see [`gpu_model_label`]).
pub const GPU_MODEL: &str = "worldland.io/gpu-model";
/// Label key holding the number of GPUs the provider offers.
pub const GPU_COUNT: &str = "worldland.io/gpu-count";
/// Label key set to [`STATUS_OFFLINE`] while the provider is offline, and removed when it comes back.
pub const STATUS: &str = "worldland.io/status";
/// Label key holding the jobs the agent last reported; patched only when the count changes.
pub const ACTIVE_JOBS: &str = "worldland.io/active-jobs";
/// Value of [`STATUS`] on an offline provider's node.
pub const STATUS_OFFLINE: &str = "offline";
/// An annotation, not a label: label values cannot hold an RFC 3339 timestamp's ':'.
pub const LAST_HEARTBEAT_ANNOTATION: &str = "worldland.io/last-heartbeat";
/// Key of the `NoSchedule` taint on an offline provider's node.
pub const OFFLINE_TAINT: &str = "worldland.io/offline";
/// Taint on every provider's node (`worldland.io/provider=true:NoSchedule`), put there by the
/// broker before the node's kubelet can register: the broker's own workloads never tolerate it
/// (a provider is root on its machine and could read what runs there); customers' rentals do.
pub const PROVIDER_TAINT: &str = "worldland.io/provider";
/// Node label every broker Deployment requires (`node-restriction.kubernetes.io/worldland-broker=true`).
/// The NodeRestriction admission plugin forbids a kubelet to set any `node-restriction.kubernetes.io/`
/// label on its own Node, so only a cluster administrator can put it there.
pub const BROKER_NODE_LABEL: &str = "node-restriction.kubernetes.io/worldland-broker";
/// Value of [`RENTAL_TYPE`] on every provider's node.
pub const RENTAL_TYPE_GPU: &str = "gpu";
/// Field manager name for server-side writes.
pub const FIELD_MANAGER: &str = "worldland";

/// Vendor and family words that say nothing about the model: `NVIDIA GeForce RTX 4090` and
/// `RTX 4090` are the same card.
const NOISE_WORDS: [&str; 6] = ["nvidia", "geforce", "tesla", "quadro", "amd", "(r)"];

/// The label value of a GPU model: deterministic, always a valid Kubernetes label value
/// (1–63 characters, alphanumeric at both ends, `[-A-Za-z0-9_.]` inside).
pub fn gpu_model_label(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    let first_model_word = words
        .iter()
        .position(|w| !NOISE_WORDS.contains(&w.to_ascii_lowercase().as_str()))
        .unwrap_or(words.len());
    let joined = words[first_model_word..].join("-");
    label_value(&joined).unwrap_or_else(|| "unknown".to_string())
}

/// Two GPU names denote the same model when their labels agree (case aside).
pub fn same_gpu_model(a: &str, b: &str) -> bool {
    gpu_model_label(a).eq_ignore_ascii_case(&gpu_model_label(b))
}

/// Turns free text into a valid label value, or `None` if nothing usable is left. It collapses
/// and trims, so many texts share one value: fit for GPU model names, never for identities
/// (provider ids are canonical and written unchanged; see [`provider_id_label`]).
pub fn label_value(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out.truncate(63);
    let trimmed = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Whether `v` is a valid Kubernetes label value.
pub fn is_valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// The value of [`PROVIDER_ID`] for a provider: its id, unchanged. Ids are canonical (checked at
/// every entry point), so this is a valid label value and no other provider's; an id that is not
/// (a record from before ids were canonical) is still written unchanged, so the API server
/// refuses it (422) rather than the label silently matching another provider.
pub fn provider_id_label(provider_id: &str) -> String {
    provider_id.to_string()
}

/// Whether a node's labels name another provider than `provider_id` as its owner. A node with no
/// provider label is nobody's yet.
pub fn labelled_for_another_provider<'a>(node_labels: &'a BTreeMap<String, String>, provider_id: &str) -> Option<&'a str> {
    node_labels
        .get(PROVIDER_ID)
        .map(String::as_str)
        .filter(|v| *v != provider_id_label(provider_id))
}

/// The labels a provider's node carries (and that its jobs select on).
pub fn provider_node_labels(provider_id: &str, gpu_name: &str, gpu_count: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RENTAL_TYPE.to_string(), RENTAL_TYPE_GPU.to_string()),
        (PROVIDER_ID.to_string(), provider_id_label(provider_id)),
        (GPU_MODEL.to_string(), gpu_model_label(gpu_name)),
        (GPU_COUNT.to_string(), gpu_count.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_gpu_names() {
        let table = [
            ("NVIDIA GeForce RTX 4090", "RTX-4090"),
            ("Tesla T4", "T4"),
            ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
            ("NVIDIA A100-PCIE-40GB", "A100-PCIE-40GB"),
            ("NVIDIA A100 80GB PCIe", "A100-80GB-PCIe"),
            ("NVIDIA H100 80GB HBM3", "H100-80GB-HBM3"),
            ("NVIDIA H100 PCIe", "H100-PCIe"),
            ("NVIDIA H200", "H200"),
            ("NVIDIA GH200 480GB", "GH200-480GB"),
            ("NVIDIA B200", "B200"),
            ("NVIDIA L40S", "L40S"),
            ("NVIDIA L4", "L4"),
            ("NVIDIA A10G", "A10G"),
            ("NVIDIA RTX A6000", "RTX-A6000"),
            ("NVIDIA RTX 6000 Ada Generation", "RTX-6000-Ada-Generation"),
            ("Quadro RTX 8000", "RTX-8000"),
            ("NVIDIA GeForce RTX 3090 Ti", "RTX-3090-Ti"),
            ("NVIDIA GeForce RTX 2080 SUPER", "RTX-2080-SUPER"),
            ("NVIDIA GeForce GTX 1080 Ti", "GTX-1080-Ti"),
            ("NVIDIA GeForce RTX 4060 Laptop GPU", "RTX-4060-Laptop-GPU"),
            ("NVIDIA GeForce RTX 5090", "RTX-5090"),
            ("NVIDIA TITAN RTX", "TITAN-RTX"),
            ("Tesla V100-SXM2-16GB", "V100-SXM2-16GB"),
            ("Tesla V100-SXM2-32GB", "V100-SXM2-32GB"),
            ("Tesla P100-PCIE-16GB", "P100-PCIE-16GB"),
            ("Tesla K80", "K80"),
            ("Tesla M60", "M60"),
            ("AMD Radeon RX 7900 XTX", "Radeon-RX-7900-XTX"),
            ("AMD Instinct MI300X", "Instinct-MI300X"),
            ("  NVIDIA   GeForce  RTX 4090  ", "RTX-4090"),
            ("NVIDIA GeForce RTX 4090 (24GB)", "RTX-4090-24GB"),
            ("NVIDIA", "unknown"),
            ("", "unknown"),
            ("???", "unknown"),
        ];
        for (name, want) in table {
            let got = gpu_model_label(name);
            assert_eq!(got, want, "{name:?}");
            assert!(is_valid_label_value(&got), "{got:?} must be a valid label value");
        }
    }

    #[test]
    fn always_a_valid_label_value_even_for_hostile_names() {
        for name in [
            "a".repeat(200),
            "-x-".into(),
            "名前 GPU".into(),
            "x:y/z".into(),
            "x_".into(),
            ".a.".into(),
        ] {
            let got = gpu_model_label(&name);
            assert!(is_valid_label_value(&got) && !got.is_empty(), "{name:?} -> {got:?}");
            assert_eq!(got, gpu_model_label(&name), "deterministic");
        }
    }

    #[test]
    fn a_node_labelled_for_another_provider_is_recognised() {
        let mine = provider_node_labels("sim-provider-00001", "RTX 4090", 1);
        assert_eq!(labelled_for_another_provider(&mine, "sim-provider-00001"), None);
        assert_eq!(
            labelled_for_another_provider(&mine, "sim-provider-00002"),
            Some("sim-provider-00001")
        );
        assert_eq!(
            labelled_for_another_provider(&BTreeMap::new(), "sim-provider-00002"),
            None,
            "nobody's yet"
        );
    }

    #[test]
    fn model_matching_goes_through_the_label() {
        assert!(same_gpu_model("NVIDIA GeForce RTX 4090", "RTX 4090"));
        assert!(same_gpu_model("rtx-4090", "NVIDIA GeForce RTX 4090"));
        assert!(!same_gpu_model("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4080"));
    }
}
