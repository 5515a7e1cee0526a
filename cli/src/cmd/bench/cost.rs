//! What the plane's DynamoDB traffic costs on demand, per provider per month and for the fleet,
//! from the measured item size: heartbeats, the state index they move, the sweeper's reads, and
//! one placement over the fleet.

use serde::Serialize;

/// On-demand list prices, us-east-1 (since the 2024-11-01 reduction): dollars per million write
/// request units and per million read request units.
pub const USD_PER_MILLION_WRU: f64 = 0.625;
pub const USD_PER_MILLION_RRU: f64 = 0.125;
/// An agent heartbeats every 30 s: heartbeats per provider per 30-day month.
const HEARTBEATS_PER_MONTH: f64 = 30.0 * 86_400.0 / 30.0;
/// The sweeper counts the fleet (above 10,000) every 10 min and runs a reconcile pass (reading
/// every live provider's index item) every 20 sweeps of 30 s, so also every 10 min.
const FLEET_READS_PER_MONTH: f64 = 2.0 * 30.0 * 24.0 * 6.0;
/// Size of an index item holding only the keys (a KEYS_ONLY projection).
const KEYS_ONLY_BYTES: usize = 100;

#[derive(Debug, Serialize)]
pub struct Row {
    pub path: &'static str,
    pub wru_per_provider_month: f64,
    pub rru_per_provider_month: f64,
    pub usd_per_provider_month: f64,
    pub usd_per_month_for_fleet: f64,
}

#[derive(Debug, Serialize)]
pub struct Cost {
    pub item_bytes: usize,
    pub providers: usize,
    pub rows: Vec<Row>,
    /// One placement naming its model (the placement index, cheapest first).
    pub placement_rru: f64,
    pub placement_usd: f64,
    /// One placement of any model (the whole available fleet through the state index).
    pub any_model_placement_rru: f64,
}

/// Write units of one write of an item of `bytes` (1 KB each, rounded up).
fn wru(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// Read units of an eventually consistent query reading `items` items of `bytes` (4 KB each,
/// over the whole read, halved): a provider's share of a query over many.
fn rru_query(items: f64, bytes: usize) -> f64 {
    items * bytes as f64 / 4096.0 * 0.5
}

impl Cost {
    pub fn estimate(item_bytes: usize, providers: usize, placement_items: u64, any_model_placement_items: u64) -> Self {
        let row = |path, w: f64, r: f64| {
            let usd = w * USD_PER_MILLION_WRU / 1e6 + r * USD_PER_MILLION_RRU / 1e6;
            Row {
                path,
                wru_per_provider_month: w,
                rru_per_provider_month: r,
                usd_per_provider_month: usd,
                usd_per_month_for_fleet: usd * providers as f64,
            }
        };
        // Every heartbeat rewrites the item (billed at its whole size) and moves its index entry
        // (hb_at is the index's sort key): a delete and a put of the projected item.
        let heartbeats = row("heartbeats (item write)", HEARTBEATS_PER_MONTH * wru(item_bytes), 0.0);
        let index_all = row("state index, projection ALL", HEARTBEATS_PER_MONTH * 2.0 * wru(item_bytes), 0.0);
        let sweeps = row(
            "sweeps (fleet count + reconcile)",
            0.0,
            FLEET_READS_PER_MONTH * rru_query(1.0, item_bytes),
        );
        let total = row(
            "total today",
            heartbeats.wru_per_provider_month + index_all.wru_per_provider_month,
            sweeps.rru_per_provider_month,
        );
        let index_keys = row(
            "state index, KEYS_ONLY (alternative)",
            HEARTBEATS_PER_MONTH * 2.0 * wru(KEYS_ONLY_BYTES),
            FLEET_READS_PER_MONTH * rru_query(1.0, KEYS_ONLY_BYTES),
        );
        let placement_rru = rru_query(placement_items as f64, item_bytes);
        Self {
            item_bytes,
            providers,
            rows: vec![heartbeats, index_all, sweeps, total, index_keys],
            placement_rru,
            placement_usd: placement_rru * USD_PER_MILLION_RRU / 1e6,
            any_model_placement_rru: rru_query(any_model_placement_items as f64, item_bytes),
        }
    }
}

pub fn print_cost(c: &Cost) {
    println!(
        "DynamoDB on demand (${USD_PER_MILLION_WRU}/M writes, ${USD_PER_MILLION_RRU}/M reads; item ~{} bytes; heartbeat every 30 s):",
        c.item_bytes
    );
    println!(
        "  {:<38} {:>14} {:>14} {:>12} {:>16}",
        "path",
        "WRU/prov/month",
        "RRU/prov/month",
        "$/prov/month",
        format!("$/month × {}", c.providers)
    );
    for r in &c.rows {
        println!(
            "  {:<38} {:>14.0} {:>14.0} {:>12.4} {:>16.0}",
            r.path, r.wru_per_provider_month, r.rru_per_provider_month, r.usd_per_provider_month, r.usd_per_month_for_fleet
        );
    }
    println!(
        "  one placement naming its model: {:.1} RRU (${:.6}); heartbeats never write the placement index",
        c.placement_rru, c.placement_usd
    );
    println!(
        "  one placement of any model (the whole fleet): {:.0} RRU (${:.4}); the allocator reuses one read for 100 ms",
        c.any_model_placement_rru,
        c.any_model_placement_rru * USD_PER_MILLION_RRU / 1e6
    );
    println!("  (an index item under 1 KB costs 1 WRU whatever its projection: KEYS_ONLY saves reads, not writes)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_dynamodb_rounding() {
        // (item bytes) → (WRU per heartbeat write, index WRU per heartbeat)
        for (bytes, w) in [(1, 1.0), (996, 1.0), (1024, 1.0), (1025, 2.0), (3000, 3.0)] {
            let c = Cost::estimate(bytes, 1, 0, 0);
            assert_eq!(c.rows[0].wru_per_provider_month, HEARTBEATS_PER_MONTH * w, "{bytes}");
            assert_eq!(c.rows[1].wru_per_provider_month, HEARTBEATS_PER_MONTH * 2.0 * w, "{bytes}");
        }
        // A placement reading 980,000 items of 996 bytes, eventually consistent.
        let c = Cost::estimate(996, 1_000_000, 200, 980_000);
        assert!((c.any_model_placement_rru - 980_000.0 * 996.0 / 4096.0 / 2.0).abs() < 1e-6);
        assert!((c.placement_rru - 200.0 * 996.0 / 4096.0 / 2.0).abs() < 1e-6);
        let total = &c.rows[3];
        assert!((total.usd_per_month_for_fleet - total.usd_per_provider_month * 1e6).abs() < 1e-3);
    }
}
