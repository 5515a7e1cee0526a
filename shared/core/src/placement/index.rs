//! Reading the available fleet for a job: through the placement index (partitioned by model,
//! sorted by price) for a job that names its model, only as far as a better choice could lie;
//! over every available provider for one that takes any model. A read serves the same shape of
//! job for [`RECENT`], to order candidates only: the conditional write decides, and a refusal is
//! always checked against a fresh read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{placement_key, rank_best, Candidate, Choice, NoPlacement, Wants, MIXED_MODELS, PLACEMENT_ATTRS};
use crate::ledger::Ledger;
use crate::messages::jobs::AllocateRequest;
use crate::messages::ProviderState;
use crate::provider::attr;
use crate::state::{Item, ItemStore, PlacementCursor, PlacementQuery, StoreResult, Table, Value, KEY_ATTR};

/// How many of the best choices a ranking gives (an allocation tries them in turn).
pub const BEST_FEW: usize = 5;
/// Index items one read of the placement index asks for.
pub const PAGE: usize = 100;
/// Placement stops looking for a better fit once it has read this many index items of a partition
/// and holds a candidate: the cheapest come first exactly; among those at the same price, best fit
/// is judged within what was read.
pub const READ_BUDGET: usize = 1_000;
/// How long a read serves placement before it is read again.
pub const RECENT: Duration = Duration::from_millis(100);
/// At most this many shapes of job are remembered (each for [`RECENT`]).
const MAX_REMEMBERED: usize = 256;

/// A ranking: the best few choices, or why nothing fits.
pub type Ranking = Result<Vec<Choice>, NoPlacement>;

/// A job's shape as the placement index is read for it: partition, price cap, GPUs, CPU, memory.
type Shape = (String, Option<i64>, u32, u32, u64);

/// What reading the placement index found: the providers that can take the job, and whether any
/// available provider of the model was read at all.
#[derive(Default)]
struct Found {
    fits: Vec<Candidate>,
    model_seen: bool,
}

/// The recent reads placement reuses: the whole available fleet, and what the index gave for each
/// recent shape of job. Process memory, never the truth: losing it costs one read.
#[derive(Default)]
pub struct Placer {
    fleet: Mutex<Option<(Instant, Arc<Vec<Candidate>>)>>,
    shapes: Mutex<HashMap<Shape, (Instant, Arc<Found>)>>,
}

impl Placer {
    /// The best few choices for `req`, or why there is none: through the placement index for a
    /// job naming its model, over the whole available fleet for one taking any; either may reuse
    /// a recent read in the first `round`, but never to refuse.
    pub async fn ranking(&self, store: &dyn ItemStore, req: &AllocateRequest, round: usize) -> StoreResult<Ranking> {
        if req.gpu_model.is_some() {
            let ranked = self.ranked_by_index(store, req, round > 0).await?;
            if ranked.is_err() && round == 0 {
                return self.ranked_by_index(store, req, true).await;
            }
            return Ok(ranked);
        }
        let ranked = rank_best(&self.fleet(store, round > 0).await?, req, BEST_FEW);
        if ranked.is_err() && round == 0 {
            return Ok(rank_best(&self.fleet(store, true).await?, req, BEST_FEW));
        }
        Ok(ranked)
    }

    /// The available providers with a ledger, from the recent read when `fresh` is not required.
    async fn fleet(&self, store: &dyn ItemStore, fresh: bool) -> StoreResult<Arc<Vec<Candidate>>> {
        if !fresh {
            if let Some((at, fleet)) = lock(&self.fleet).as_ref() {
                if at.elapsed() < RECENT {
                    return Ok(fleet.clone());
                }
            }
        }
        // Only what placement needs: not the spec, not the open allocations.
        let items = store
            .query_by_state_projected(Table::Providers, ProviderState::Available.as_str(), None, PLACEMENT_ATTRS)
            .await?;
        let fleet = Arc::new(items.iter().filter_map(candidate).collect::<Vec<_>>());
        *lock(&self.fleet) = Some((Instant::now(), fleet.clone()));
        Ok(fleet)
    }

    /// The best few choices for a job that names its model, read through the placement index: the
    /// model's partition and the mixed one, cheapest first; or why there is none.
    async fn ranked_by_index(&self, store: &dyn ItemStore, req: &AllocateRequest, fresh: bool) -> StoreResult<Ranking> {
        let wants = Wants::of(req);
        let (key, cap) = (placement_key(wants.model.as_deref().unwrap_or_default()), wants.cap);
        let shape: Shape = (key.clone(), cap, req.gpus, req.cpu_cores, req.memory_mb);
        let recent = if fresh { None } else { self.recent(&shape) };
        let found = match recent {
            Some(found) => found,
            None => {
                let found = Arc::new(read_index(store, req, &key, cap).await?);
                self.remember(shape, found.clone());
                found
            }
        };
        Ok(match rank_best(&found.fits, req, BEST_FEW) {
            Ok(ranked) => Ok(ranked),
            Err(_) if found.model_seen => Err(NoPlacement::NoCapacity),
            Err(_) if cap.is_some() && model_available(store, req, &key).await? => Err(NoPlacement::PriceTooLow),
            Err(_) => Err(NoPlacement::UnknownModel),
        })
    }

