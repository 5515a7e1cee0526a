//! Write units per heartbeat, as DynamoDB would bill them: every recorded heartbeat rewrites the
//! provider's item and is billed by its whole size (which holds the spec's working copy only); a flood is held to one write per minimum
//! interval (and the heartbeats in between cost no store call).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use worldland_adapters::state::counting::CountingStore;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::messages::{Gpu, Heartbeat, StreamEnvelope};
use worldland_core::placement::seed_available;
use worldland_core::signature::sign_personal;
use worldland_core::state::units::{billed_size, write_units};
use worldland_core::state::{ItemStore, Table};
use worldland_core::validation::{validate_registration, ValidationPolicy, MAX_GPUS, MAX_GPU_MEMORY_MB, MAX_SPEC_BYTES};
use worldland_provider_sdk::simulated::SimulatedProvider;

/// Heartbeats of the flood, 1 ms apart (20 s of them).
const FLOOD: usize = 20_000;

#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteUnitFigures {
    /// The simulated agent's provider item after a recorded heartbeat.
    pub typical_item_bytes: usize,
    pub typical_write_units_per_heartbeat: u64,
    /// The largest item registration and heartbeat bounds allow (64 GPUs and their usage; the
    /// spec's informational part is in its own item).
    pub largest_item_bytes: usize,
    pub largest_write_units_per_heartbeat: u64,
    /// A flood of heartbeats 1 ms apart, and the store writes and reads they cost.
    pub flood_heartbeats: usize,
    pub flood_store_writes: u64,
    pub flood_store_reads: u64,
    /// Write units the flood cost (each write billed at the typical item's size).
    pub flood_write_units: u64,
}

fn envelope(p: &SimulatedProvider, at: DateTime<Utc>, seq: u64, gpus: usize) -> StreamEnvelope {
    let hb = Heartbeat {
        provider_id: p.provider_id.clone(),
        node_name: worldland_core::validation::node_name(&p.provider_id, &p.registration.spec.hostname),
        status: "available".into(),
        gpu_usage: vec![-1.234_567_890_123e300; gpus],
        cpu_usage: 40.0,
        memory_usage: 50.0,
        active_jobs: 0,
        timestamp: at,
        seq: Some(seq),
    };
    let data = serde_json::to_string(&hb).expect("serialises");
    StreamEnvelope {
        stream: "provider:heartbeat".into(),
        entry_id: format!("{}-0", at.timestamp_millis()),
        signature: Some(sign_personal(&p.key, data.as_bytes())),
        data,
        timestamp: None,
        received_at_ms: Some(at.timestamp_millis()),
    }
}

/// Seeds `p` available at `now` and records one heartbeat 30 s later: its item's billed size.
async fn recorded_item_bytes(p: &SimulatedProvider, gpus: usize, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    seed_available(&p.registration, now, false)
        .apply(store.as_ref(), &p.provider_id)
        .await?;
    let ctx = super::recorder(store.clone()).await?.0;
    let at = now + Duration::seconds(30);
    if let Err(e) = heartbeat_recorder::handle(&envelope(p, at, 1, gpus), &ctx, at).await {
        anyhow::bail!("the heartbeat was not recorded: {e:?}");
    }
    let item = store.get(Table::Providers, &p.provider_id).await?.expect("seeded");
    Ok(billed_size(&item))
}

/// The registration whose provider item is the largest validation allows: 64 GPUs whose names
/// the working copy keeps whole (64 bytes, the largest memory), the host name at its bound, and
/// the informational fields padding the spec to its bound (they stay in the spec's own item).
fn largest(now: DateTime<Utc>) -> SimulatedProvider {
    let mut p = SimulatedProvider::new(2, now);
    let spec = &mut p.registration.spec;
    let template = spec.gpus[0].clone();
    spec.gpus = (0..MAX_GPUS)
        .map(|i| Gpu {
            index: Some(i),
            name: format!("NVIDIA {:>57}", format!("H100 80GB HBM3 #{i}")),
            memory_mb: MAX_GPU_MEMORY_MB,
            ..template.clone()
        })
        .collect();
    spec.total_gpus = MAX_GPUS;
    spec.hostname = format!("{}.{}.{}.{}", "h".repeat(63), "o".repeat(63), "s".repeat(63), "t".repeat(61));
    spec.cpu_model = Some(String::new());
    let used = serde_json::to_string(spec).expect("serialises").len();
    spec.cpu_model = Some("x".repeat(MAX_SPEC_BYTES.saturating_sub(used)));
    p.registration.timestamp = Some(now);
    p.registration.capacity.gpu_count = None;
    debug_assert!(validate_registration(&p.registration, &ValidationPolicy::default(), now).is_ok());
    p
}

pub async fn write_unit_figures() -> anyhow::Result<WriteUnitFigures> {
    let now = Utc::now() - Duration::minutes(5);
    let typical = SimulatedProvider::new(1, now);
    let typical_bytes = recorded_item_bytes(&typical, 1, now).await?;
    let largest_bytes = recorded_item_bytes(&largest(now), MAX_GPUS as usize, now).await?;

    let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
    seed_available(&typical.registration, now, false)
        .apply(store.as_ref(), &typical.provider_id)
        .await?;
    let counting = Arc::new(CountingStore::new(store));
    let ctx = super::recorder(counting.clone()).await?.0;
    for i in 0..FLOOD {
        let at = now + Duration::seconds(30) + Duration::milliseconds(i as i64);
        if let Err(e) = heartbeat_recorder::handle(&envelope(&typical, at, 1 + i as u64, 1), &ctx, at).await {
            anyhow::bail!("a flood heartbeat was not acknowledged: {e:?}");
        }
    }
    let calls = counting.take();
    Ok(WriteUnitFigures {
        typical_item_bytes: typical_bytes,
        typical_write_units_per_heartbeat: write_units(typical_bytes),
        largest_item_bytes: largest_bytes,
        largest_write_units_per_heartbeat: write_units(largest_bytes),
        flood_heartbeats: FLOOD,
        flood_store_writes: calls.writes,
        flood_store_reads: calls.gets,
        flood_write_units: calls.writes * write_units(typical_bytes),
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_bench_figures_hold_the_bill_bounded() {
        let w = super::write_unit_figures().await.unwrap();
        assert!(w.typical_write_units_per_heartbeat <= 2, "{w:?}");
        assert!(w.largest_write_units_per_heartbeat <= 10, "{w:?}");
        assert_eq!((w.flood_store_writes, w.flood_store_reads), (2, 0), "{w:?}");
        assert_eq!(w.flood_write_units, 2 * w.typical_write_units_per_heartbeat);
    }
}
