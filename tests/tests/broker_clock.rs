//! The broker's clock decides liveness, offline detection and billing; an agent's timestamp only
//! orders its heartbeats and bounds replays. Attacks, each of which worked before: an agent clock
//! 150 s slow (it flapped offline/available on every heartbeat, interrupting its jobs each time),
//! one 290 s fast (its offline detection was delayed to ~7 minutes and its interrupted jobs were
//! billed to a time in the future), and an explicit far-future stream entry id (forwarded as if
//! Redis had given it, and dragging every later `*` id of every agent after it).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use redis::aio::ConnectionManager;
use redis_bridge::{BridgeSettings, RedisBridge};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::replies::MemoryReplies;
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::ledger::job;
use worldland_core::messages::jobs::AllocateRequest;
use worldland_core::messages::{topics, ProviderState, StreamEnvelope};
use worldland_core::state::providers::ProviderRecord;
use worldland_core::state::{ItemStore, Table, Value};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::lifecycle::{available_provider, heartbeat, recorder};
use worldland_tests::{event_sink, Outcome, TestEnv};

const STALE_AFTER_S: i64 = 120;

/// A heartbeat the broker received at `received` from an agent whose clock is `skew_s` off.
fn beat(p: &SimulatedProvider, received: DateTime<Utc>, skew_s: i64) -> StreamEnvelope {
    let mut env = heartbeat(p, received + Duration::seconds(skew_s), 0);
    env.entry_id = format!("{}-0", received.timestamp_millis());
    env
}

async fn state(store: &dyn ItemStore, id: &str) -> ProviderRecord {
    ProviderRecord::load(store, id).await.unwrap().unwrap()
}

#[tokio::test]
async fn an_agent_clock_150_s_slow_does_not_flap_offline() {
    let t0 = Utc::now() - Duration::minutes(20);
    // Every heartbeat of this agent, its first included, is stamped 150 s early.
    let (store, cluster, p) = available_provider(1, t0 - Duration::seconds(150)).await;
    let ctx = recorder(store.clone(), cluster.clone());
    let sweeper = worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(STALE_AFTER_S));
    for i in 1..=10 {
        let received = t0 + Duration::seconds(30 * i);
        let out = Outcome::from(heartbeat_recorder::handle(&beat(&p, received, -150), &ctx, received).await);
        assert_eq!(out, Outcome::Done, "beat {i}");
        // Just before the next heartbeat is due.
        let report = staleness_sweeper::sweep_once(&sweeper, received + Duration::seconds(29))
            .await
            .unwrap();
        assert_eq!(report.marked_offline, 0, "beat {i}: a slow clock is not a dead provider");
        let rec = state(store.as_ref(), &p.provider_id).await;
        assert_eq!(rec.state, ProviderState::Available, "beat {i}");
        assert_eq!(
            rec.hb_at.timestamp_millis(),
            received.timestamp_millis(),
            "liveness is the broker's receive time"
        );
    }
}

