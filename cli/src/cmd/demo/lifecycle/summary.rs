//! What the lifecycle phase reports, and the small helpers that compute it.

use std::collections::BTreeMap;

use serde::Serialize;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::state::{ItemStore, Table};

/// The lifecycle phase, on a virtual clock: providers join and heartbeat, a share die and are
/// detected offline, some come back.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleSummary {
    pub virtual_minutes: i64,
    pub heartbeats: u64,
    pub providers_per_state: BTreeMap<String, usize>,
    pub died: usize,
    pub detected_offline: usize,
    pub came_back: usize,
    pub back_available: usize,
    pub offline_detection_latency_s: Seconds,
    /// The bound detection must meet: threshold + one sweep interval.
    pub detection_bound_s: i64,
    pub kubernetes_writes_per_provider_minute: f64,
    pub market: Market,
}

impl LifecycleSummary {
    pub fn ok(&self) -> bool {
        self.detected_offline == self.died
            && self.back_available == self.came_back
            && self.offline_detection_latency_s.max <= self.detection_bound_s as f64
            && self.market.audit_violations.is_empty()
    }
}

/// Customers renting while providers come and go.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Market {
    pub jobs_requested: usize,
    pub jobs_allocated: usize,
    pub rejected_per_reason: BTreeMap<String, usize>,
    pub jobs_closed_per_reason: BTreeMap<String, usize>,
    /// GPUs in use / GPUs offered by available providers, each minute.
    pub utilisation_per_minute: Vec<f64>,
    /// GPUs mining / GPUs offered by available providers, each minute.
    pub mining_share_per_minute: Vec<f64>,
    pub mining_stops: usize,
    pub mining_resumes: usize,
    /// Sum of closed jobs' costs, in WL (exact micro-units summed, then shown).
    pub revenue_wl: f64,
    pub audit_violations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Seconds {
    pub median: f64,
    pub max: f64,
}

pub(super) fn seconds(v: Vec<f64>) -> Seconds {
    let t = super::super::stage(v);
    Seconds {
        median: t.median_ms,
        max: t.max_ms,
    }
}

/// A small deterministic generator: the same customers send the same requests every run.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

pub(super) async fn fleet_shares(store: &MemoryStore) -> anyhow::Result<(f64, f64)> {
    let (mut total, mut used, mut mining) = (0i64, 0i64, 0i64);
    for item in store
        .query_by_state(Table::Providers, worldland_core::messages::ProviderState::Available.as_str(), None)
        .await?
    {
        if let Some(l) = worldland_core::ledger::Ledger::from_item(&item) {
            for c in l.models.values() {
                total += c.total;
                used += c.used;
                mining += c.mining;
            }
        }
    }
    let share = |n: i64| {
        if total == 0 {
            0.0
        } else {
            (n as f64 / total as f64 * 1000.0).round() / 1000.0
        }
    };
    Ok((share(used), share(mining)))
}
