//! How providers are filed in the placement index: one partition per offered GPU model (or the
//! mixed one), sorted by price; and what placement reads of each.

use chrono::{DateTime, Utc};

use crate::labels::gpu_model_label;
use crate::ledger::{init_ledger_ops, model_key};
use crate::messages::{Capacity, ProviderState, Registration, Spec};
use crate::provider::{attr, register_pending, ProviderRecord, Transition};
use crate::state::{ms, Cond, Op};

/// The placement index partition of providers whose offered GPUs are of more than one model
/// (placement reads it beside the model's own; a label value never holds a `+`).
pub const MIXED_MODELS: &str = "+mixed";

/// The placement index partition of a model: its key, lower case (placement compares models
/// regardless of case).
pub fn placement_key(model_key: &str) -> String {
    model_key.to_ascii_lowercase()
}

/// The placement index partition of a provider: the model of the GPUs it offers (the first
/// `capacity.gpu_count` of its spec, as the ledger counts them), or [`MIXED_MODELS`].
pub fn placement_partition(spec: &Spec, capacity: &Capacity) -> String {
    let offered = capacity.gpu_count.unwrap_or(spec.total_gpus) as usize;
    let mut models = spec
        .gpus
        .iter()
        .take(offered)
        .map(|g| placement_key(&model_key(&gpu_model_label(&g.name))));
    match models.next() {
        Some(first) if models.all(|m| m == first) => first,
        _ => MIXED_MODELS.to_string(),
    }
}

/// What placement reads of a provider (through either index): never the spec or the open
/// allocations. The placement index projects exactly these.
pub const PLACEMENT_ATTRS: &[&str] = &[
    attr::STATE,
    attr::NODE_NAME,
    attr::PRICE_MICROS,
    attr::LEDGER,
    attr::GPUS_TOTAL,
    attr::GPUS_FREE,
    attr::GPUS_USED,
    attr::GPUS_MINING,
    attr::CPU_TOTAL,
    attr::CPU_FREE,
    attr::CPU_USED,
    attr::MEM_TOTAL,
    attr::MEM_FREE,
    attr::MEM_USED,
];

/// The placement index partition of a stored provider, from its spec and offered capacity.
pub fn placement_partition_for(rec: &ProviderRecord) -> Option<String> {
    let spec: crate::messages::Spec = serde_json::from_str(&rec.spec_json).ok()?;
    let capacity: crate::messages::Capacity = serde_json::from_str(&rec.capacity_json).ok()?;
    Some(placement_partition(&spec, &capacity))
}

/// A provider written straight into `available`, last heartbeat at `hb` (node marks up to date),
/// with its capacity ledger when `ledger` is set: for benchmarks and tests that need a fleet
/// without sending each provider through every worker. Never used by a worker.
pub fn seed_available(reg: &Registration, hb: DateTime<Utc>, ledger: bool) -> Transition {
    let mut extra = vec![
        Op::set(attr::STATE, ProviderState::Available),
        Op::set(attr::HB_AT, ms(hb)),
        Op::set(attr::LAST_HB, ms(hb)),
        Op::set(attr::LABELLED_JOBS, 0i64),
        Op::set(attr::ANNOTATED_AT, ms(hb)),
        Op::set(attr::PLACE_MODEL, placement_partition(&reg.spec, &reg.capacity)),
    ];
    if ledger {
        extra.extend(init_ledger_ops(&reg.spec, &reg.capacity, reg.mining_config.as_ref()));
    }
    let mut ops: Vec<Op> = register_pending(reg, "0-0", hb)
        .ops
        .into_iter()
        .filter(|o| extra.iter().all(|e| e.path() != o.path()))
        .collect();
    ops.extend(extra);
    Transition::new(Cond::ItemNotExists, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider is filed under the one model of the GPUs it offers (lower case, as requests
    /// are matched), or under the mixed partition when those GPUs are of several models.
    #[test]
    fn providers_are_filed_under_the_model_they_offer() {
        let reg = crate::messages::sample_registration("p", "0x0", 2);
        let with = |names: [&str; 2], offered: u32| {
            let mut spec = reg.spec.clone();
            for (gpu, name) in spec.gpus.iter_mut().zip(names) {
                gpu.name = name.into();
            }
            let cap = Capacity {
                gpu_count: Some(offered),
                ..reg.capacity.clone()
            };
            placement_partition(&spec, &cap)
        };
        let table = [
            (["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"], 2, "rtx-4090"),
            (["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"], 2, MIXED_MODELS),
            (["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"], 1, "a100-sxm4-80gb"),
            (["Tesla T4", "tesla t4"], 2, "t4"),
        ];
        for (names, offered, want) in table {
            assert_eq!(with(names, offered), want, "{names:?} offering {offered}");
        }
        assert_eq!(
            placement_key(&model_key(&gpu_model_label("rtx 4090"))),
            "rtx-4090",
            "a request finds it"
        );
    }
}