    fn recent(&self, shape: &Shape) -> Option<Arc<Found>> {
        lock(&self.shapes)
            .get(shape)
            .filter(|(at, _)| at.elapsed() < RECENT)
            .map(|(_, f)| f.clone())
    }

    fn remember(&self, shape: Shape, found: Arc<Found>) {
        let mut shapes = lock(&self.shapes);
        if shapes.len() >= MAX_REMEMBERED {
            shapes.retain(|_, (at, _)| at.elapsed() < RECENT);
            if shapes.len() >= MAX_REMEMBERED {
                shapes.clear();
            }
        }
        shapes.insert(shape, (Instant::now(), found));
    }
}

/// A cache lock; a poisoned one (a panic while holding it) is still only a cache.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A provider item as placement reads it; `None` when it has no ledger yet.
fn candidate(item: &Item) -> Option<Candidate> {
    Some(Candidate {
        provider_id: item.get(KEY_ATTR)?.as_str()?.to_string(),
        node_name: item.get(attr::NODE_NAME)?.as_str()?.to_string(),
        price_micros: item.get(attr::PRICE_MICROS).and_then(Value::as_i64)?,
        ledger: Ledger::from_item(item)?,
    })
}

/// The model's partition and the mixed one, read for `req` under `cap`.
async fn read_index(store: &dyn ItemStore, req: &AllocateRequest, key: &str, cap: Option<i64>) -> StoreResult<Found> {
    // Each partition read on its own stops exactly (what it leaves unread costs more than the
    // few best it holds). The mixed one is read only up to the price of the model's own few
    // best: nothing dearer could make the cut.
    let mut found = read_partition(store, req, key, cap).await?;
    let mixed_cap = match rank_best(&found.fits, req, BEST_FEW) {
        Ok(best) if best.len() >= BEST_FEW => best.last().map(|c| cap.map_or(c.price_micros, |cap| cap.min(c.price_micros))),
        _ => cap,
    };
    let mixed = read_partition(store, req, MIXED_MODELS, mixed_cap).await?;
    found.fits.extend(mixed.fits);
    found.model_seen |= mixed.model_seen;
    Ok(found)
}

/// Reads one partition page by page, until the end, or until it holds [`BEST_FEW`] fits and
/// every provider not read costs more than the last of them, or until the read budget is spent
/// with at least one fit in hand (read cheapest first, every fit found costs no more than any
/// provider not read). Only a partition with no fit at all is read to its end (under the cap):
/// the index holds available providers only, so that is the model's available fleet. The walk
/// relies on the index's sort key being the price: pages come cheapest first.
async fn read_partition(store: &dyn ItemStore, req: &AllocateRequest, partition: &str, cap: Option<i64>) -> StoreResult<Found> {
    let (mut after, mut read, mut found) = (None, 0, Found::default());
    let wants = Wants::of(req);
    loop {
        let (candidates, items_read, next) = available_page(store, partition, cap, after.as_ref()).await?;
        read += items_read;
        for c in candidates.into_iter().filter(|c| wants.offered_by(c)) {
            found.model_seen = true;
            if wants.fit(&c) {
                found.fits.push(c);
            }
        }
        let Some(next) = next else { return Ok(found) };
        if let Ok(best) = rank_best(&found.fits, req, BEST_FEW) {
            let last = best.last().map_or(i64::MAX, |c| c.price_micros);
            if (best.len() >= BEST_FEW && next.price_micros > last) || read >= READ_BUDGET {
                return Ok(found);
            }
        }
        after = Some(next);
    }
}

/// One page of a placement index partition: its available providers as candidates, the index
/// items read, and where to go on.
async fn available_page(
    store: &dyn ItemStore,
    partition: &str,
    cap: Option<i64>,
    after: Option<&PlacementCursor>,
) -> StoreResult<(Vec<Candidate>, usize, Option<PlacementCursor>)> {
    let query = PlacementQuery {
        model: partition,
        state: ProviderState::Available.as_str(),
        max_price_micros: cap,
        after,
        limit: PAGE,
        attrs: PLACEMENT_ATTRS,
    };
    let page = store.placement_page(&query).await?;
    Ok((page.items.iter().filter_map(candidate).collect(), page.read, page.next))
}

/// Whether an available provider of the job's model is there at any price (looked for within the
/// read budget): tells `price_too_low` from `unknown_model`.
async fn model_available(store: &dyn ItemStore, req: &AllocateRequest, key: &str) -> StoreResult<bool> {
    let wants = Wants::of(req);
    for partition in [key, MIXED_MODELS] {
        let (mut after, mut read) = (None, 0);
        while read < READ_BUDGET {
            let (candidates, items_read, next) = available_page(store, partition, None, after.as_ref()).await?;
            read += items_read;
            if candidates.iter().any(|c| wants.offered_by(c)) {
                return Ok(true);
            }
            let Some(next) = next else { break };
            after = Some(next);
        }
    }
    Ok(false)
}
