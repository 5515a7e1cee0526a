//! The capacity ledger on each provider's item, placement, and job state — all pure: every
//! change is one condition + update on one item, run by a store.
//!
//! Invariants, after every write: per GPU model `total = free + used + mining`, and `used`,
//! CPU used and memory used each equal the sum over the provider's open allocations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::labels::{gpu_model_label, GPU_MODEL, PROVIDER_ID, RENTAL_TYPE, RENTAL_TYPE_GPU};
use crate::messages::jobs::AllocateRequest;
use crate::messages::{Capacity, MiningConfig, Spec};
use crate::state::providers::{ms, Transition};
use crate::state::{Cond, Item, Op, Value, INDEX_SORT_ATTR};

/// Attribute names of the capacity ledger on a provider's item. GPU maps are keyed by model key.
pub mod attr {
    /// `true` once the ledger is set up; absent while the provider has never been available.
    pub const LEDGER: &str = "ledger";
    /// Map model key → GPUs of that model offered (`free + used + mining`).
    pub const GPUS_TOTAL: &str = "gpus_total";
    /// Map model key → GPUs neither rented nor mining.
    pub const GPUS_FREE: &str = "gpus_free";
    /// Map model key → GPUs held by open allocations.
    pub const GPUS_USED: &str = "gpus_used";
    /// Map model key → GPUs mining while no job rents them.
    pub const GPUS_MINING: &str = "gpus_mining";
    /// CPU cores offered.
    pub const CPU_TOTAL: &str = "cpu_total";
    /// CPU cores not allocated.
    pub const CPU_FREE: &str = "cpu_free";
    /// CPU cores held by open allocations.
    pub const CPU_USED: &str = "cpu_used";
    /// Memory offered, in MiB.
    pub const MEM_TOTAL: &str = "mem_total";
    /// Memory not allocated, in MiB.
    pub const MEM_FREE: &str = "mem_free";
    /// Memory held by open allocations, in MiB.
    pub const MEM_USED: &str = "mem_used";
    /// Map job id → its open [`Allocation`](super::Allocation).
    pub const ALLOCS: &str = "allocs";
}

/// A model label as a map key: paths use `.` between keys, so it becomes `_`.
pub fn model_key(model_label: &str) -> String {
    model_label.replace('.', "_")
}

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
    "state",
    "node_name",
    "price_micros",
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

fn path(map: &str, key: &str) -> String {
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
    fn to_value(&self) -> Value {
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

/// An available provider as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Id of the available provider.
    pub provider_id: String,
    /// Its Kubernetes node.
    pub node_name: String,
    /// Its price per GPU-hour, in integer micro-units.
    pub price_micros: i64,
    /// Its capacity ledger, as last read.
    pub ledger: Ledger,
}

/// One way to place a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The provider to allocate on.
    pub provider_id: String,
    /// Its Kubernetes node.
    pub node_name: String,
    /// Model key of the GPUs to take.
    pub model_key: String,
    /// GPUs to take from the free pool (as many as there are, up to the job's count).
    pub take_free: i64,
    /// GPUs to take back from mining, once the free ones run short.
    pub take_mining: i64,
    /// The provider's price per GPU-hour, in integer micro-units (the first sort key).
    pub price_micros: i64,
    /// GPUs of the model left over after placing (best fit: fewest).
    pub leftover_gpus: i64,
    /// CPU cores left free after placing (the tie-break after leftover GPUs).
    pub leftover_cpu: i64,
}

/// Why nothing fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPlacement {
    /// No available provider has the requested GPU model (`unknown_model`).
    UnknownModel,
    /// The model is there, but only above the customer's price cap (`price_too_low`).
    PriceTooLow,
    /// Affordable providers of the model exist, but none has the GPUs, CPU and memory left on one node (`no_capacity`).
    NoCapacity,
}

impl NoPlacement {
    /// The stable reason code sent in `job.rejected`.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownModel => "unknown_model",
            Self::PriceTooLow => "price_too_low",
            Self::NoCapacity => "no_capacity",
        }
    }
}