#[tokio::test]
async fn an_agent_clock_290_s_fast_neither_delays_offline_nor_bills_the_future() {
    let t0 = Utc::now() - Duration::minutes(20);
    let (store, cluster, p) = available_provider(2, t0).await;
    let ctx = recorder(store.clone(), cluster.clone());
    let sweeper = worldland_tests::sweeper(store.clone(), cluster.clone(), Duration::seconds(STALE_AFTER_S));
    let bus = event_sink();
    let allocator = allocator::Context::new(store.clone(), bus.clone(), Arc::new(MemoryReplies::default()));
    let req = AllocateRequest {
        job_id: "job-fast-clock".into(),
        customer_id: "cust-1".into(),
        gpu_model: None,
        gpus: 1,
        cpu_cores: 2,
        memory_mb: 4096,
        max_price_per_gpu_hour: None,
        duration_s: None,
    };
    allocator::allocate(&req, &allocator, t0 + Duration::seconds(5)).await.unwrap();

    let mut last = t0;
    for i in 1..=4 {
        last = t0 + Duration::seconds(30 * i);
        let out = Outcome::from(heartbeat_recorder::handle(&beat(&p, last, 290), &ctx, last).await);
        assert_eq!(out, Outcome::Done, "beat {i}");
    }
    // The agent dies after its last heartbeat: offline one stale period later, as for anyone.
    let sweep_at = last + Duration::seconds(STALE_AFTER_S + 1);
    let report = staleness_sweeper::sweep_once(&sweeper, sweep_at).await.unwrap();
    assert_eq!(
        (report.marked_offline, report.jobs_closed),
        (1, 1),
        "detected at threshold, not threshold + 290 s"
    );
    let job = store.get(Table::Jobs, &req.job_id).await.unwrap().unwrap();
    assert_eq!(job.get(job::attr::END_REASON), Some(&Value::from("interrupted")));
    assert_eq!(
        job.get(job::attr::ENDED_AT).and_then(Value::as_i64),
        Some(last.timestamp_millis()),
        "billed to the broker's receive time of the last heartbeat, not the agent's future clock"
    );
}

async fn xadd_at(conn: &mut ConnectionManager, stream: &str, id: &str, data: &str) -> String {
    redis::cmd("XADD")
        .arg(stream)
        .arg(id)
        .arg("data")
        .arg(data)
        .query_async(conn)
        .await
        .unwrap()
}

async fn dead_letter_reasons(conn: &mut ConnectionManager, env: &TestEnv) -> Vec<(String, String)> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(env.cfg.streams().dead_letter())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|e| (e.get::<String>("entry_id").unwrap(), e.get::<String>("reason").unwrap()))
        .collect()
}

#[tokio::test]
async fn an_explicit_future_entry_id_is_dead_lettered_and_the_stream_recovers() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let bus = Arc::new(MemoryBus::new(5));
    let queue = QueueSpec::new("recorder", &[topics::HEARTBEAT_RECEIVED]);
    bus.declare(&queue);
    let mut sub = bus.subscribe(&queue).await.unwrap();
    let settings = BridgeSettings {
        block_ms: 50,
        ..BridgeSettings::from_config(&env.cfg)
    };
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings);
    bridge.ensure_groups().await.unwrap();
    let stream = env.cfg.streams().heartbeat();

    // An attacker picks an id far in the future; the next agent's `*` id is dragged after it.
    let forged = xadd_at(&mut conn, &stream, "9999999999999-0", "{\"forged\":true}").await;
    let dragged = xadd_at(&mut conn, &stream, "*", "{\"honest\":1}").await;
    assert!(dragged.starts_with("9999999999999-"), "Redis drags `*` ids: {dragged}");
    let pass = bridge.poll_once().await.unwrap();
    assert_eq!((pass.forwarded, pass.dead_lettered), (0, 2), "{pass:?}");
    let parked = dead_letter_reasons(&mut conn, &env).await;
    assert_eq!(
        parked,
        vec![
            (forged.clone(), "timestamp_outside_window".to_string()),
            (dragged, "timestamp_outside_window".to_string())
        ]
    );

    // The bridge reset the stream: the next agents get ids on Redis's clock again, forwarded.
    let honest = xadd_at(&mut conn, &stream, "*", "{\"honest\":2}").await;
    let honest_ms: i64 = honest.split_once('-').unwrap().0.parse().unwrap();
    assert!(
        (honest_ms - Utc::now().timestamp_millis()).abs() < 10_000,
        "ids are back on the clock: {honest}"
    );
    assert_eq!(bridge.poll_once().await.unwrap().forwarded, 1);
    let d = tokio::time::timeout(StdDuration::from_secs(5), sub.next()).await.unwrap().unwrap();
    let env_got: StreamEnvelope = serde_json::from_slice(&d.body).unwrap();
    assert_eq!((env_got.entry_id, env_got.data), (honest, "{\"honest\":2}".to_string()));
}
