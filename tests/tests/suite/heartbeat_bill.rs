//! One provider cannot multiply the bill: the recorder records at most one heartbeat per
//! `WORLDLAND_MIN_HEARTBEAT_INTERVAL_S` (the rest are acknowledged as routine duplicates, never
//! dead-lettered), and an `active_jobs` that flips on every heartbeat patches the node's label at
//! most once per `WORLDLAND_ACTIVE_JOBS_LABEL_INTERVAL_S`. Before, a flood of millisecond-apart
//! heartbeats rewrote the provider's item each time, and every flip was a Node PATCH.

use std::sync::Arc;

use chrono::{Duration, Utc};
use worldland_adapters::state::counting::CountingStore;
use worldland_core::provider::ProviderRecord;
use worldland_tests::lifecycle::{available_provider, recorder, sequenced_heartbeat};
use worldland_tests::Outcome;

#[tokio::test]
async fn a_flood_of_heartbeats_makes_at_most_one_write_per_interval() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(1, t0).await;
    let counting = Arc::new(CountingStore::new(store.clone()));
    let ctx = recorder(counting.clone(), cluster.clone());
    assert_eq!(ctx.min_heartbeat_interval, Duration::seconds(10));
    let mut writes = 0;
    let mut last = ProviderRecord::load(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
    // 3,000 heartbeats, 10 ms apart: 30 s of flood, each newer than the last.
    for i in 1..=3_000u64 {
        let at = t0 + Duration::milliseconds(10 * i as i64);
        let mut env = sequenced_heartbeat(&p, at, 0, Some(i));
        env.entry_id = format!("{}-0", at.timestamp_millis());
        let out = Outcome::from(heartbeat_recorder::handle(&env, &ctx, at).await);
        assert_eq!(out, Outcome::Done, "heartbeat {i}: acknowledged, not an error");
        let rec = ProviderRecord::load(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
        if rec != last {
            writes += 1;
            assert!(rec.hb_at - last.hb_at >= Duration::seconds(10), "heartbeat {i}");
        }
        last = rec;
    }
    assert_eq!(writes, 3, "one per 10 s (at 10, 20 and 30 s), not 3,000");
    // A failed conditional write is billed too: after the first one (and the read that explains
    // it) the recorder does not even try the others.
    let calls = counting.take();
    assert_eq!((calls.writes, calls.gets), (4, 1), "store calls for 3,000 heartbeats");
    // Another recorder process (which saw none of them) is held by the store's condition.
    let other = recorder(counting.clone(), cluster.clone());
    let at = t0 + Duration::milliseconds(30_005);
    let mut env = sequenced_heartbeat(&p, at, 0, Some(5_000));
    env.entry_id = format!("{}-0", at.timestamp_millis());
    assert_eq!(Outcome::from(heartbeat_recorder::handle(&env, &other, at).await), Outcome::Done);
    let rec = ProviderRecord::load(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
    assert_eq!(rec, last, "not recorded");
}

#[tokio::test]
async fn active_jobs_flipping_on_every_heartbeat_patches_the_node_at_most_once_per_interval() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(2, t0).await;
    let ctx = recorder(store.clone(), cluster.clone());
    assert_eq!(ctx.active_jobs_label_interval, Duration::seconds(60));
    let before = cluster.writes();
    // Ten minutes of heartbeats every 30 s, active_jobs 1, 0, 1, 0, …
    for i in 1..=20u64 {
        let at = t0 + Duration::seconds(30 * i as i64);
        let mut env = sequenced_heartbeat(&p, at, (i % 2) as u32, Some(i));
        env.entry_id = format!("{}-0", at.timestamp_millis());
        assert_eq!(Outcome::from(heartbeat_recorder::handle(&env, &ctx, at).await), Outcome::Done);
    }
    let patches = cluster.writes() - before;
    // At most one label patch per minute (10), and the annotation every 5 minutes rides along
    // with one of them or adds one of its own (2).
    assert!(patches <= 12, "{patches} node writes for 20 flips");
    assert!(patches >= 5, "the label still follows the count ({patches})");
}

/// The spec's informational part (OS, kernel, CPU model, driver versions, GPU UUIDs, PCI ids)
/// is stored once, in its own item: a heartbeat rewrites — and pays for — the provider's item,
/// which keeps only the working copy. Before, a 16 KiB spec made every heartbeat 17+ write units.
#[tokio::test]
async fn the_spec_as_registered_is_stored_once_apart_from_the_item_heartbeats_rewrite() {
    use worldland_adapters::replies::MemoryReplies;
    use worldland_adapters::state::memory::MemoryStore;
    use worldland_core::provider::specs;
    use worldland_core::signature::SignaturePolicy;
    use worldland_core::state::units::{billed_size, write_units};
    use worldland_core::state::{ItemStore, Table};
    use worldland_core::validation::{ValidationPolicy, MAX_SPEC_BYTES};
    use worldland_provider_sdk::simulated::SimulatedProvider;

    let now = Utc::now();
    let mut p = SimulatedProvider::new(4, now);
    let spec = &mut p.registration.spec;
    spec.os = Some("Ubuntu 22.04.4 LTS".into());
    for g in &mut spec.gpus {
        g.uuid = Some("GPU-6d2f9a44-1b7e-4a7e-9c0e-3f0c4a8b2d11".into());
        g.driver_ver = Some("550.54.15".into());
    }
    spec.cpu_model = Some(String::new());
    let used = serde_json::to_string(spec).unwrap().len();
    spec.cpu_model = Some("x".repeat(MAX_SPEC_BYTES - used));
    let registered = serde_json::to_string(&p.registration.spec).unwrap();

    let store = Arc::new(MemoryStore::new());
    let ctx = registration_handler::Context {
        store: store.clone(),
        bus: worldland_tests::validated_sink(),
        replies: Arc::new(MemoryReplies::default()),
        policy: ValidationPolicy::default(),
        signatures: SignaturePolicy::Required,
    };
    let env = p.envelope("provider:registration", "1-0");
    assert_eq!(Outcome::from(registration_handler::handle(&env, &ctx, now).await), Outcome::Done);

    let item = store.get(Table::Providers, &p.provider_id).await.unwrap().unwrap();
    let rec = ProviderRecord::from_item(&item).unwrap();
    assert_eq!(
        rec.spec_json,
        serde_json::to_string(&specs::working_copy(&p.registration.spec)).unwrap()
    );
    assert!(
        !rec.spec_json.contains("xxxx") && !rec.spec_json.contains("GPU-6d2f"),
        "{}",
        rec.spec_json
    );
    assert!(
        write_units(billed_size(&item)) <= 2,
        "the provider's item is {} bytes",
        billed_size(&item)
    );
    let (stored, reg) = specs::load_registered(store.as_ref(), &p.provider_id).await.unwrap().unwrap();
    assert_eq!((stored.as_str(), reg.as_str()), (registered.as_str(), "1-0"));

    // A redelivery writes the spec's item no more.
    let spec_item = store.get(Table::Providers, &specs::key(&p.provider_id)).await.unwrap();
    let later = now + Duration::seconds(5);
    assert_eq!(Outcome::from(registration_handler::handle(&env, &ctx, later).await), Outcome::Done);
    assert_eq!(store.get(Table::Providers, &specs::key(&p.provider_id)).await.unwrap(), spec_item);
}
