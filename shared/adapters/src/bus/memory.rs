//! In-process bus: topic routing into per-queue channels, with redelivery, a delivery limit and
//! a dead-letter list, so the embedded default behaves like the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use worldland_core::bus::{topic_matches, Bus, BusError, BusResult, Delivery, QueueSpec, Settle, Subscription};

#[derive(Debug, Clone)]
struct Message {
    routing_key: String,
    message_id: String,
    body: Vec<u8>,
    previous_deliveries: u32,
}

/// A message parked on a dead-letter queue, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub queue: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    pub reason: String,
    pub detail: String,
}

struct Queue {
    bindings: Vec<String>,
    tx: mpsc::UnboundedSender<Message>,
    /// Shared by every consumer of the queue: each message goes to one of them.
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
}

#[derive(Default)]
struct Inner {
    queues: HashMap<String, Queue>,
    dead: Vec<DeadLetter>,
    published: u64,
}

#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Mutex<Inner>>,
    delivery_limit: u32,
    /// Bumped on every dead letter, so callers await them instead of polling.
    parked: Arc<tokio::sync::watch::Sender<u64>>,
}

impl MemoryBus {
    pub fn new(delivery_limit: u32) -> Self {
        Self {
            inner: Arc::default(),
            delivery_limit,
            parked: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner.lock().expect("bus lock").dead.clone()
    }

    /// Changes after every dead letter.
    pub fn watch_dead_letters(&self) -> tokio::sync::watch::Receiver<u64> {
        self.parked.subscribe()
    }

    pub fn published(&self) -> u64 {
        self.inner.lock().expect("bus lock").published
    }

    /// Declares a queue so that messages published before anyone consumes it are kept.
    pub fn declare(&self, queue: &QueueSpec) {
        let mut inner = self.inner.lock().expect("bus lock");
        inner.queues.entry(queue.name.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            Queue {
                bindings: queue.bindings.clone(),
                tx,
                rx: Arc::new(tokio::sync::Mutex::new(rx)),
            }
        });
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) -> BusResult<()> {
        let mut inner = self.inner.lock().expect("bus lock");
        // Like the broker's mandatory publish: a message no queue takes is refused, not lost.
        if !inner
            .queues
            .values()
            .any(|q| q.bindings.iter().any(|b| topic_matches(b, routing_key)))
        {
            return Err(BusError::NotConfirmed(format!("{routing_key} (no queue bound)")));
        }
        inner.published += 1;
        for q in inner.queues.values() {
            if q.bindings.iter().any(|b| topic_matches(b, routing_key)) {
                let msg = Message {
                    routing_key: routing_key.to_string(),
                    message_id: message_id.to_string(),
                    body: body.to_vec(),
                    previous_deliveries: 0,
                };
                q.tx.send(msg).map_err(|_| BusError::Closed)?;
            }
        }
        Ok(())
    }

    async fn subscribe(&self, queue: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        self.declare(queue);
        let inner = self.inner.lock().expect("bus lock");
        let q = inner.queues.get(&queue.name).expect("declared above");
        Ok(Box::new(MemorySubscription {
            rx: q.rx.clone(),
            tx: q.tx.clone(),
            queue: queue.name.clone(),
            bus: self.clone(),
        }))
    }
}

struct MemorySubscription {
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
    tx: mpsc::UnboundedSender<Message>,
    queue: String,
    bus: MemoryBus,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        let msg = self.rx.lock().await.recv().await?;
        let settle = MemorySettle {
            msg: msg.clone(),
            tx: self.tx.clone(),
            queue: self.queue.clone(),
            bus: self.bus.clone(),
        };
        Some(Delivery::new(
            msg.routing_key,
            Some(msg.message_id),
            msg.body,
            msg.previous_deliveries,
            Box::new(settle),
        ))
    }
}

struct MemorySettle {
    msg: Message,
    tx: mpsc::UnboundedSender<Message>,
    queue: String,
    bus: MemoryBus,
}

impl MemorySettle {
    fn park(&self, reason: &str, detail: &str) {
        self.bus.inner.lock().expect("bus lock").dead.push(DeadLetter {
            queue: self.queue.clone(),
            routing_key: self.msg.routing_key.clone(),
            message_id: Some(self.msg.message_id.clone()),
            body: self.msg.body.clone(),
            reason: reason.to_string(),
            detail: detail.to_string(),
        });
        self.bus.parked.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(&self) -> BusResult<()> {
        Ok(())
    }

    async fn retry(&self) -> BusResult<()> {
        let mut again = self.msg.clone();
        again.previous_deliveries += 1;
        if again.previous_deliveries >= self.bus.delivery_limit {
            self.park("delivery_limit", "the message failed on every delivery");
            return Ok(());
        }
        self.tx.send(again).map_err(|_| BusError::Closed)
    }

    async fn dead_letter(&self, _key: &str, _id: Option<&str>, _body: &[u8], reason: &str, detail: &str) -> BusResult<()> {
        self.park(reason, detail);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_redelivers_and_dead_letters() {
        let bus = MemoryBus::new(3);
        let mut sub = bus.subscribe(&QueueSpec::new("q", &["provider.*"])).await.unwrap();
        bus.publish("provider.validated", "m1", b"one").await.unwrap();
        assert!(matches!(
            bus.publish("job.allocate", "m2", b"not for q").await,
            Err(BusError::NotConfirmed(_))
        ));
        bus.publish("provider.approved", "m3", b"three").await.unwrap();
        let d = sub.next().await.unwrap();
        assert_eq!((d.body.as_slice(), d.previous_deliveries), (&b"one"[..], 0));
        d.retry().await.unwrap();
        let d = sub.next().await.unwrap();
        assert_eq!(d.body, b"three");
        d.dead_letter("bad", "why").await.unwrap();
        let d = sub.next().await.unwrap();
        assert_eq!((d.body.as_slice(), d.previous_deliveries), (&b"one"[..], 1));
        d.retry().await.unwrap();
        let d = sub.next().await.unwrap();
        assert_eq!(d.previous_deliveries, 2);
        d.retry().await.unwrap();
        let dead = bus.dead_letters();
        assert_eq!(
            dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(),
            vec!["bad", "delivery_limit"]
        );
        // A second consumer shares the queue: each message goes to one of them.
        let mut other = bus.subscribe(&QueueSpec::new("q", &["provider.*"])).await.unwrap();
        bus.publish("provider.validated", "m4", b"four").await.unwrap();
        assert_eq!(other.next().await.unwrap().body, b"four");
    }
}
