//! Placement: which provider a job goes to. The ranking is pure ([`rank`], [`rank_best`] over
//! [`Candidate`]s, by the job's [`Wants`]); [`partition`] says how providers are filed in the
//! placement index; [`index`] reads the index for a job, only as far as a better choice could lie.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::labels::{GPU_MODEL, PROVIDER_ID, RENTAL_TYPE, RENTAL_TYPE_GPU};
use crate::ledger::{model_key, Allocation, Ledger, ModelCounts};
use crate::messages::jobs::AllocateRequest;
use crate::state::ms;

pub mod index;
mod partition;

pub use partition::*;

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

impl Choice {
    /// The allocation this choice makes for `req`, held by `owner` (the claim token of the
    /// delivery placing it) from `now`.
    pub fn allocation(&self, req: &AllocateRequest, owner: &str, now: DateTime<Utc>) -> Allocation {
        Allocation {
            job_id: req.job_id.clone(),
            customer_id: req.customer_id.clone(),
            model_key: self.model_key.clone(),
            gpus: i64::from(req.gpus),
            mining_taken: self.take_mining,
            cpu: i64::from(req.cpu_cores),
            mem: req.memory_mb as i64,
            price_micros: self.price_micros,
            started_at_ms: ms(now),
            owner: owner.to_string(),
        }
    }
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
            model: req.gpu_model.as_deref().map(|m| model_key(&crate::labels::gpu_model_label(m))),
            cap: req.max_price_per_gpu_hour.map(crate::provider::price_to_micros),
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

/// The labels a job's pod selects its node with: built by the same label functions the recorder
/// labels nodes with, so the selector matches exactly the provider's own node.
pub fn node_selector(provider_id: &str, model_key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RENTAL_TYPE.to_string(), RENTAL_TYPE_GPU.to_string()),
        (PROVIDER_ID.to_string(), crate::labels::provider_id_label(provider_id)),
        (GPU_MODEL.to_string(), model_key.replace('_', ".")),
    ])
}

#[cfg(test)]
mod tests;
