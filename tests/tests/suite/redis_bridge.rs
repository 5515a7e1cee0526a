//! The bridge against real Redis: forwards and acks only after a confirmed publish,
//! dead-letters what cannot be forwarded (with its reason), leaves failed publishes pending for
//! reclaiming, shares work between bridges without duplicates, and trims what is done.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis_bridge::{BridgeSettings, Pass, RedisBridge};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_core::bus::{Bus, BusError, BusResult, QueueSpec, Subscription};
use worldland_core::messages::{StreamEnvelope, MAX_ENTRY_BYTES};
use worldland_tests::TestEnv;

fn settings(env: &TestEnv, consumer: &str, reclaim_idle_ms: u64) -> BridgeSettings {
    BridgeSettings {
        consumer: consumer.into(),
        reclaim_idle_ms,
        block_ms: 50,
        batch: 16,
        ..BridgeSettings::from_config(&env.cfg)
    }
}

async fn xadd(conn: &mut ConnectionManager, stream: &str, fields: &[(&[u8], &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(conn).await.unwrap()
}

async fn pending(conn: &mut ConnectionManager, env: &TestEnv, stream: &str) -> i64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(&env.cfg.bridge_group)
        .query_async(conn)
        .await
        .unwrap();
    match v {
        redis::Value::Array(a) => match a.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

async fn received(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<StreamEnvelope> {
    let mut out = vec![];
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("forwarded")
            .unwrap();
        out.push(serde_json::from_slice(&d.body).unwrap());
        d.ack().await.unwrap();
    }
    out
}

fn memory_bus() -> (Arc<MemoryBus>, QueueSpec) {
    let bus = Arc::new(MemoryBus::new(5));
    let q = QueueSpec::new("all", &["#"]);
    bus.declare(&q);
    (bus, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_entries_written_before_it_started_and_acks_them() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let streams = env.cfg.streams();
    let reg = streams.registration();
    xadd(
        &mut conn,
        &reg,
        &[
            (b"data", b"{\"provider_id\":\"a\"}"),
            (b"signature", b"0xabc"),
            (b"timestamp", b"2026-01-01T00:00:00Z"),
        ],
    )
    .await;
    xadd(&mut conn, &reg, &[(b"data", b"{\"provider_id\":\"b\"}")]).await;
    xadd(&mut conn, &streams.heartbeat(), &[(b"data", b"{\"provider_id\":\"a\",\"hb\":1}")]).await;

    let (bus, q) = memory_bus();
    let mut sub = bus.subscribe(&q).await.unwrap();
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings(&env, "b1", 60_000));
    bridge.ensure_groups().await.unwrap();
    let pass = bridge.poll_once().await.unwrap();
    assert_eq!(
        pass,
        Pass {
            forwarded: 3,
            dead_lettered: 0,
            left_pending: 0
        }
    );
    let got = received(&mut sub, 3).await;
    assert_eq!(got[0].data, "{\"provider_id\":\"a\"}");
    assert_eq!(got[0].signature.as_deref(), Some("0xabc"));
    assert_eq!(got[0].timestamp.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert!(got.iter().any(|e| e.stream == streams.heartbeat()));
    assert_eq!(pending(&mut conn, &env, &reg).await, 0, "acked after the confirmed publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_cannot_be_forwarded_are_dead_lettered_with_their_reason_and_acked() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let streams = env.cfg.streams();
    let reg = streams.registration();
    let big = vec![b'x'; MAX_ENTRY_BYTES + 1];
    xadd(&mut conn, &reg, &[(b"timestamp", b"2026-01-01T00:00:00Z")]).await;
    xadd(&mut conn, &reg, &[(b"data", &[0xff, 0xfe, 0x00])]).await;
    xadd(&mut conn, &reg, &[(b"data", &big)]).await;
    let (bus, _q) = memory_bus();
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings(&env, "b1", 60_000));
    bridge.ensure_groups().await.unwrap();
    assert_eq!(
        bridge.poll_once().await.unwrap(),
        Pass {
            forwarded: 0,
            dead_lettered: 3,
            left_pending: 0
        }
    );
    assert_eq!(bus.published(), 0);
    assert_eq!(pending(&mut conn, &env, &reg).await, 0);
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(streams.dead_letter())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reasons: Vec<String> = dead.ids.iter().map(|e| e.get::<String>("reason").unwrap()).collect();
    assert_eq!(reasons, vec!["missing_data", "not_utf8", "entry_too_large"]);
    // A small entry's fields travel with its dead letter; an oversized one leaves only its size.
    let kept: Vec<u8> = dead.ids[1].get("data").unwrap();
    assert_eq!(kept, vec![0xff, 0xfe, 0x00]);
    assert_eq!(dead.ids[2].get::<String>("size"), Some((MAX_ENTRY_BYTES + 1 + 4).to_string()));
    assert!(!dead.ids[2].map.contains_key("data"), "{:?}", dead.ids[2].map.keys());
}

/// A bus whose first `failures` publishes are not confirmed.
struct FlakyBus {
    inner: Arc<MemoryBus>,
    failures: AtomicU32,
}

#[async_trait]
impl Bus for FlakyBus {
    async fn publish(&self, key: &str, id: &str, body: &[u8]) -> BusResult<()> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(BusError::NotConfirmed(key.into()));
        }
        self.inner.publish(key, id, body).await
    }
    async fn subscribe(&self, q: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        self.inner.subscribe(q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_publish_stays_pending_and_another_bridge_reclaims_it() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let reg = env.cfg.streams().registration();
    xadd(&mut conn, &reg, &[(b"data", b"{\"provider_id\":\"a\"}")]).await;
    let (bus, q) = memory_bus();
    let mut sub = bus.subscribe(&q).await.unwrap();
    let flaky = Arc::new(FlakyBus {
        inner: bus.clone(),
        failures: AtomicU32::new(1),
    });
    let crashed = RedisBridge::new(conn.clone(), env.redis_blocking().await, flaky, settings(&env, "crashed", 60_000));
    crashed.ensure_groups().await.unwrap();
    assert_eq!(crashed.poll_once().await.unwrap().left_pending, 1);
    assert_eq!(pending(&mut conn, &env, &reg).await, 1, "not acked without a confirmed publish");

    // Idle time 0: the rescuer may claim at once (in production it waits reclaim_idle_ms).
    let rescuer = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings(&env, "rescuer", 0));
    assert_eq!(rescuer.reclaim_once().await.unwrap().forwarded, 1);
    assert_eq!(received(&mut sub, 1).await[0].data, "{\"provider_id\":\"a\"}");
    assert_eq!(pending(&mut conn, &env, &reg).await, 0);
    // A slow bridge with a long idle time takes nothing that is not idle long enough.
    assert_eq!(
        RedisBridge::new(
            conn.clone(),
            env.redis_blocking().await,
            bus.clone(),
            settings(&env, "slow", 60_000)
        )
        .reclaim_once()
        .await
        .unwrap(),
        Pass::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_share_the_stream_without_duplicates_then_trim_it() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let reg = env.cfg.streams().registration();
    let (bus, q) = memory_bus();
    let mut sub = bus.subscribe(&q).await.unwrap();
    let a = Arc::new(RedisBridge::new(
        conn.clone(),
        env.redis_blocking().await,
        bus.clone(),
        settings(&env, "a", 60_000),
    ));
    let b = Arc::new(RedisBridge::new(
        conn.clone(),
        env.redis_blocking().await,
        bus.clone(),
        settings(&env, "b", 60_000),
    ));
    a.ensure_groups().await.unwrap();
    b.ensure_groups().await.unwrap();
    for i in 0..200 {
        xadd(&mut conn, &reg, &[(b"data", format!("{{\"n\":{i}}}").as_bytes())]).await;
    }
    let run = |br: Arc<RedisBridge>| async move {
        let mut total = 0;
        loop {
            let p = br.poll_once().await.unwrap();
            if p.forwarded == 0 {
                return total;
            }
            total += p.forwarded;
        }
    };
    let (na, nb) = tokio::join!(run(a.clone()), run(b.clone()));
    assert_eq!(na + nb, 200);
    let got = received(&mut sub, 200).await;
    let ids: HashSet<String> = got.iter().map(|e| e.entry_id.clone()).collect();
    assert_eq!(ids.len(), 200, "every entry forwarded exactly once");
    let len_before: i64 = redis::cmd("XLEN").arg(&reg).query_async(&mut conn).await.unwrap();
    let trimmed = a.trim_once().await.unwrap();
    let len_after: i64 = redis::cmd("XLEN").arg(&reg).query_async(&mut conn).await.unwrap();
    assert_eq!(len_before, 200);
    assert!(trimmed >= 199 && len_after <= 1, "trimmed {trimmed}, {len_after} left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_processed_stream_keeps_everything_from_the_oldest_pending_entry() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let reg = env.cfg.streams().registration();
    let (bus, _q) = memory_bus();
    let flaky = Arc::new(FlakyBus {
        inner: bus.clone(),
        failures: AtomicU32::new(1),
    });
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, flaky, settings(&env, "a", 60_000));
    bridge.ensure_groups().await.unwrap();
    for i in 0..5 {
        xadd(&mut conn, &reg, &[(b"data", format!("{{\"n\":{i}}}").as_bytes())]).await;
    }
    // The first entry fails (left pending); the other four are forwarded.
    assert_eq!(
        bridge.poll_once().await.unwrap(),
        Pass {
            forwarded: 4,
            dead_lettered: 0,
            left_pending: 1
        }
    );
    bridge.trim_once().await.unwrap();
    let len: i64 = redis::cmd("XLEN").arg(&reg).query_async(&mut conn).await.unwrap();
    assert_eq!(len, 5, "nothing at or after the pending entry is trimmed");
}

/// A bus that, when asked to publish a batch, checks that none of the batch's entries has been
/// acked yet (the confirms are not in), then publishes it on the memory bus.
struct WatchedBus {
    inner: Arc<MemoryBus>,
    conn: ConnectionManager,
    group: String,
    stream: String,
    batches: std::sync::Mutex<Vec<usize>>,
    pending_at_publish: std::sync::Mutex<Vec<i64>>,
}

#[async_trait]
impl Bus for WatchedBus {
    async fn publish(&self, key: &str, id: &str, body: &[u8]) -> BusResult<()> {
        self.inner.publish(key, id, body).await
    }
    async fn publish_batch(&self, msgs: &[(&str, &str, &[u8])]) -> Vec<BusResult<()>> {
        let v: redis::Value = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .query_async(&mut self.conn.clone())
            .await
            .unwrap();
        let n = match v {
            redis::Value::Array(a) => match a.first() {
                Some(redis::Value::Int(n)) => *n,
                _ => 0,
            },
            _ => 0,
        };
        self.pending_at_publish.lock().unwrap().push(n);
        self.batches.lock().unwrap().push(msgs.len());
        self.inner.publish_batch(msgs).await
    }
    async fn subscribe(&self, q: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        self.inner.subscribe(q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_together_and_acked_only_after_all_its_confirms() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let reg = env.cfg.streams().registration();
    for i in 0..10 {
        xadd(&mut conn, &reg, &[(b"data", format!("{{\"n\":{i}}}").as_bytes())]).await;
    }
    let (bus, q) = memory_bus();
    let mut sub = bus.subscribe(&q).await.unwrap();
    let watched = Arc::new(WatchedBus {
        inner: bus.clone(),
        conn: conn.clone(),
        group: env.cfg.bridge_group.clone(),
        stream: reg.clone(),
        batches: Default::default(),
        pending_at_publish: Default::default(),
    });
    let bridge = RedisBridge::new(
        conn.clone(),
        env.redis_blocking().await,
        watched.clone(),
        settings(&env, "b1", 60_000),
    );
    bridge.ensure_groups().await.unwrap();
    assert_eq!(
        bridge.poll_once().await.unwrap(),
        Pass {
            forwarded: 10,
            dead_lettered: 0,
            left_pending: 0
        }
    );
    assert_eq!(
        *watched.batches.lock().unwrap(),
        vec![10],
        "the whole read batch in one publish_batch"
    );
    assert_eq!(
        *watched.pending_at_publish.lock().unwrap(),
        vec![10],
        "nothing acked before the batch's confirms"
    );
    assert_eq!(pending(&mut conn, &env, &reg).await, 0, "all acked once confirmed");
    let got = received(&mut sub, 10).await;
    let data: Vec<String> = got.iter().map(|e| e.data.clone()).collect();
    let want: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(data, want, "published in stream order");
}

/// A bus that refuses (as a nack would) every publish whose body contains `refuse`.
struct RefusingBus {
    inner: Arc<MemoryBus>,
    refuse: &'static str,
}

#[async_trait]
impl Bus for RefusingBus {
    async fn publish(&self, key: &str, id: &str, body: &[u8]) -> BusResult<()> {
        let text = String::from_utf8_lossy(body);
        if text.contains(self.refuse) {
            return Err(BusError::NotConfirmed(format!("{key} (nacked)")));
        }
        self.inner.publish(key, id, body).await
    }
    async fn subscribe(&self, q: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        self.inner.subscribe(q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_entry_in_the_middle_of_a_batch_stays_pending_while_the_others_are_acked() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let reg = env.cfg.streams().registration();
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(xadd(&mut conn, &reg, &[(b"data", format!("{{\"n\":{i}}}").as_bytes())]).await);
    }
    let (bus, q) = memory_bus();
    let mut sub = bus.subscribe(&q).await.unwrap();
    let refusing = Arc::new(RefusingBus {
        inner: bus.clone(),
        refuse: "\\\"n\\\":2",
    });
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, refusing, settings(&env, "b1", 60_000));
    bridge.ensure_groups().await.unwrap();
    assert_eq!(
        bridge.poll_once().await.unwrap(),
        Pass {
            forwarded: 4,
            dead_lettered: 0,
            left_pending: 1
        }
    );
    let left: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(&reg)
        .arg(&env.cfg.bridge_group)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    let left: Vec<String> = left.ids.iter().map(|p| p.id.clone()).collect();
    assert_eq!(left, vec![ids[2].clone()], "only the refused entry stays pending");
    let got: Vec<String> = received(&mut sub, 4).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, vec!["{\"n\":0}", "{\"n\":1}", "{\"n\":3}", "{\"n\":4}"]);

    // Reclaimed by a bridge whose bus takes it: forwarded and acked.
    let rescuer = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings(&env, "rescuer", 0));
    assert_eq!(rescuer.reclaim_once().await.unwrap().forwarded, 1);
    assert_eq!(received(&mut sub, 1).await[0].data, "{\"n\":2}");
    assert_eq!(pending(&mut conn, &env, &reg).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_bus_pipelines_a_batch_and_refuses_only_the_unroutable_message() {
    let env = TestEnv::new(&[]);
    let bus = env.rabbit().await;
    let q = env.queue("pipelined", &["bound.#"]);
    bus.declare(&q).await.unwrap();
    let mut sub = bus.subscribe(&q).await.unwrap();
    let msgs: Vec<(&str, &str, &[u8])> = vec![
        ("bound.a", "m-0", b"0"),
        ("bound.b", "m-1", b"1"),
        ("nobody.bound", "m-2", b"2"),
        ("bound.c", "m-3", b"3"),
    ];
    let results = bus.publish_batch(&msgs).await;
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(matches!(results[2], Err(BusError::NotConfirmed(_))), "{results:?}");
    let mut got = vec![];
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap();
        got.push((d.message_id.clone().unwrap_or_default(), d.body.clone()));
        d.ack().await.unwrap();
    }
    assert_eq!(
        got,
        vec![
            ("m-0".to_string(), b"0".to_vec()),
            ("m-1".to_string(), b"1".to_vec()),
            ("m-3".to_string(), b"3".to_vec())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rabbitmq_both_streams_are_forwarded_and_the_unroutable_ones_stay_pending() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let streams = env.cfg.streams();
    let bus = Arc::new(env.rabbit().await);
    // Only heartbeats are bound: registrations are unroutable (mandatory publish refused).
    let q = env.queue("heartbeats", &[worldland_core::messages::topics::HEARTBEAT_RECEIVED]);
    bus.declare(&q).await.unwrap();
    let mut sub = bus.subscribe(&q).await.unwrap();
    for i in 0..12 {
        xadd(&mut conn, &streams.heartbeat(), &[(b"data", format!("{{\"hb\":{i}}}").as_bytes())]).await;
    }
    for i in 0..3 {
        xadd(
            &mut conn,
            &streams.registration(),
            &[(b"data", format!("{{\"reg\":{i}}}").as_bytes())],
        )
        .await;
    }
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus.clone(), settings(&env, "b1", 60_000));
    bridge.ensure_groups().await.unwrap();
    assert_eq!(
        bridge.poll_once().await.unwrap(),
        Pass {
            forwarded: 12,
            dead_lettered: 0,
            left_pending: 3
        }
    );
    assert_eq!(pending(&mut conn, &env, &streams.heartbeat()).await, 0);
    assert_eq!(pending(&mut conn, &env, &streams.registration()).await, 3);
    let got: Vec<String> = received(&mut sub, 12).await.into_iter().map(|e| e.data).collect();
    let want: Vec<String> = (0..12).map(|i| format!("{{\"hb\":{i}}}")).collect();
    assert_eq!(got, want);
}