/// Placement: candidates that fit the whole job on one node, with the model (compared through
/// the label function) and under the price cap; cheapest first, then best fit (least left over),
/// then free GPUs before mining ones.
pub fn rank(candidates: &[Candidate], req: &AllocateRequest) -> Result<Vec<Choice>, NoPlacement> {
    rank_best(candidates, req, usize::MAX)
}

/// A job's wants as placement compares them: the model's key (any when `None`), the price cap,
/// GPUs, CPU cores and memory.
#[derive(Debug, Clone)]
pub struct Wants {
    /// The wanted model's key; any model when `None`.
    pub model: Option<String>,
    /// The highest price per GPU-hour, in micro-units.
    pub cap: Option<i64>,
    /// GPUs.
    pub gpus: i64,
    /// CPU cores.
    pub cpu: i64,
    /// Memory, in MiB.
    pub mem: i64,
}

impl Wants {
    /// What `req` asks for.
    pub fn of(req: &AllocateRequest) -> Self {
        Self {
            model: req.gpu_model.as_deref().map(|m| model_key(&gpu_model_label(m))),
            cap: req.max_price_per_gpu_hour.map(crate::state::providers::price_to_micros),
            gpus: i64::from(req.gpus),
            cpu: i64::from(req.cpu_cores),
            mem: req.memory_mb as i64,
        }
    }

    /// Whether a ledger's `model` is the one wanted (compared through the label function, case
    /// aside).
    pub fn model_matches(&self, model: &str) -> bool {
        self.model.as_ref().is_none_or(|w| w.eq_ignore_ascii_case(model))
    }

    /// Whether `c` has the room on one node, in GPUs of `counts`' model (free or mining), CPU and
    /// memory.
    pub fn room(&self, c: &Candidate, counts: &ModelCounts) -> bool {
        counts.free + counts.mining >= self.gpus && c.ledger.cpu_free >= self.cpu && c.ledger.mem_free >= self.mem
    }

    /// Whether `c` can take the job: a wanted model with room, under the cap.
    pub fn fit(&self, c: &Candidate) -> bool {
        self.cap.is_none_or(|cap| c.price_micros <= cap) && c.ledger.models.iter().any(|(m, n)| self.model_matches(m) && self.room(c, n))
    }

    /// Whether `c` offers a wanted model at all.
    pub fn offered_by(&self, c: &Candidate) -> bool {
        c.ledger.models.keys().any(|m| self.model_matches(m))
    }
}

/// The `k` best of [`rank`]'s order, found without sorting (or copying) the whole fleet: the
/// allocator tries only a few before it reads the fleet again.
pub fn rank_best(candidates: &[Candidate], req: &AllocateRequest, k: usize) -> Result<Vec<Choice>, NoPlacement> {
    let wants = Wants::of(req);
    let gpus = wants.gpus;
    let (mut model_seen, mut affordable_seen) = (false, false);
    // (price, leftover GPUs, leftover CPU, GPUs from mining, provider id) and where it came from.
    type Key<'a> = ((i64, i64, i64, i64, &'a str), &'a Candidate, &'a String, i64);
    let mut fits: Vec<Key> = vec![];
    for c in candidates {
        for (model, counts) in &c.ledger.models {
            if !wants.model_matches(model) {
                continue;
            }
            model_seen = true;
            if wants.cap.is_some_and(|cap| c.price_micros > cap) {
                continue;
            }
            affordable_seen = true;
            if !wants.room(c, counts) {
                continue;
            }
            let take_free = gpus.min(counts.free);
            let key = (
                c.price_micros,
                counts.free + counts.mining - gpus,
                c.ledger.cpu_free - wants.cpu,
                gpus - take_free,
                c.provider_id.as_str(),
            );
            fits.push((key, c, model, take_free));
        }
    }
    if fits.is_empty() {
        return Err(if !model_seen {
            NoPlacement::UnknownModel
        } else if !affordable_seen {
            NoPlacement::PriceTooLow
        } else {
            NoPlacement::NoCapacity
        });
    }
    if k < fits.len() {
        fits.select_nth_unstable_by(k, |a, b| a.0.cmp(&b.0));
        fits.truncate(k);
    }
    fits.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(fits
        .into_iter()
        .map(
            |((price_micros, leftover_gpus, leftover_cpu, take_mining, _), c, model, take_free)| Choice {
                provider_id: c.provider_id.clone(),
                node_name: c.node_name.clone(),
                model_key: model.clone(),
                take_free,
                take_mining,
                price_micros,
                leftover_gpus,
                leftover_cpu,
            },
        )
        .collect())
}

