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
        // The consumer waits through the restart: its reconnects fail while the node is down
        // (several times: it takes seconds to boot) and must go on until one succeeds.
        let waiting = tokio::spawn(async move {
            let d = tokio::time::timeout(Duration::from_secs(90), sub.next()).await;
            (sub, d)
        });
        if round > 0 {
            tokio::task::block_in_place(|| rabbit.restart());
        }
        let id = format!("m-{round}");
        bus.publish("restart.test", &id, b"work")
            .await
            .expect("published after the restart");
        let (back, d) = waiting.await.expect("the consumer task");
        sub = back;
        let d = d
            .unwrap_or_else(|_| panic!("round {round}: no delivery within 90 s of the restart"))
            .expect("the subscription stays open");
        assert_eq!(d.message_id.as_deref(), Some(id.as_str()), "round {round}");
        d.ack().await.expect("ack");
    }
}
