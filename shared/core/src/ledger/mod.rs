//! The capacity ledger on each provider's item: what it offers, what is free, rented and mining,
//! and its open allocations. Pure: every change is one condition + update on the provider's item
//! (see [`allocation`](self::commit_allocation) for the writes that take and give back).
//!
//! Invariants, after every write: per GPU model `total = free + used + mining`, and `used`,
//! CPU used and memory used each equal the sum over the provider's open allocations.

use std::collections::BTreeMap;

use crate::labels::gpu_model_label;
use crate::messages::{Capacity, MiningConfig, Spec};
use crate::provider::{attr, ProviderRecord};
use crate::state::{Item, Op, Value};

mod allocation;

pub use allocation::*;

/// A model label as a map key: paths use `.` between keys, so it becomes `_`.
pub fn model_key(model_label: &str) -> String {
    model_label.replace('.', "_")
}

pub(crate) fn path(map: &str, key: &str) -> String {
    format!("{map}.{key}")
}

/// The ledger as set up when a provider becomes available: from the offered capacity (not the
/// raw spec), with the mining share from `mining_config`.
pub fn init_ledger_ops(spec: &Spec, capacity: &Capacity, mining: Option<&MiningConfig>) -> Vec<Op> {
    let offered = capacity.gpu_count.unwrap_or(spec.total_gpus) as usize;
    let mut total: BTreeMap<String, i64> = BTreeMap::new();
    for gpu in spec.gpus.iter().take(offered) {
        *total.entry(model_key(&gpu_model_label(&gpu.name))).or_default() += 1;
    }
    let mut to_mine = i64::from(mining.map_or(0, |m| m.gpu_count));
    let mut mining_map = BTreeMap::new();
    let mut free = BTreeMap::new();
    for (model, n) in &total {
        let m = to_mine.min(*n);
        to_mine -= m;
        mining_map.insert(model.clone(), Value::N(m));
        free.insert(model.clone(), Value::N(n - m));
    }
    let zero: BTreeMap<String, Value> = total.keys().map(|k| (k.clone(), Value::N(0))).collect();
    let cpu = i64::from(capacity.cpu_cores.unwrap_or(spec.cpu_cores));
    let mem = capacity.memory_mb.unwrap_or(spec.total_memory_mb) as i64;
    vec![
        Op::set(attr::LEDGER, true),
        Op::Set(
            attr::GPUS_TOTAL.into(),
            Value::M(total.into_iter().map(|(k, v)| (k, Value::N(v))).collect()),
        ),
        Op::Set(attr::GPUS_FREE.into(), Value::M(free)),
        Op::Set(attr::GPUS_USED.into(), Value::M(zero)),
        Op::Set(attr::GPUS_MINING.into(), Value::M(mining_map)),
        Op::set(attr::CPU_TOTAL, cpu),
        Op::set(attr::CPU_FREE, cpu),
        Op::set(attr::CPU_USED, 0i64),
        Op::set(attr::MEM_TOTAL, mem),
        Op::set(attr::MEM_FREE, mem),
        Op::set(attr::MEM_USED, 0i64),
        Op::Set(attr::ALLOCS.into(), Value::M(BTreeMap::new())),
    ]
}

/// The ledger set-up for a stored provider: from its offered capacity and mining config.
pub fn ledger_for(rec: &ProviderRecord) -> Option<Vec<Op>> {
    let spec: crate::messages::Spec = serde_json::from_str(&rec.spec_json).ok()?;
    let capacity: crate::messages::Capacity = serde_json::from_str(&rec.capacity_json).ok()?;
    let mining: Option<crate::messages::MiningConfig> = serde_json::from_str(&rec.mining_json).ok();
    Some(init_ledger_ops(&spec, &capacity, mining.as_ref()))
}

/// One open allocation, as stored under `allocs.<job_id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The job holding it (its key under `allocs`).
    pub job_id: String,
    /// The job's customer.
    pub customer_id: String,
    /// Model key of the GPUs taken (the model label, `.` written as `_`).
    pub model_key: String,
    /// GPUs taken in all, free ones plus mining ones.
    pub gpus: i64,
    /// Of those, GPUs taken from mining; the release gives them back to mining.
    pub mining_taken: i64,
    /// CPU cores taken.
    pub cpu: i64,
    /// Memory taken, in MiB.
    pub mem: i64,
    /// The provider's price per GPU-hour when it was committed, in integer micro-units.
    pub price_micros: i64,
    /// When it was committed, in epoch ms.
    pub started_at_ms: i64,
    /// The claim token of the delivery that holds it (empty for an entry written before owners
    /// were recorded). An undo removes only an entry it owns; a takeover re-owns the entry.
    pub owner: String,
}

impl Allocation {
    pub(crate) fn to_value(&self) -> Value {
        Value::M(BTreeMap::from([
            ("customer".to_string(), Value::from(self.customer_id.as_str())),
            ("model".to_string(), Value::from(self.model_key.as_str())),
            ("gpus".to_string(), Value::N(self.gpus)),
            ("mining_taken".to_string(), Value::N(self.mining_taken)),
            ("cpu".to_string(), Value::N(self.cpu)),
            ("mem".to_string(), Value::N(self.mem)),
            ("price_micros".to_string(), Value::N(self.price_micros)),
            ("started_at".to_string(), Value::N(self.started_at_ms)),
            ("owner".to_string(), Value::from(self.owner.as_str())),
        ]))
    }