/// The one conditional write that allocates: deducts everything, records the allocation under
/// the job id with its `owner` (the claim token of the delivery placing it; refused if the job
/// already holds one there), and requires the provider to be available with enough left.
pub fn commit_allocation(choice: &Choice, req: &AllocateRequest, owner: &str, now: DateTime<Utc>) -> Transition {
    let (gpus, cpu, mem) = (i64::from(req.gpus), i64::from(req.cpu_cores), req.memory_mb as i64);
    let m = &choice.model_key;
    let alloc_path = path(attr::ALLOCS, &req.job_id);
    let mut cond = Cond::eq("state", "available")
        .and(Cond::AttrNotExists(alloc_path.clone()))
        .and(Cond::Ge(attr::CPU_FREE.into(), cpu))
        .and(Cond::Ge(attr::MEM_FREE.into(), mem));
    let mut ops = vec![
        Op::Add(path(attr::GPUS_USED, m), gpus),
        Op::Add(attr::CPU_FREE.into(), -cpu),
        Op::Add(attr::CPU_USED.into(), cpu),
        Op::Add(attr::MEM_FREE.into(), -mem),
        Op::Add(attr::MEM_USED.into(), mem),
    ];
    if choice.take_free > 0 {
        cond = cond.and(Cond::Ge(path(attr::GPUS_FREE, m), choice.take_free));
        ops.push(Op::Add(path(attr::GPUS_FREE, m), -choice.take_free));
    }
    if choice.take_mining > 0 {
        cond = cond.and(Cond::Ge(path(attr::GPUS_MINING, m), choice.take_mining));
        ops.push(Op::Add(path(attr::GPUS_MINING, m), -choice.take_mining));
    }
    let alloc = Allocation {
        job_id: req.job_id.clone(),
        customer_id: req.customer_id.clone(),
        model_key: m.clone(),
        gpus,
        mining_taken: choice.take_mining,
        cpu,
        mem,
        price_micros: choice.price_micros,
        started_at_ms: ms(now),
        owner: owner.to_string(),
    };
    ops.push(Op::Set(alloc_path, alloc.to_value()));
    Transition { cond, ops }
}

/// The condition that the allocation of `job_id` is held by `owner` (an empty owner: an entry
/// that never recorded one).
fn owned_by(job_id: &str, owner: &str) -> Cond {
    let owner_path = format!("{}.owner", path(attr::ALLOCS, job_id));
    if owner.is_empty() {
        Cond::AttrNotExists(owner_path)
    } else {
        Cond::eq(&owner_path, owner)
    }
}

/// A takeover adopts what the old owner committed: the entry of `job_id` changes owner from
/// `old` to `new`, only if `old` still holds it (so the old owner's undo can no longer remove it,
/// and an undo that came first makes the adoption fail).
pub fn adopt_allocation(job_id: &str, old: &str, new: &str) -> Transition {
    Transition {
        cond: Cond::AttrExists(path(attr::ALLOCS, job_id)).and(owned_by(job_id, old)),
        ops: vec![Op::set(&format!("{}.owner", path(attr::ALLOCS, job_id)), new)],
    }
}

/// Returns exactly what the allocation took: mining GPUs go back to mining, the rest to free.
/// Conditional on the entry still having the owner it was read with, so an undo never removes
/// an entry that a takeover has adopted.
pub fn release_allocation(alloc: &Allocation) -> Transition {
    let m = &alloc.model_key;
    let mut ops = vec![
        Op::Remove(path(attr::ALLOCS, &alloc.job_id)),
        Op::Add(path(attr::GPUS_USED, m), -alloc.gpus),
        Op::Add(attr::CPU_FREE.into(), alloc.cpu),
        Op::Add(attr::CPU_USED.into(), -alloc.cpu),
        Op::Add(attr::MEM_FREE.into(), alloc.mem),
        Op::Add(attr::MEM_USED.into(), -alloc.mem),
    ];
    if alloc.gpus - alloc.mining_taken > 0 {
        ops.push(Op::Add(path(attr::GPUS_FREE, m), alloc.gpus - alloc.mining_taken));
    }
    if alloc.mining_taken > 0 {
        ops.push(Op::Add(path(attr::GPUS_MINING, m), alloc.mining_taken));
    }
    Transition {
        cond: Cond::AttrExists(path(attr::ALLOCS, &alloc.job_id)).and(owned_by(&alloc.job_id, &alloc.owner)),
        ops,
    }
}

