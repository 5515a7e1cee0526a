//! The stall guard: when more than a configured share of the joined/available fleet would go
//! offline in one sweep, or no heartbeat at all arrived for a whole stale period, the heartbeat
//! pipeline is stalled, not the fleet, and the sweep marks nobody offline.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use worldland_core::messages::ProviderState;
use worldland_core::state::{ms, ItemStore, StoreResult, Table};
use worldland_runtime::Config;

/// The stall guard's settings (`WORLDLAND_STALL_GUARD_SHARE`, `WORLDLAND_STALL_GUARD_MIN`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallGuard {
    /// The guard holds when more than this share of the joined/available fleet is stale at once;
    /// 1 turns this trigger off.
    pub share: f64,
    /// ... and at least this many are; with no heartbeat for a whole stale period, the guard
    /// holds when the fleet is at least this large.
    pub min: usize,
}

impl Default for StallGuard {
    fn default() -> Self {
        Self { share: 0.5, min: 5 }
    }
}

impl StallGuard {
    /// The guard as configured.
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            share: cfg.stall_guard_share,
            min: cfg.stall_guard_min,
        }
    }
}

/// Why the stall guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// No joined/available provider heartbeated within the stale period.
    Silence {
        /// Joined and available providers.
        fleet: usize,
    },
    /// Too many would go offline at once.
    Share {
        /// Joined and available providers.
        fleet: usize,
        /// Those of them that are stale.
        stale: usize,
    },
}

/// Whether the guard holds, from the size of the joined/available fleet, how many of them are
/// stale, and the newest heartbeat among them (ms). Pure: the sweep supplies what it read.
pub fn stall_decision(guard: StallGuard, fleet: usize, stale: usize, newest: Option<i64>, stale_before_ms: i64) -> Option<Stall> {
    if fleet == 0 || fleet < guard.min {
        return None;
    }
    if newest.is_some_and(|n| n < stale_before_ms) {
        return Some(Stall::Silence { fleet });
    }
    if stale >= guard.min && stale as f64 > guard.share * fleet as f64 {
        return Some(Stall::Share { fleet, stale });
    }
    None
}

pub(crate) const LIVE: [ProviderState; 2] = [ProviderState::Joined, ProviderState::Available];

/// The newest heartbeat of the joined/available fleet: one index item per state.
pub(crate) async fn newest_live_heartbeat(store: &dyn ItemStore) -> StoreResult<Option<i64>> {
    let mut newest = None;
    for state in LIVE {
        newest = newest.max(store.newest_in_state(Table::Providers, state.as_str()).await?);
    }
    Ok(newest)
}

/// Joined and available providers, counted through the index (every index item is read).
pub async fn count_fleet(store: &dyn ItemStore) -> StoreResult<usize> {
    let mut fleet = 0;
    for state in LIVE {
        fleet += store.count_by_state(Table::Providers, state.as_str(), None).await?;
    }
    Ok(fleet)
}

/// Whether the guard holds for a sweep whose stale threshold is `stale_before`, counting
/// everything now (the sweep itself reuses its stale items and a cached fleet size).
pub async fn stall(store: &dyn ItemStore, guard: StallGuard, stale_before: DateTime<Utc>) -> StoreResult<Option<Stall>> {
    let fleet = count_fleet(store).await?;
    let mut stale = 0;
    for state in LIVE {
        stale += store
            .count_by_state(Table::Providers, state.as_str(), Some(ms(stale_before)))
            .await?;
    }
    let newest = newest_live_heartbeat(store).await?;
    Ok(stall_decision(guard, fleet, stale, newest, ms(stale_before)))
}

/// How often the sweeper counts the fleet for the guard. Counting reads every index item of a
/// million providers; the fleet's size moves slowly, so the count is reused in between.
pub const FLEET_RECOUNT_AFTER: Duration = Duration::minutes(10);

/// The fleet size the guard compares with. A fleet under `exact_below` is counted on every sweep
/// (cheap, and exact while a young fleet grows); a larger one at most every
/// [`FLEET_RECOUNT_AFTER`], or sooner when a sweep finds more stale providers than it counted.
#[derive(Debug)]
pub struct FleetCount {
    exact_below: usize,
    counted: Mutex<Option<(DateTime<Utc>, usize)>>,
}

impl Default for FleetCount {
    fn default() -> Self {
        Self::exact_below(10_000)
    }
}

impl FleetCount {
    /// Counts every sweep while the fleet is under `n` providers.
    pub fn exact_below(n: usize) -> Self {
        Self {
            exact_below: n,
            counted: Mutex::new(None),
        }
    }

    /// The fleet's size for a sweep at `now` that found `stale` stale providers.
    pub async fn get(&self, store: &dyn ItemStore, now: DateTime<Utc>, stale: usize) -> StoreResult<usize> {
        let cached = *self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, n)) = cached {
            let fresh = now >= at && now - at < FLEET_RECOUNT_AFTER;
            if fresh && n >= self.exact_below && n >= stale {
                return Ok(n);
            }
        }
        self.recount(store, now).await
    }

    /// Counts the fleet now.
    pub async fn recount(&self, store: &dyn ItemStore, now: DateTime<Utc>) -> StoreResult<usize> {
        let n = count_fleet(store).await?;
        *self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now, n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_decision_table() {
        let guard = StallGuard { share: 0.5, min: 5 };
        let cutoff = 1_000;
        let fresh = Some(cutoff + 10);
        // (fleet, stale, newest heartbeat) → decision
        let table: &[(usize, usize, Option<i64>, Option<Stall>)] = &[
            (0, 0, None, None),                                             // no fleet
            (4, 4, Some(cutoff - 1), None),                                 // below the minimum: all may go
            (10, 2, fresh, None),                                           // churn
            (10, 5, fresh, None),                                           // exactly half is not more than half
            (10, 6, fresh, Some(Stall::Share { fleet: 10, stale: 6 })),     // more than half
            (10, 10, Some(cutoff - 1), Some(Stall::Silence { fleet: 10 })), // nobody heartbeated
            (100, 4, fresh, None),                                          // share met by too few to count
            (1_000_000, 10_000, fresh, None),                               // 1% of a million
            (
                1_000_000,
                500_001,
                fresh,
                Some(Stall::Share {
                    fleet: 1_000_000,
                    stale: 500_001,
                }),
            ),
        ];
        for &(fleet, stale, newest, want) in table {
            assert_eq!(
                stall_decision(guard, fleet, stale, newest, cutoff),
                want,
                "fleet {fleet} stale {stale} newest {newest:?}"
            );
        }
    }
}