    fn from_value(job_id: &str, v: &Value) -> Option<Self> {
        let m = v.as_map()?;
        let n = |k: &str| m.get(k).and_then(Value::as_i64);
        Some(Self {
            job_id: job_id.to_string(),
            customer_id: m.get("customer")?.as_str()?.to_string(),
            model_key: m.get("model")?.as_str()?.to_string(),
            gpus: n("gpus")?,
            mining_taken: n("mining_taken")?,
            cpu: n("cpu")?,
            mem: n("mem")?,
            price_micros: n("price_micros")?,
            started_at_ms: n("started_at")?,
            owner: m.get("owner").and_then(Value::as_str).unwrap_or("").to_string(),
        })
    }
}

/// Counts of one GPU model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelCounts {
    /// GPUs of the model offered; always `free + used + mining`.
    pub total: i64,
    /// Idle GPUs: neither rented nor mining.
    pub free: i64,
    /// GPUs rented to open allocations.
    pub used: i64,
    /// GPUs mining while no job rents them.
    pub mining: i64,
}

/// A provider's ledger, read from its item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// GPU counts per model key.
    pub models: BTreeMap<String, ModelCounts>,
    /// CPU cores offered.
    pub cpu_total: i64,
    /// CPU cores not allocated.
    pub cpu_free: i64,
    /// CPU cores held by open allocations.
    pub cpu_used: i64,
    /// Memory offered, in MiB.
    pub mem_total: i64,
    /// Memory not allocated, in MiB.
    pub mem_free: i64,
    /// Memory held by open allocations, in MiB.
    pub mem_used: i64,
    /// Open allocations by job id.
    pub allocs: BTreeMap<String, Allocation>,
}

impl Ledger {
    /// `None` when the provider has no ledger (never available yet).
    pub fn from_item(item: &Item) -> Option<Self> {
        item.get(attr::LEDGER)?;
        let n = |a: &str| item.get(a).and_then(Value::as_i64).unwrap_or(0);
        let map = |a: &str| item.get(a).and_then(Value::as_map).cloned().unwrap_or_default();
        let (total, free, used, mining) = (
            map(attr::GPUS_TOTAL),
            map(attr::GPUS_FREE),
            map(attr::GPUS_USED),
            map(attr::GPUS_MINING),
        );
        let get = |m: &BTreeMap<String, Value>, k: &str| m.get(k).and_then(Value::as_i64).unwrap_or(0);
        let models = total
            .keys()
            .chain(free.keys())
            .chain(used.keys())
            .chain(mining.keys())
            .map(|k| {
                (
                    k.clone(),
                    ModelCounts {
                        total: get(&total, k),
                        free: get(&free, k),
                        used: get(&used, k),
                        mining: get(&mining, k),
                    },
                )
            })
            .collect();
        let allocs = map(attr::ALLOCS)
            .iter()
            .filter_map(|(job, v)| Allocation::from_value(job, v).map(|a| (job.clone(), a)))
            .collect();
        Some(Self {
            models,
            cpu_total: n(attr::CPU_TOTAL),
            cpu_free: n(attr::CPU_FREE),
            cpu_used: n(attr::CPU_USED),
            mem_total: n(attr::MEM_TOTAL),
            mem_free: n(attr::MEM_FREE),
            mem_used: n(attr::MEM_USED),
            allocs,
        })
    }

    /// Every broken invariant, in words (empty when the ledger is sound).
    pub fn violations(&self) -> Vec<String> {
        let mut out = vec![];
        for (model, c) in &self.models {
            if c.total != c.free + c.used + c.mining {
                out.push(format!(
                    "{model}: total {} != free {} + used {} + mining {}",
                    c.total, c.free, c.used, c.mining
                ));
            }
            if c.free < 0 || c.used < 0 || c.mining < 0 {
                out.push(format!("{model}: a negative count ({c:?})"));
            }
            let allocated: i64 = self.allocs.values().filter(|a| &a.model_key == model).map(|a| a.gpus).sum();
            if c.used != allocated {
                out.push(format!("{model}: used {} != {} GPUs in open allocations", c.used, allocated));
            }
        }
        let (cpu, mem): (i64, i64) = (self.allocs.values().map(|a| a.cpu).sum(), self.allocs.values().map(|a| a.mem).sum());
        if self.cpu_total != self.cpu_free + self.cpu_used || self.cpu_used != cpu || self.cpu_free < 0 {
            out.push(format!(
                "cpu: total {} free {} used {} allocated {cpu}",
                self.cpu_total, self.cpu_free, self.cpu_used
            ));
        }
        if self.mem_total != self.mem_free + self.mem_used || self.mem_used != mem || self.mem_free < 0 {
            out.push(format!(
                "memory: total {} free {} used {} allocated {mem}",
                self.mem_total, self.mem_free, self.mem_used
            ));
        }
        out
    }
}

/// GPUs × price per GPU-hour × duration, in integer micro-units, rounded half up. Exact: no
/// float ever enters the sum.
pub fn cost_micros(gpus: i64, price_micros: i64, duration_ms: i64) -> i64 {
    let num = i128::from(gpus) * i128::from(price_micros) * i128::from(duration_ms.max(0));
    ((num + 1_800_000) / 3_600_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact() {
        let table = [
            (1, 500_000, 3_600_000, 500_000),                 // 1 GPU, 0.5/h, 1 h
            (4, 1_990_000, 1_800_000, 3_980_000),             // 4 GPUs, 1.99/h, 30 min
            (3, 333_333, 1, 0),                               // a millisecond rounds to nothing
            (3, 333_333, 7_777_777, 2_160_491),               // 999999 × 7777777 / 3.6e6 = 2160491.45…
            (8, 10_000_000, 86_400_000 * 30, 57_600_000_000), // a month on 8 GPUs at 10/h
            (1, 1, 1_800_000, 1),                             // half a micro rounds up
            (2, 750_000, -5, 0),                              // a clock going back bills nothing
        ];
        for (g, p, d, want) in table {
            assert_eq!(cost_micros(g, p, d), want, "{g} × {p} × {d} ms");
        }
    }
}
