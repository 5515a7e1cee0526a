//! The RabbitMQ bus against the real broker: confirms, manual acks, redelivery, dead-lettering
//! with a reason, the quorum queue's delivery limit, and refusal of unroutable messages.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use worldland_core::bus::{Bus, BusError, Subscription};
use worldland_tests::TestEnv;

async fn next(sub: &mut Box<dyn Subscription>) -> worldland_core::bus::Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("bus open")
}

/// Takes one message off a dead-letter queue: its body and the reason header.
async fn dead_letter(env: &TestEnv, queue: &str) -> (Vec<u8>, Option<String>) {
    let conn = Connection::connect(&env.cfg.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "dlq-reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a dead letter within 10 s")
        .unwrap()
        .unwrap();
    let reason = worldland_tests::dead_letter_reason(&d.properties);
    d.acker.ack(BasicAckOptions::default()).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    (d.data.clone(), reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_retry_and_dead_letter() {
    let env = TestEnv::new(&[("WORLDLAND_DELIVERY_LIMIT", "2")]);
    let bus = env.rabbit().await;
    let q = env.queue("bus-test", &["provider.*"]);
    let mut sub = bus.subscribe(&q).await.unwrap();

    bus.publish("provider.validated", "m-1", b"{\"n\":1}").await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(
        (d.body.as_slice(), d.message_id.as_deref(), d.previous_deliveries),
        (&b"{\"n\":1}"[..], Some("m-1"), 0)
    );
    d.retry().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message_id.as_deref(), Some("m-1"));
    assert!(d.previous_deliveries >= 1, "a retried message says it was delivered before");
    d.ack().await.unwrap();

    bus.publish("provider.approved", "m-2", b"bad").await.unwrap();
    next(&mut sub).await.dead_letter("malformed_json", "not JSON").await.unwrap();
    assert_eq!(
        dead_letter(&env, &q.dead_letter_name()).await,
        (b"bad".to_vec(), Some("malformed_json".into()))
    );

    // Failing on every delivery: the quorum queue dead-letters it at the delivery limit.
    bus.publish("provider.validated", "m-3", b"poison").await.unwrap();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(d)) => d.retry().await.unwrap(),
            _ => break,
        }
    }
    let (body, _) = dead_letter(&env, &q.dead_letter_name()).await;
    assert_eq!(body, b"poison");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_message_is_not_confirmed() {
    let env = TestEnv::new(&[]);
    let bus = env.rabbit().await;
    let _q = env.queue("bus-test", &["provider.*"]);
    bus.declare(&_q).await.unwrap();
    match bus.publish("nobody.listens.here", "m-1", b"{}").await {
        Err(BusError::NotConfirmed(_)) => {}
        other => panic!("expected NotConfirmed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_message_returns_when_its_consumer_dies() {
    let env = TestEnv::new(&[]);
    let bus = env.rabbit().await;
    let q = env.queue("bus-test", &["provider.*"]);
    let mut first = bus.subscribe(&q).await.unwrap();
    bus.publish("provider.validated", "m-1", b"work").await.unwrap();
    let d = next(&mut first).await;
    // The worker "dies" before acking: its connection goes away with the delivery unsettled.
    drop(d);
    drop(first);
    let mut second = bus.subscribe(&q).await.unwrap();
    let again = next(&mut second).await;
    assert_eq!(again.message_id.as_deref(), Some("m-1"));
    again.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_cannot_be_parked_goes_back_to_the_queue() {
    let env = TestEnv::new(&[]);
    let bus = env.rabbit().await;
    let q = env.queue("bus-test", &["provider.*"]);
    let mut sub = bus.subscribe(&q).await.unwrap();
    // No dead-letter queue any more: parking is unroutable, never confirmed.
    let conn = Connection::connect(&env.cfg.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(q.dead_letter_name().as_str().into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;

    bus.publish("provider.approved", "m-1", b"bad").await.unwrap();
    let refused = next(&mut sub).await.dead_letter("malformed_json", "not JSON").await;
    assert!(matches!(refused, Err(BusError::NotConfirmed(_))), "{refused:?}");
    // Not held unacked on the live channel (where it would stay until the channel died, and a
    // prefetch's worth of them would stop the consumer): it is delivered again at once.
    let again = next(&mut sub).await;
    assert_eq!(again.message_id.as_deref(), Some("m-1"));
    assert!(again.previous_deliveries >= 1);
    again.ack().await.unwrap();
}
