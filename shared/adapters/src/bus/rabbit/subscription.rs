//! A worker queue's consumer: deliveries with their delivery count, settled once, and a
//! consumer that ended reconnected until it consumes again.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, Consumer};

use worldland_core::bus::{BusResult, Delivery, QueueSpec, Settle, Subscription};

use super::{backoff, conn_err, long, RabbitBus};

pub(super) struct RabbitSubscription {
    pub(super) bus: RabbitBus,
    pub(super) queue: QueueSpec,
    pub(super) conn: Arc<Connection>,
    /// `None` after the consumer ended, until a reconnect succeeds.
    pub(super) consumer: Option<Consumer>,
}

fn previous_deliveries(props: &BasicProperties, redelivered: bool) -> u32 {
    let count = props.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as u32,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u32,
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u32,
        _ => u32::from(redelivered),
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        let mut attempt = 0;
        loop {
            if let Some(consumer) = self.consumer.as_mut() {
                match consumer.next().await {
                    Some(Ok(d)) if d.acker.poisoned() => {
                        // Buffered before its channel died: it cannot be settled and the broker
                        // delivers it again; handling it would be work done twice.
                        tracing::debug!(queue = %self.queue.name, "skipping a delivery of a dead channel");
                        continue;
                    }
                    Some(Ok(d)) => return Some(self.delivery(d)),
                    Some(Err(e)) => tracing::warn!(queue = %self.queue.name, error = %e, "consumer failed; reconnecting"),
                    None => tracing::warn!(queue = %self.queue.name, "consumer cancelled by the broker; reconnecting"),
                }
                // A consumer that has ended is never polled again: lapin answers the first poll
                // after its end and leaves every later one pending forever.
                self.consumer = None;
            }
            // Unacked messages went back to the queue with the old channel; consume again.
            backoff(attempt).await;
            attempt = (attempt + 1).min(6);
            match self.bus.consume(&self.queue).await {
                Ok((conn, consumer)) => {
                    tracing::info!(queue = %self.queue.name, "consuming again");
                    self.conn = Arc::new(conn);
                    self.consumer = Some(consumer);
                }
                Err(e) => tracing::warn!(queue = %self.queue.name, error = %e, "reconnect failed"),
            }
        }
    }
}

impl RabbitSubscription {
    fn delivery(&self, d: lapin::message::Delivery) -> Delivery {
        let prev = previous_deliveries(&d.properties, d.redelivered);
        let message_id = d.properties.message_id().as_ref().map(|s| s.as_str().to_string());
        let settle = RabbitSettle {
            bus: self.bus.clone(),
            queue: self.queue.name.clone(),
            acker: d.acker,
        };
        Delivery::new(d.routing_key.as_str().to_string(), message_id, d.data, prev, Box::new(settle))
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        let conn = self.conn.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = conn.close(200, "consumer dropped".into()).await;
            });
        }
    }
}

struct RabbitSettle {
    bus: RabbitBus,
    queue: String,
    acker: lapin::Acker,
}

/// lapin answers `Ok(false)` for a settle it could not send (the delivery's channel is gone):
/// that is an error here, not done work. The broker delivers the message again.
fn sent(what: &str, res: lapin::Result<bool>) -> BusResult<()> {
    match res {
        Ok(true) => Ok(()),
        Ok(false) => Err(conn_err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            format!("{what} not sent: the delivery's channel is gone (the broker delivers it again)"),
        ))),
        Err(e) => Err(conn_err(e)),
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(&self) -> BusResult<()> {
        sent("ack", self.acker.ack(BasicAckOptions::default()).await)
    }

    async fn retry(&self) -> BusResult<()> {
        // Back to the queue. A reject (not a nack) because the quorum queue's delivery count,
        // which dead-letters at the limit, counts rejects on every RabbitMQ version (from 4.3 a
        // requeueing nack no longer counts).
        sent("reject", self.acker.reject(BasicRejectOptions { requeue: true }).await)
    }

    async fn dead_letter(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()> {
        let mut headers = FieldTable::default();
        headers.insert("x-worldland-reason".into(), long(reason));
        headers.insert("x-worldland-detail".into(), long(detail));
        headers.insert("x-original-routing-key".into(), long(routing_key));
        let dlx = self.bus.inner.settings.dead_letter_exchange();
        if let Err(e) = self
            .bus
            .publish_to(&dlx, &self.queue, message_id.unwrap_or(""), body, headers)
            .await
        {
            // Not parked: back to the queue rather than held unacked on a live channel (which
            // would stop the consumer once its prefetch fills). It comes again, counted.
            let _ = self.retry().await;
            return Err(e);
        }
        // Only once the dead-letter copy is confirmed is the original let go.
        self.ack().await
    }
}
