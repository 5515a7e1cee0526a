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
use worldland_core::job;
use worldland_core::messages::jobs::{AllocateRequest, Workload};
use worldland_core::messages::{topics, ProviderState, StreamEnvelope};
use worldland_core::provider::ProviderRecord;
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
        workload: Workload::of_image("docker.io/library/python:3.12-slim"),
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

struct Bridged {
    env: TestEnv,
    conn: ConnectionManager,
    bridge: RedisBridge,
    bus: Arc<MemoryBus>,
    sub: Box<dyn worldland_core::bus::Subscription>,
    stream: String,
}

async fn bridged() -> Bridged {
    let env = TestEnv::new(&[]);
    let conn = env.redis().await;
    let bus = Arc::new(MemoryBus::new(5));
    let queue = QueueSpec::new("recorder", &[topics::HEARTBEAT_RECEIVED]);
    bus.declare(&queue);
    let sub = bus.subscribe(&queue).await.unwrap();
    let settings = BridgeSettings {
        block_ms: 50,
        ..BridgeSettings::from_config(&env.cfg)
    };
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings);
    bridge.ensure_groups().await.unwrap();
    let stream = env.cfg.streams().heartbeat();
    Bridged {
        env,
        conn,
        bridge,
        bus,
        sub,
        stream,
    }
}

async fn next_forwarded(sub: &mut Box<dyn worldland_core::bus::Subscription>) -> StreamEnvelope {
    let d = tokio::time::timeout(StdDuration::from_secs(5), sub.next()).await.unwrap().unwrap();
    serde_json::from_slice(&d.body).unwrap()
}

fn near_now(id: &str) -> bool {
    let ms: i64 = id.split_once('-').unwrap().0.parse().unwrap();
    (ms - Utc::now().timestamp_millis()).abs() < 10_000
}

#[tokio::test]
async fn an_explicit_future_entry_id_is_dead_lettered_and_the_entries_it_drags_are_not_lost() {
    let Bridged {
        env,
        mut conn,
        bridge,
        mut sub,
        stream,
        ..
    } = bridged().await;
    // An attacker picks an id far in the future; the next agent's `*` id is dragged after it.
    let forged = xadd_at(&mut conn, &stream, "9999999999999-0", "{\"forged\":true}").await;
    let dragged = xadd_at(&mut conn, &stream, "*", "{\"honest\":1}").await;
    assert_eq!(dragged, "9999999999999-1", "Redis drags `*` ids");
    let before = Utc::now().timestamp_millis();
    let pass = bridge.poll_once().await.unwrap();
    assert_eq!((pass.forwarded, pass.dead_lettered), (1, 1), "{pass:?}");
    let parked = dead_letter_reasons(&mut conn, &env).await;
    assert_eq!(parked, vec![(forged, "timestamp_outside_window".to_string())]);
    // The honest entry went on, received on the bridge's clock, not its dragged id's.
    let got = next_forwarded(&mut sub).await;
    assert_eq!((got.entry_id.as_str(), got.data.as_str()), (dragged.as_str(), "{\"honest\":1}"));
    let at = got.received_at_ms.unwrap();
    assert!(at >= before && at <= Utc::now().timestamp_millis(), "{at}");

    // The bridge reset the stream: the next agents get ids on Redis's clock again, forwarded.
    let honest = xadd_at(&mut conn, &stream, "*", "{\"honest\":2}").await;
    assert!(near_now(&honest), "ids are back on the clock: {honest}");
    assert_eq!(bridge.poll_once().await.unwrap().forwarded, 1);
    let got = next_forwarded(&mut sub).await;
    assert_eq!((got.entry_id, got.data), (honest, "{\"honest\":2}".to_string()));
}

/// The last possible id: after it Redis refuses every `*` XADD ("the stream has exhausted the
/// last possible ID"), so one XADD would stop every agent for good.
#[tokio::test]
async fn the_last_possible_entry_id_cannot_exhaust_the_stream() {
    let Bridged {
        env,
        mut conn,
        bridge,
        mut sub,
        stream,
        ..
    } = bridged().await;
    let last = "18446744073709551615-18446744073709551615";
    xadd_at(&mut conn, &stream, last, "{}").await;
    let refused: redis::RedisResult<String> = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("data")
        .arg("x")
        .query_async(&mut conn)
        .await;
    assert!(refused.is_err(), "Redis refuses `*` after the last id");
    let pass = bridge.poll_once().await.unwrap();
    assert_eq!((pass.forwarded, pass.dead_lettered), (0, 1), "{pass:?}");
    assert_eq!(
        dead_letter_reasons(&mut conn, &env).await,
        vec![(last.to_string(), "timestamp_outside_window".to_string())]
    );
    let honest = xadd_at(&mut conn, &stream, "*", "{\"honest\":3}").await;
    assert!(near_now(&honest), "{honest}");
    assert_eq!(bridge.poll_once().await.unwrap().forwarded, 1);
    assert_eq!(next_forwarded(&mut sub).await.entry_id, honest);
}

/// A bridge on `env`'s streams reading `batch` entries at a time, as consumer `name`.
async fn another_bridge(env: &TestEnv, bus: Arc<MemoryBus>, name: &str, batch: usize) -> RedisBridge {
    let settings = BridgeSettings {
        consumer: name.into(),
        block_ms: 50,
        batch,
        ..BridgeSettings::from_config(&env.cfg)
    };
    RedisBridge::new(env.redis().await, env.redis_blocking().await, bus, settings)
}