/// GPUs × price per GPU-hour × duration, in integer micro-units, rounded half up. Exact: no
/// float ever enters the sum.
pub fn cost_micros(gpus: i64, price_micros: i64, duration_ms: i64) -> i64 {
    let num = i128::from(gpus) * i128::from(price_micros) * i128::from(duration_ms.max(0));
    ((num + 1_800_000) / 3_600_000) as i64
}

/// The labels a job's pod selects its node with: built by the same label functions the recorder
/// labels nodes with, so the selector matches exactly the provider's own node.
pub fn node_selector(provider_id: &str, model_key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RENTAL_TYPE.to_string(), RENTAL_TYPE_GPU.to_string()),
        (PROVIDER_ID.to_string(), crate::labels::provider_id_label(provider_id)),
        (GPU_MODEL.to_string(), model_key.replace('_', ".")),
    ])
}

/// Job items (the jobs table).
pub mod job {
    use super::*;
    use crate::messages::jobs::JobAllocated;

    /// A job's state, as stored in its item's `state` attribute (the jobs' index partition).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum JobState {
        /// Being placed by the delivery that owns the claim.
        Pending,
        /// Holding GPUs, CPU and memory on one provider; billed from `allocated_at`.
        Allocated,
        /// Refused with a reason (no capacity, price, model, request).
        Rejected,
        /// Ended: its resources given back, billed to `ended_at`.
        Released,
        /// Released before it was ever allocated: a tombstone that refuses the late allocate.
        Cancelled,
    }

    impl JobState {
        /// Every state.
        pub const ALL: [JobState; 5] = [Self::Pending, Self::Allocated, Self::Rejected, Self::Released, Self::Cancelled];

        /// The stored (and printed) name.
        pub fn as_str(self) -> &'static str {
            match self {
                Self::Pending => "pending",
                Self::Allocated => "allocated",
                Self::Rejected => "rejected",
                Self::Released => "released",
                Self::Cancelled => "cancelled",
            }
        }

        /// The state stored on a job item; `None` when absent or unknown.
        pub fn of(item: &Item) -> Option<Self> {
            let name = item.get(attr::STATE).and_then(Value::as_str)?;
            Self::ALL.into_iter().find(|s| s.as_str() == name)
        }
    }

    impl std::fmt::Display for JobState {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }

    impl From<JobState> for Value {
        fn from(s: JobState) -> Self {
            Value::from(s.as_str())
        }
    }

    /// Attribute names of a job item (key: the job id).
    pub mod attr {
        /// `pending`, `allocated`, `rejected`, `released` or `cancelled`; the partition key of the jobs' state index.
        pub const STATE: &str = "state";
        /// The `AllocateRequest`, as JSON.
        pub const REQUEST: &str = "request";
        /// The customer's id.
        pub const CUSTOMER: &str = "customer";
        /// When the item was created, in epoch ms.
        pub const CREATED_AT: &str = "created_at";
        /// Provider being tried while `pending`, so a redelivery can find a commit made there.
        pub const ATTEMPT: &str = "attempt";
        /// Provider the job was allocated on.
        pub const PROVIDER: &str = "provider";
        /// The `JobAllocated` answer, as JSON.
        pub const ALLOCATION: &str = "allocation";
        /// When the allocation was committed (billing starts), in epoch ms.
        pub const ALLOCATED_AT: &str = "allocated_at";
        /// `<reason>: <message>` of a rejected job, as answered.
        pub const REJECTION: &str = "rejection";
        /// `true` once the `job.allocated` / `job.rejected` answer has been published.
        pub const ANSWERED: &str = "answered";
        /// When the job ended (or was cancelled), in epoch ms.
        pub const ENDED_AT: &str = "ended_at";
        /// Why it ended: the release's reason, `expired`, `interrupted`, or a cancellation's reason.
        pub const END_REASON: &str = "end_reason";
        /// Billed duration, in ms.
        pub const DURATION_MS: &str = "duration_ms";
        /// Cost in integer micro-units (GPUs × price per GPU-hour × hours, rounded half up).
        pub const COST_MICROS: &str = "cost_micros";
        /// `true` once `job.released` has been published.
        pub const RELEASE_ANSWERED: &str = "release_answered";
        /// DynamoDB TTL in epoch seconds: a closed job is removed 90 days after it ended.
        pub const TTL: &str = "ttl";
        /// While `pending`: the claim token of the delivery placing the job. Unique per
        /// delivery; every write of the placement is conditional on it (fencing).
        pub const OWNER: &str = "owner";
        /// While `pending`: the key of the request being placed ([`super::claim_key`]), so a
        /// redelivery of the same message recognises its own claim and takes it at once.
        pub const CLAIM: &str = "claim";
        /// While `pending`: when the current owner claimed it, in epoch ms (also the index sort
        /// key, so the sweeper finds claims older than the lease).
        pub const CLAIMED_AT: &str = "claimed_at";
    }

    /// The key of a request: the same for every delivery of the same `job.allocate` message
    /// (and of an identical re-send), different for a different request under the same job id.
    pub fn claim_key(req: &AllocateRequest) -> String {
        use sha2::{Digest, Sha256};
        let body = serde_json::to_vec(req).expect("serialises");
        let digest = Sha256::digest(&body);
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The ops that record a claim by `owner` for the request `claim` at `now`; `hb_at` is the
    /// claim time while pending, so stale claims are found through the state index.
    fn claim_ops(claim: &str, owner: &str, now: DateTime<Utc>) -> Vec<Op> {
        vec![
            Op::set(attr::CLAIM, claim),
            Op::set(attr::OWNER, owner),
            Op::set(attr::CLAIMED_AT, ms(now)),
            Op::set(INDEX_SORT_ATTR, ms(now)),
        ]
    }

    /// The condition that the job is pending under `owner` (fencing for every placement write).
    pub fn owned_by(owner: &str) -> Cond {
        Cond::eq(attr::STATE, JobState::Pending).and(Cond::eq(attr::OWNER, owner))
    }

    /// Takes over a pending job from `old` (its owner as read; `None` for a claim without one):
    /// only while `old` still owns it and, with `stale_before`, only if its claim is older than
    /// that (epoch ms). After it, every write of the old owner fails its condition.
    pub fn take_claim(old: Option<&str>, stale_before: Option<i64>, claim: &str, owner: &str, now: DateTime<Utc>) -> Transition {
        let mut cond = Cond::eq(attr::STATE, JobState::Pending).and(match old {
            Some(o) => Cond::eq(attr::OWNER, o),
            None => Cond::AttrNotExists(attr::OWNER.into()),
        });
        if let Some(before) = stale_before {
            cond = cond.and(Cond::Or(vec![
                Cond::AttrNotExists(attr::CLAIMED_AT.into()),
                Cond::Lt(attr::CLAIMED_AT.into(), before),
            ]));
        }
        Transition {
            cond,
            ops: claim_ops(claim, owner, now),
        }
    }

    /// Job states: `pending` (placing), `allocated`, `rejected`, `released` (ended normally,
    /// expired or interrupted: see `end_reason`), `cancelled` (released before it was placed).
    /// Created claimed by `owner`, for the request `claim` ([`claim_key`]).
    pub fn create_pending(req: &AllocateRequest, claim: &str, owner: &str, now: DateTime<Utc>) -> Transition {
        let mut ops = vec![
            Op::set(attr::STATE, JobState::Pending),
            Op::set(attr::REQUEST, serde_json::to_string(req).expect("serialises")),
            Op::set(attr::CUSTOMER, req.customer_id.as_str()),
            Op::set(attr::CREATED_AT, ms(now)),
        ];
        ops.extend(claim_ops(claim, owner, now));
        Transition {
            cond: Cond::ItemNotExists,
            ops,
        }
    }

    /// Notes which provider is being tried, so a redelivery can find a commit that happened.
    pub fn attempt(provider_id: &str) -> Transition {
        Transition {
            cond: Cond::eq(attr::STATE, JobState::Pending),
            ops: vec![Op::set(attr::ATTEMPT, provider_id)],
        }
    }

    /// `pending → allocated`; a job with a duration gets its due time on the state index.
    pub fn allocated(a: &JobAllocated, started_at_ms: i64, due_at_ms: Option<i64>) -> Transition {
        let mut ops = vec![
            Op::set(attr::STATE, JobState::Allocated),
            Op::set(attr::PROVIDER, a.provider_id.as_str()),
            Op::set(attr::ALLOCATION, serde_json::to_string(a).expect("serialises")),
            Op::set(attr::ALLOCATED_AT, started_at_ms),
        ];
        // The sort key held the claim time while pending; allocated, it is the due time or absent.
        ops.push(match due_at_ms {
            Some(due) => Op::set(INDEX_SORT_ATTR, due),
            None => Op::Remove(INDEX_SORT_ATTR.into()),
        });
        Transition {
            cond: Cond::eq(attr::STATE, JobState::Pending),
            ops,
        }
    }

    /// `pending → rejected`, keeping `<reason>: <message>` for the answer.
    pub fn rejected(reason: &str, message: &str) -> Transition {
        Transition {
            cond: Cond::eq(attr::STATE, JobState::Pending),
            ops: vec![
                Op::set(attr::STATE, JobState::Rejected),
                Op::set(attr::REJECTION, format!("{reason}: {message}")),
                Op::Remove(INDEX_SORT_ATTR.into()),
            ],
        }
    }

    /// `pending → cancelled`: a release met a job whose placement never committed.
    pub fn cancelled_while_pending(reason: &str, now: DateTime<Utc>) -> Transition {
        Transition {
            cond: Cond::eq(attr::STATE, JobState::Pending),
            ops: vec![
                Op::set(attr::STATE, JobState::Cancelled),
                Op::set(attr::END_REASON, reason),
                Op::set(attr::ENDED_AT, ms(now)),
                Op::Remove(INDEX_SORT_ATTR.into()),
            ],
        }
    }

    /// Marks the answer flag `which` ([`attr::ANSWERED`] or [`attr::RELEASE_ANSWERED`]) as published.
    pub fn answered(which: &str) -> Transition {
        Transition {
            cond: Cond::ItemExists,
            ops: vec![Op::set(which, true)],
        }
    }

    /// A release for a job never seen: it can never be allocated afterwards.
    pub fn cancelled_before_allocation(reason: &str, now: DateTime<Utc>) -> Transition {
        Transition {
            cond: Cond::ItemNotExists,
            ops: vec![
                Op::set(attr::STATE, JobState::Cancelled),
                Op::set(attr::END_REASON, reason),
                Op::set(attr::ENDED_AT, ms(now)),
                Op::set(attr::CREATED_AT, ms(now)),
            ],
        }
    }

    /// `allocated → released`, with duration and exact cost; off the due index.
    pub fn closed(reason: &str, ended_at_ms: i64, duration_ms: i64, cost: i64) -> Transition {
        Transition {
            cond: Cond::eq(attr::STATE, JobState::Allocated),
            ops: vec![
                Op::set(attr::STATE, JobState::Released),
                Op::set(attr::END_REASON, reason),
                Op::set(attr::ENDED_AT, ended_at_ms),
                Op::set(attr::DURATION_MS, duration_ms),
                Op::set(attr::COST_MICROS, cost),
                Op::Remove(INDEX_SORT_ATTR.into()),
                // DynamoDB's TTL (epoch seconds) removes closed jobs 90 days after they end.
                Op::set(attr::TTL, ended_at_ms / 1000 + 90 * 86_400),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::expr::{apply, eval};

    /// Labeler and selector agree, and two accepted ids that a collapsing label function would
    /// merge (`a--b` and `a-b`) select different nodes.
    #[test]
    fn the_selector_matches_exactly_the_providers_own_node_labels() {
        for id in [
            "550e8400-e29b-41d4-a716-446655440000",
            "550e8400--e29b-41d4-a716-446655440000",
            "sim-provider-00001",
        ] {
            crate::validation::check_provider_id(id).unwrap();
            let node = crate::labels::provider_node_labels(id, "NVIDIA GeForce RTX 4090", 4);
            let model_key = node[GPU_MODEL].replace('.', "_");
            let selector = node_selector(id, &model_key);
            for (k, v) in &selector {
                assert_eq!(node.get(k), Some(v), "{id}: {k}");
            }
        }
        let a = node_selector("550e8400-e29b-41d4-a716-446655440000", "RTX-4090");
        let b = node_selector("550e8400--e29b-41d4-a716-446655440000", "RTX-4090");
        assert_ne!(a[PROVIDER_ID], b[PROVIDER_ID]);
    }

    #[test]
    fn job_states_round_trip_through_the_stored_name() {
        for state in job::JobState::ALL {
            let item: Item = [(job::attr::STATE.to_string(), Value::from(state))].into_iter().collect();
            assert_eq!(job::JobState::of(&item), Some(state), "{state}");
        }
        let unknown: Item = [(job::attr::STATE.to_string(), Value::from("placing"))].into_iter().collect();
        assert_eq!(job::JobState::of(&unknown), None);
        assert_eq!(job::JobState::of(&Item::new()), None);
    }

    fn req(gpus: u32, model: Option<&str>, cap: Option<f64>) -> AllocateRequest {
        AllocateRequest {
            job_id: "job-1".into(),
            customer_id: "c".into(),
            gpu_model: model.map(str::to_string),
            gpus,
            cpu_cores: 4,
            memory_mb: 8192,
            max_price_per_gpu_hour: cap,
            duration_s: None,
        }
    }

    fn cand(id: &str, model: &str, free: i64, mining: i64, price: f64) -> Candidate {
        Candidate {
            provider_id: id.into(),
            node_name: id.into(),
            price_micros: crate::state::providers::price_to_micros(price),
            ledger: Ledger {
                models: BTreeMap::from([(
                    model.into(),
                    ModelCounts {
                        total: free + mining,
                        free,
                        used: 0,
                        mining,
                    },
                )]),
                cpu_total: 32,
                cpu_free: 32,
                mem_total: 65536,
                mem_free: 65536,
                ..Default::default()
            },
        }
    }

    #[test]
    fn placement_order_and_reasons() {
        let c = vec![
            cand("expensive", "RTX-4090", 8, 0, 2.0),
            cand("cheap-big", "RTX-4090", 8, 0, 0.5),
            cand("cheap-tight", "RTX-4090", 2, 0, 0.5),
            cand("cheap-mining", "RTX-4090", 0, 2, 0.5),
            cand("t4", "T4", 4, 0, 0.1),
        ];
        let order = |r: &AllocateRequest| rank(&c, r).unwrap().into_iter().map(|ch| ch.provider_id).collect::<Vec<_>>();
        let table: Vec<(AllocateRequest, Result<Vec<&str>, NoPlacement>)> = vec![
            // Cheapest, then least left over, then free before mining.
            (
                req(2, Some("NVIDIA GeForce RTX 4090"), None),
                Ok(vec!["cheap-tight", "cheap-mining", "cheap-big", "expensive"]),
            ),
            (
                req(2, Some("rtx-4090"), Some(1.0)),
                Ok(vec!["cheap-tight", "cheap-mining", "cheap-big"]),
            ),
            (req(4, Some("RTX 4090"), None), Ok(vec!["cheap-big", "expensive"])),
            (
                req(1, None, None),
                Ok(vec!["t4", "cheap-tight", "cheap-mining", "cheap-big", "expensive"]),
            ),
            (req(2, Some("A100"), None), Err(NoPlacement::UnknownModel)),
            (req(2, Some("RTX-4090"), Some(0.25)), Err(NoPlacement::PriceTooLow)),
            (req(9, Some("RTX-4090"), None), Err(NoPlacement::NoCapacity)),
        ];
        for (r, want) in table {
            let got = match rank(&c, &r) {
                Ok(_) => Ok(order(&r)),
                Err(e) => Err(e),
            };
            assert_eq!(got, want.map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>()), "{r:?}");
        }
        let mining = rank(&c, &req(2, Some("RTX-4090"), None))
            .unwrap()
            .into_iter()
            .find(|ch| ch.provider_id == "cheap-mining")
            .unwrap();
        assert_eq!((mining.take_free, mining.take_mining), (0, 2));
    }

    #[test]
    fn the_best_few_are_the_head_of_the_whole_order() {
        // Ties on price and fit among many, so the order's later keys decide too.
        let fleet: Vec<Candidate> = (0..300)
            .map(|n| {
                cand(
                    &format!("p{:03}", (n * 7919) % 300),
                    "RTX-4090",
                    1 + n % 4,
                    n % 3,
                    1.0 + (n % 5) as f64,
                )
            })
            .collect();
        for r in [req(1, None, None), req(2, Some("RTX-4090"), Some(3.0)), req(4, None, None)] {
            let all = rank(&fleet, &r).unwrap();
            for k in [0, 1, 5, 299, 10_000] {
                let best = rank_best(&fleet, &r, k).unwrap();
                let head: Vec<_> = all.iter().take(k).map(|c| (&c.provider_id, c.take_mining)).collect();
                let got: Vec<_> = best.iter().map(|c| (&c.provider_id, c.take_mining)).collect();
                assert_eq!(got, head, "k {k} {r:?}");
            }
            // The placement index's filter agrees with the ranking, one candidate at a time.
            let wants = Wants::of(&r);
            for c in &fleet {
                assert_eq!(
                    wants.fit(c),
                    rank_best(std::slice::from_ref(c), &r, 1).is_ok(),
                    "{} {r:?}",
                    c.provider_id
                );
            }
        }
    }

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

    #[test]
    fn allocate_and_release_keep_the_invariants() {
        use crate::messages::MiningConfig;
        // 4 GPUs, 32 cores, 128 GiB.
        let spec = crate::messages::sample_registration("p", "0x0", 4).spec;
        let cap = Capacity {
            gpu_count: Some(4),
            cpu_cores: Some(24),
            memory_mb: Some(100_000),
            gpu_price_per_hour: 0.5,
            cpu_price_per_hour: None,
        };
        let mining = MiningConfig {
            image: None,
            gpu_count: 1,
            cpu_cores: None,
            memory_mb: None,
            wallet_address: None,
        };
        let mut item = apply(None, "id", "p", &[Op::set("state", "available")]).unwrap();
        item = apply(Some(&item), "id", "p", &init_ledger_ops(&spec, &cap, Some(&mining))).unwrap();
        let l = Ledger::from_item(&item).unwrap();
        assert_eq!(
            l.models["RTX-4090"],
            ModelCounts {
                total: 4,
                free: 3,
                used: 0,
                mining: 1
            }
        );
        assert_eq!((l.cpu_free, l.mem_free), (24, 100_000));
        assert!(l.violations().is_empty());
        let c = Candidate {
            provider_id: "p".into(),
            node_name: "h".into(),
            price_micros: 500_000,
            ledger: l,
        };
        let r = AllocateRequest {
            gpus: 4,
            ..req(4, None, None)
        };
        let choice = rank(&[c], &r).unwrap().remove(0);
        assert_eq!((choice.take_free, choice.take_mining), (3, 1), "rentals take GPUs back from mining");
        let t = commit_allocation(&choice, &r, "owner-1", Utc::now());
        assert!(eval(&t.cond, Some(&item)));
        let after = apply(Some(&item), "id", "p", &t.ops).unwrap();
        assert!(!eval(&t.cond, Some(&after)), "the same job cannot be allocated twice");
        let l = Ledger::from_item(&after).unwrap();
        assert_eq!(
            l.models["RTX-4090"],
            ModelCounts {
                total: 4,
                free: 0,
                used: 4,
                mining: 0
            }
        );
        assert!(l.violations().is_empty(), "{:?}", l.violations());
        let alloc = l.allocs["job-1"].clone();
        let rel = release_allocation(&alloc);
        let back = apply(Some(&after), "id", "p", &rel.ops).unwrap();
        assert!(!eval(&rel.cond, Some(&back)), "release is once");
        let l = Ledger::from_item(&back).unwrap();
        assert_eq!(
            l.models["RTX-4090"],
            ModelCounts {
                total: 4,
                free: 3,
                used: 0,
                mining: 1
            },
            "mining resumes on what was taken"
        );
        assert!(l.violations().is_empty());
    }
}
