//! Nothing grows without bound (issue 11): a RabbitMQ dead-letter queue over its max length drops
//! the oldest; SQS dead-letter queues keep messages for the configured retention; the dead-letter
//! and response streams stay bounded; an entry the bus always refuses is dead-lettered
//! (`forward_failed`) after N tries and the stream trims behind it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use redis::aio::ConnectionManager;
use redis_bridge::{BridgeLimits, BridgeSettings, RedisBridge};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::replies::RedisReplies;
use worldland_core::answers::BrokerKey;
use worldland_core::bus::{Bus, BusError, BusResult, QueueSpec, Subscription};
use worldland_core::messages::ProviderResponse;
use worldland_core::replies::ProviderReplies;
use worldland_tests::TestEnv;

async fn xlen(conn: &mut ConnectionManager, stream: &str) -> u64 {
    redis::cmd("XLEN").arg(stream).query_async(conn).await.unwrap()
}

async fn pending(conn: &mut ConnectionManager, stream: &str, group: &str) -> i64 {
    match redis::cmd("XPENDING").arg(stream).arg(group).query_async(conn).await.unwrap() {
        redis::Value::Array(a) => match a.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

/// Every body on a RabbitMQ queue, in order, until it is idle for a second.
async fn drain(url: &str, queue: &str) -> Vec<String> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(queue.into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut out = vec![];
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
        out.push(String::from_utf8_lossy(&d.data).into_owned());
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_dead_letter_queue_over_its_max_length_drops_the_oldest() {
    let env = TestEnv::new(&[("WORLDLAND_DLQ_MAX_LENGTH", "3"), ("WORLDLAND_DLQ_TTL_S", "3600")]);
    let bus = env.rabbit().await;
    let q = env.queue("bounded", &["bounded.#"]);
    bus.declare(&q).await.unwrap();
    // Declaring again with the same bounds is fine.
    bus.declare(&q).await.unwrap();
    let mut sub = bus.subscribe(&q).await.unwrap();
    for n in 1..=5 {
        bus.publish("bounded.x", &format!("m-{n}"), format!("{n}").as_bytes())
            .await
            .unwrap();
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap();
        d.dead_letter("malformed_json", "test").await.unwrap();
    }
    drop(sub);
    assert_eq!(drain(&env.cfg.amqp_url, &q.dead_letter_name()).await, vec!["3", "4", "5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_unbounded_dead_letter_queue_is_used_as_it_is() {
    // A DLQ declared before the bounds: the redeclare with them is refused (PRECONDITION_FAILED);
    // the bus goes on with the queue as it is.
    let env = TestEnv::new(&[]);
    let q = env.queue("legacy", &["legacy.#"]);
    let conn = Connection::connect(&env.cfg.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
    ch.queue_declare(
        q.dead_letter_name().as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
    let bus = env.rabbit().await;
    bus.declare(&q).await.unwrap();
    let mut sub = bus.subscribe(&q).await.unwrap();
    bus.publish("legacy.x", "m-1", b"1").await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap();
    d.dead_letter("malformed_json", "test").await.unwrap();
    drop(sub);
    assert_eq!(drain(&env.cfg.amqp_url, &q.dead_letter_name()).await, vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_dead_letter_queues_keep_messages_for_the_configured_retention() {
    let env = TestEnv::new(&[]);
    let endpoint = std::env::var("WORLDLAND_TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5123".into());
    let cfg = worldland_runtime::Config::from_vars(vec![
        ("WORLDLAND_QUEUE_PREFIX".to_string(), format!("{}.", env.id)),
        ("WORLDLAND_SQS_ENDPOINT".into(), endpoint),
        ("WORLDLAND_DLQ_TTL_S".into(), "3600".into()),
    ])
    .unwrap();
    let bus = worldland_runtime::backends::sqs(&cfg).await;
    let q = cfg.queues().into_iter().next().unwrap();
    bus.declare(&q).await.expect("moto (scripts/test starts it)");
    assert_eq!(bus.dead_letter_retention(&q).await.unwrap(), Some(3600));
    // A redeclare with another retention updates the existing queue.
    let longer = worldland_runtime::backends::sqs(&cfg)
        .await
        .with_dead_letter_retention(Duration::from_secs(7200));
    longer.declare(&q).await.unwrap();
    assert_eq!(longer.dead_letter_retention(&q).await.unwrap(), Some(7200));
    bus.delete(&[q]).await;
}

fn settings(env: &TestEnv, consumer: &str) -> BridgeSettings {
    BridgeSettings {
        consumer: consumer.into(),
        reclaim_idle_ms: 0,
        block_ms: 50,
        batch: 64,
        ..BridgeSettings::from_config(&env.cfg)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_and_response_streams_stay_bounded() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let streams = env.cfg.streams();
    let reg = streams.registration();
    let mut p = redis::pipe();
    for _ in 0..600 {
        // No `data`: refused (missing_data) and dead-lettered.
        p.cmd("XADD")
            .arg(&reg)
            .arg("*")
            .arg("timestamp")
            .arg("2026-01-01T00:00:00Z")
            .ignore();
    }
    p.query_async::<()>(&mut conn).await.unwrap();
    let bus = Arc::new(MemoryBus::new(5));
    let bridge = RedisBridge::new(conn.clone(), env.redis_blocking().await, bus, settings(&env, "b1")).with_limits(BridgeLimits {
        max_forward_failures: 3,
        dead_letter_max_len: 10,
        ..BridgeLimits::default()
    });
    bridge.ensure_groups().await.unwrap();
    let mut dead = 0;
    while dead < 600 {
        let pass = bridge.poll_once().await.unwrap();
        assert!(pass.dead_lettered > 0, "{pass:?}");
        dead += pass.dead_lettered;
    }
    let len = xlen(&mut conn, &streams.dead_letter()).await;
    assert!(len < 200, "the dead-letter stream is trimmed to about its MAXLEN: {len}");

    let replies = RedisReplies::new(conn.clone(), streams.clone(), 3600, BrokerKey::generate()).with_max_len(10);
    let answer = ProviderResponse::rejected("bounded");
    for _ in 0..600 {
        replies.reply("p-bounded", &answer).await.unwrap();
    }
    let len = xlen(&mut conn, &streams.response("p-bounded")).await;
    assert!(len < 200, "the response stream is trimmed to about its MAXLEN: {len}");
}

/// Refuses every publish whose body holds "poison" (as SQS refuses U+FFFF).
struct Refusing(Arc<MemoryBus>);

#[async_trait]
impl Bus for Refusing {
    async fn publish(&self, key: &str, id: &str, body: &[u8]) -> BusResult<()> {
        if String::from_utf8_lossy(body).contains("poison") {
            return Err(BusError::NotConfirmed(format!("{key}: refused")));
        }
        self.0.publish(key, id, body).await
    }
    async fn subscribe(&self, q: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        self.0.subscribe(q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_bus_always_refuses_is_dead_lettered_after_n_tries_and_the_stream_trims_behind_it() {
    let env = TestEnv::new(&[]);
    let mut conn = env.redis().await;
    let streams = env.cfg.streams();
    let reg = streams.registration();
    let group = env.cfg.bridge_group.clone();
    for data in ["{\"provider_id\":\"poison\"}", "{\"provider_id\":\"a\"}", "{\"provider_id\":\"b\"}"] {
        let _: String = redis::cmd("XADD")
            .arg(&reg)
            .arg("*")
            .arg("data")
            .arg(data)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let inner = Arc::new(MemoryBus::new(5));
    let all = QueueSpec::new("all", &["#"]);
    inner.declare(&all);
    let bridge = RedisBridge::new(
        conn.clone(),
        env.redis_blocking().await,
        Arc::new(Refusing(inner.clone())),
        settings(&env, "b1"),
    )
    .with_limits(BridgeLimits {
        max_forward_failures: 3,
        dead_letter_max_len: 1000,
        ..BridgeLimits::default()
    });
    bridge.ensure_groups().await.unwrap();
    let first = bridge.poll_once().await.unwrap();
    assert_eq!((first.forwarded, first.left_pending), (2, 1));
    bridge.trim_once().await.unwrap();
    assert_eq!(xlen(&mut conn, &reg).await, 3, "nothing trimmed behind the pending entry yet");
    // Tries 2 and 3 (reclaims): the third failure dead-letters it.
    let second = bridge.reclaim_once().await.unwrap();
    assert_eq!(second.left_pending, 1, "{second:?}");
    let third = bridge.reclaim_once().await.unwrap();
    assert_eq!(third.dead_lettered, 1, "{third:?}");
    assert_eq!(pending(&mut conn, &reg, &group).await, 0);
    bridge.trim_once().await.unwrap();
    assert!(xlen(&mut conn, &reg).await <= 1, "the stream trims behind it");
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(streams.dead_letter())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let reasons: Vec<String> = dead.ids.iter().map(|e| e.get::<String>("reason").unwrap()).collect();
    assert_eq!(reasons, vec![redis_bridge::FORWARD_FAILED]);
    let data: String = dead.ids[0].get("data").unwrap();
    assert!(data.contains("poison"));
    assert_eq!(inner.published(), 2);
}
