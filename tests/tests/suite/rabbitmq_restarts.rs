//! A RabbitMQ consumer survives its broker being killed -9 and restarted, twice: after each
//! restart a message published again reaches the same subscription (no consumer left waiting on a
//! connection that will never answer). A private node on spare ports; never the shared broker.

use std::time::Duration;

use worldland_core::bus::{Bus, QueueSpec, Subscription};
use worldland_runtime::{backends, Config};
use worldland_tests::private_rabbit::PrivateRabbit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_takes_messages_after_each_broker_restart() {
    let mut rabbit = tokio::task::block_in_place(PrivateRabbit::start);
    let vars = [
        ("WORLDLAND_AMQP_URL", rabbit.amqp_url()),
        ("WORLDLAND_EXCHANGE", "wlrestart".to_string()),
        ("WORLDLAND_AMQP_CONNECT_TIMEOUT_MS", "2000".to_string()),
        ("WORLDLAND_AMQP_OPERATION_TIMEOUT_MS", "3000".to_string()),
    ];
    let cfg = Config::from_vars(vars.into_iter().map(|(k, v)| (k.to_string(), v))).unwrap();
    let bus = backends::rabbit(&cfg).await.expect("the private node");
    let queue = QueueSpec::new("wlrestart.consumer", &["restart.*"]);
    let mut sub: Box<dyn Subscription> = bus.subscribe(&queue).await.expect("subscribe");
    tokio::task::block_in_place(|| rabbit.sync_metadata());
    for round in 0..3 {
        let id = format!("m-{round}");
        // The consumer waits through the restart: its reconnects fail while the node is down
        // (several times: it takes seconds to boot) and must go on until one succeeds. An ack
        // the killed node had not yet applied comes back as a redelivery (at least once).
        let want = id.clone();
        let waiting = tokio::spawn(async move {
            let got = tokio::time::timeout(Duration::from_secs(90), async {
                loop {
                    let d = sub.next().await.expect("the subscription stays open");
                    let this = d.message_id.clone();
                    d.ack().await.expect("ack");
                    if this.as_deref() == Some(want.as_str()) {
                        return this;
                    }
                    assert!(this.as_deref() < Some(want.as_str()), "unexpected {this:?} before {want}");
                }
            })
            .await;
            (sub, got)
        });
        if round > 0 {
            tokio::task::block_in_place(|| rabbit.restart());
        }
        bus.publish("restart.test", &id, b"work")
            .await
            .expect("published after the restart");
        let (back, got) = waiting.await.expect("the consumer task");
        sub = back;
        assert!(got.is_ok(), "round {round}: no delivery of {id} within 90 s of the restart");
    }
}