/// Everything forwarded so far (waiting up to 1 s for each next one).
async fn all_forwarded(sub: &mut Box<dyn worldland_core::bus::Subscription>) -> Vec<String> {
    let mut out = vec![];
    while let Ok(Some(d)) = tokio::time::timeout(StdDuration::from_secs(1), sub.next()).await {
        let env: StreamEnvelope = serde_json::from_slice(&d.body).unwrap();
        out.push(env.data);
    }
    out
}

/// Forged ids (seq 0, chosen by their writer) dead-lettered; every honest entry forwarded, in
/// whichever batch or by whichever bridge it was read; the stream back on the clock at the end.
async fn assert_honest_entries_forwarded(b: &mut Bridged, forged: &[String], honest: &[String]) {
    let want: Vec<(String, String)> = forged
        .iter()
        .map(|id| (id.clone(), "timestamp_outside_window".to_string()))
        .collect();
    assert_eq!(
        dead_letter_reasons(&mut b.conn, &b.env).await,
        want,
        "only the forged ids are parked"
    );
    let mut got = all_forwarded(&mut b.sub).await;
    got.sort();
    let mut want = honest.to_vec();
    want.sort();
    assert_eq!(got, want, "every honest entry is forwarded");
    let after = xadd_at(&mut b.conn, &b.stream, "*", "{\"after\":true}").await;
    assert!(near_now(&after), "ids are back on the clock: {after}");
}

#[tokio::test]
async fn entries_dragged_into_later_batches_are_forwarded() {
    let mut b = bridged().await;
    let one_at_a_time = another_bridge(&b.env, b.bus.clone(), "b1", 1).await;
    let forged = xadd_at(&mut b.conn, &b.stream, "9999999999999-0", "{\"forged\":true}").await;
    let honest: Vec<String> = (1..=3).map(|i| format!("{{\"honest\":{i}}}")).collect();
    for h in &honest {
        xadd_at(&mut b.conn, &b.stream, "*", h).await;
    }
    for _ in 0..6 {
        one_at_a_time.poll_once().await.unwrap();
    }
    assert_honest_entries_forwarded(&mut b, &[forged], &honest).await;
}

#[tokio::test]
async fn entries_dragged_and_read_by_a_second_bridge_are_forwarded() {
    let mut b = bridged().await;
    let first = another_bridge(&b.env, b.bus.clone(), "b1", 1).await;
    let second = another_bridge(&b.env, b.bus.clone(), "b2", 16).await;
    let forged = xadd_at(&mut b.conn, &b.stream, "9999999999999-0", "{\"forged\":true}").await;
    let honest: Vec<String> = (1..=2).map(|i| format!("{{\"honest\":{i}}}")).collect();
    for h in &honest {
        xadd_at(&mut b.conn, &b.stream, "*", h).await;
    }
    // The first reads the forged entry alone; the second the honest ones dragged after it.
    first.poll_once().await.unwrap();
    second.poll_once().await.unwrap();
    first.poll_once().await.unwrap();
    assert_honest_entries_forwarded(&mut b, &[forged], &honest).await;
}

#[tokio::test]
async fn a_repeated_future_id_costs_no_honest_entry() {
    let mut b = bridged().await;
    // Two at a time: each forged id lands at the end of a batch, its dragged entries in the next.
    let two_at_a_time = another_bridge(&b.env, b.bus.clone(), "b1", 2).await;
    let mut forged = vec![];
    let mut honest = vec![];
    for round in 0..3 {
        let h = format!("{{\"before\":{round}}}");
        xadd_at(&mut b.conn, &b.stream, "*", &h).await;
        honest.push(h);
        forged.push(xadd_at(&mut b.conn, &b.stream, "9999999999999-0", "{\"forged\":true}").await);
        for i in 0..2 {
            let h = format!("{{\"round\":{round},\"dragged\":{i}}}");
            xadd_at(&mut b.conn, &b.stream, "*", &h).await;
            honest.push(h);
        }
        for _ in 0..3 {
            two_at_a_time.poll_once().await.unwrap();
        }
    }
    assert_honest_entries_forwarded(&mut b, &forged, &honest).await;
}

#[tokio::test]
async fn a_dragged_entry_whose_publish_failed_is_kept_for_the_reclaim() {
    let mut b = bridged().await;
    // A bus with no queue bound: every publish is refused (unroutable).
    let refusing = another_bridge(&b.env, Arc::new(MemoryBus::new(5)), "refused", 16).await;
    let forged = xadd_at(&mut b.conn, &b.stream, "9999999999999-0", "{\"forged\":true}").await;
    xadd_at(&mut b.conn, &b.stream, "*", "{\"honest\":1}").await;
    let pass = refusing.poll_once().await.unwrap();
    assert_eq!((pass.dead_lettered, pass.left_pending), (1, 1), "{pass:?}");
    // Idle time 0: the rescuer may claim at once.
    let rescuer = RedisBridge::new(
        b.env.redis().await,
        b.env.redis_blocking().await,
        b.bus.clone(),
        BridgeSettings {
            consumer: "rescuer".into(),
            reclaim_idle_ms: 0,
            ..BridgeSettings::from_config(&b.env.cfg)
        },
    );
    assert_eq!(rescuer.reclaim_once().await.unwrap().forwarded, 1, "the dragged entry was kept");
    assert_honest_entries_forwarded(&mut b, &[forged], &["{\"honest\":1}".to_string()]).await;
}
