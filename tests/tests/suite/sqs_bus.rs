//! The SQS bus against a local SQS (moto): routing by the workers' bindings, redelivery,
//! dead-lettering with a reason, and the bridge feeding SQS from real Redis.

use std::sync::Arc;
use std::time::Duration;

use worldland_adapters::bus::sqs::SqsBus;
use worldland_core::bus::{Bus, BusError, Subscription};
use worldland_core::messages::{topics, StreamEnvelope};
use worldland_runtime::{backends, Config};
use worldland_tests::TestEnv;

fn sqs_endpoint() -> String {
    std::env::var("WORLDLAND_TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5123".into())
}

/// A bus on its own queue names; the queues are deleted on drop of the returned guard's owner.
async fn bus(env: &TestEnv) -> (SqsBus, Config) {
    let mut vars: Vec<(String, String)> = vec![
        ("WORLDLAND_QUEUE_PREFIX".into(), format!("{}.", env.id)),
        ("WORLDLAND_SQS_ENDPOINT".into(), sqs_endpoint()),
        ("WORLDLAND_DELIVERY_LIMIT".into(), "2".into()),
        ("WORLDLAND_STREAM_PREFIX".into(), format!("{}:", env.id)),
        ("WORLDLAND_BRIDGE_GROUP".into(), format!("{}-bridge", env.id)),
    ];
    vars.push(("WORLDLAND_BUS".into(), "sqs".into()));
    let cfg = Config::from_vars(vars).unwrap();
    let bus = backends::sqs(&cfg).await;
    for q in cfg.queues() {
        bus.declare(&q)
            .await
            .expect("moto on WORLDLAND_TEST_SQS_ENDPOINT (scripts/test starts it)");
    }
    (bus, cfg)
}

async fn next(sub: &mut Box<dyn Subscription>) -> worldland_core::bus::Delivery {
    tokio::time::timeout(Duration::from_secs(15), sub.next())
        .await
        .expect("a message within 15 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_redelivers_and_dead_letters_on_sqs() {
    let env = TestEnv::new(&[]);
    let (bus, cfg) = bus(&env).await;
    let queues = cfg.queues();
    let registrations = queues
        .iter()
        .find(|q| q.bindings.contains(&topics::REGISTRATION_RECEIVED.to_string()))
        .unwrap()
        .clone();
    let mut sub = bus.subscribe(&registrations).await.unwrap();

    bus.publish(topics::REGISTRATION_RECEIVED, "m-1", b"{\"n\":1}").await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(
        (
            d.routing_key.as_str(),
            d.message_id.as_deref(),
            d.body.as_slice(),
            d.previous_deliveries
        ),
        (topics::REGISTRATION_RECEIVED, Some("m-1"), &b"{\"n\":1}"[..], 0)
    );
    d.retry().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.previous_deliveries, 1, "redelivered");
    d.dead_letter("malformed_json", "not what we wanted").await.unwrap();
    let dlq = worldland_core::bus::QueueSpec::new(registrations.dead_letter_name(), &[]);
    let mut dead = bus.subscribe(&dlq).await.unwrap();
    let parked = next(&mut dead).await;
    assert_eq!(parked.body, b"{\"n\":1}");
    parked.ack().await.unwrap();

    // Nothing is bound to this key: refused, not lost.
    assert!(matches!(
        bus.publish("nobody.listens", "m-2", b"{}").await,
        Err(BusError::NotConfirmed(_))
    ));
    bus.delete(&queues).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_feeds_sqs_from_redis() {
    let env = TestEnv::new(&[]);
    let (bus, cfg) = bus(&env).await;
    let queues = cfg.queues();
    let mut conn = env.redis().await;
    let stream = cfg.streams().heartbeat();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("data")
        .arg("{\"provider_id\":\"p\"}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let settings = redis_bridge::BridgeSettings {
        consumer: "b1".into(),
        block_ms: 100,
        ..redis_bridge::BridgeSettings::from_config(&cfg)
    };
    let bridge = redis_bridge::RedisBridge::new(conn.clone(), env.redis_blocking().await, Arc::new(bus.clone()), settings);
    bridge.ensure_groups().await.unwrap();
    assert_eq!(bridge.poll_once().await.unwrap().forwarded, 1);
    let heartbeats = queues
        .iter()
        .find(|q| q.bindings.contains(&topics::HEARTBEAT_RECEIVED.to_string()))
        .unwrap();
    let mut sub = bus.subscribe(heartbeats).await.unwrap();
    let d = next(&mut sub).await;
    let env_in: StreamEnvelope = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(
        (d.routing_key.as_str(), env_in.data.as_str()),
        (topics::HEARTBEAT_RECEIVED, "{\"provider_id\":\"p\"}")
    );
    d.ack().await.unwrap();
    bus.delete(&queues).await;
}
