//! Nodes as the workers see them, and Kubernetes quantities. Pure.

use std::collections::BTreeMap;

use crate::labels::{OFFLINE_TAINT, PROVIDER_TAINT};

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Taint key, e.g. `worldland.io/offline`.
    pub key: String,
    /// Taint value, if any.
    pub value: Option<String>,
    /// Effect: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// When the taint was added (RFC 3339), as the API server set it for `NoExecute` taints:
    /// written back unchanged, since eviction timing (tolerationSeconds) counts from it.
    pub time_added: Option<String>,
}

impl Taint {
    /// The taint on an offline provider's node: `worldland.io/offline=true:NoSchedule`.
    pub fn offline() -> Self {
        Self {
            key: OFFLINE_TAINT.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }
    }
}

/// A node as the workers read it: readiness, metadata, taints and capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name (a provider's lower-cased host name).
    pub name: String,
    /// The object's resourceVersion: the precondition of read-modify-write updates.
    pub resource_version: String,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
    /// Its labels, ours among them.
    pub labels: BTreeMap<String, String>,
    /// Its annotations, ours among them.
    pub annotations: BTreeMap<String, String>,
    /// Its taints (`spec.taints`).
    pub taints: Vec<Taint>,
    /// CPU capacity in millicores, from `status.capacity`.
    pub cpu_millis: Option<i64>,
    /// Memory capacity in bytes, from `status.capacity`.
    pub memory_bytes: Option<i64>,
    /// `nvidia.com/gpu`, when the device plugin reports it.
    pub gpus: Option<i64>,
}

impl Taint {
    /// The taint on every provider's node: `worldland.io/provider=true:NoSchedule`.
    pub fn provider() -> Self {
        Self {
            key: PROVIDER_TAINT.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }
    }
}

/// The taint list with `taint` present (replacing any taint of its key) or absent, every other
/// taint kept as it was.
pub fn taints_with(current: &[Taint], taint: &Taint, present: bool) -> Vec<Taint> {
    let mut out: Vec<Taint> = current.iter().filter(|t| t.key != taint.key).cloned().collect();
    if present {
        // Kept as it is when already there (its timeAdded included).
        match current
            .iter()
            .find(|t| t.key == taint.key && t.value == taint.value && t.effect == taint.effect)
        {
            Some(same) => out.push(same.clone()),
            None => out.push(taint.clone()),
        }
    }
    out
}

/// The taint list with the offline taint added (or removed), every other taint kept as it was.
pub fn taints_with_offline(current: &[Taint], offline: bool) -> Vec<Taint> {
    taints_with(current, &Taint::offline(), offline)
}

/// Parses a Kubernetes quantity into base units, scaled by `scale` (1000 for CPU millicores,
/// 1 for bytes). `None` for what it cannot read.
pub fn parse_quantity(q: &str, scale: i64) -> Option<i64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult * scale as f64).round() as i64)
}

/// Why a node contradicts what its provider claimed, if it does.
pub fn spec_contradiction(node: &NodeInfo, gpus: u32, cpu_cores: u32, memory_mb: u64) -> Option<String> {
    if let Some(n) = node.gpus {
        if n != i64::from(gpus) {
            return Some(format!("node reports {n} nvidia.com/gpu, the provider claimed {gpus}"));
        }
    }
    if let Some(m) = node.cpu_millis {
        if i64::from(cpu_cores) * 1000 > m {
            return Some(format!(
                "node has {} CPU cores, the provider claimed {cpu_cores}",
                m as f64 / 1000.0
            ));
        }
    }
    if let Some(b) = node.memory_bytes {
        // One MiB of slack for rounding between /proc/meminfo (KiB) and MiB.
        if (memory_mb as i64 - 1) * 1024 * 1024 > b {
            return Some(format!(
                "node has {} MiB of memory, the provider claimed {memory_mb}",
                b / (1024 * 1024)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let table = [
            ("32", 1000, Some(32_000)),
            ("32000m", 1000, Some(32_000)),
            ("1.5", 1000, Some(1_500)),
            ("128Gi", 1, Some(137_438_953_472)),
            ("131072Mi", 1, Some(137_438_953_472)),
            ("134217728Ki", 1, Some(137_438_953_472)),
            ("1G", 1, Some(1_000_000_000)),
            ("4", 1, Some(4)),
            ("lots", 1, None),
            ("12Xi", 1, None),
        ];
        for (q, scale, want) in table {
            assert_eq!(parse_quantity(q, scale), want, "{q}");
        }
    }

    #[test]
    fn contradictions() {
        let node = NodeInfo {
            gpus: Some(4),
            cpu_millis: Some(32_000),
            memory_bytes: Some(137_438_953_472),
            ..Default::default()
        };
        assert_eq!(spec_contradiction(&node, 4, 32, 131_072), None);
        assert!(spec_contradiction(&node, 8, 32, 131_072).unwrap().contains("nvidia.com/gpu"));
        assert!(spec_contradiction(&node, 4, 64, 131_072).unwrap().contains("CPU"));
        assert!(spec_contradiction(&node, 4, 32, 262_144).unwrap().contains("memory"));
        let no_plugin = NodeInfo { gpus: None, ..node };
        assert_eq!(
            spec_contradiction(&no_plugin, 8, 32, 131_072),
            None,
            "GPU count unchecked without the device plugin"
        );
    }

    #[test]
    fn offline_taint_keeps_the_others() {
        let other = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: Some("2026-11-26T23:00:42Z".into()),
        };
        let on = taints_with_offline(std::slice::from_ref(&other), true);
        assert_eq!(on, vec![other.clone(), Taint::offline()]);
        assert_eq!(taints_with_offline(&on, true), on, "idempotent");
        assert_eq!(taints_with_offline(&on, false), vec![other]);
    }
}
