//! The transport-neutral worker loop: take a delivery, hand it to the handler, settle it by the
//! outcome. Acks happen only after the handler has written its work.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, Semaphore};

use crate::bus::{Bus, BusResult, Delivery, QueueSpec};
use crate::validation::{Reason, Rejection};

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Work done and written (or already done before: a duplicate).
    Done,
    /// Refused for good, with its reason: dead-lettered, never retried.
    Rejected(Rejection),
    /// A transient failure (backend down): deliver again later.
    Retry(String),
}

/// A worker's core, transport-free: the RabbitMQ, in-process and Lambda adapters all call it.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The worker's name; its queue is named after it.
    fn name(&self) -> &'static str;
    /// The routing keys it consumes.
    fn bindings(&self) -> &'static [&'static str];
    async fn handle(&self, routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Outcome;
}

/// Decodes a bus body; one that does not decode is refused (`malformed_json`), never retried.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Outcome> {
    serde_json::from_slice(body).map_err(|e| Outcome::Rejected(Rejection::new(Reason::MalformedJson, format!("not {what}: {e}"))))
}

/// Backoff before a retried message goes back, growing with its deliveries.
pub fn retry_delay(previous_deliveries: u32) -> Duration {
    Duration::from_millis((100u64 << previous_deliveries.min(6)).min(5_000))
}

/// Settles a delivery by its outcome, logging refusals with their reason code.
pub async fn settle(worker: &str, delivery: Delivery, outcome: Outcome) -> BusResult<()> {
    match &outcome {
        Outcome::Done => crate::metrics::message(worker, "done", ""),
        Outcome::Rejected(r) => crate::metrics::message(worker, "refused", r.reason.code()),
        Outcome::Retry(_) => crate::metrics::message(worker, "retried", ""),
    }
    match outcome {
        Outcome::Done => delivery.ack().await,
        Outcome::Rejected(r) => {
            tracing::warn!(worker, reason = r.reason.code(), message = %r.message, id = ?delivery.message_id, "message refused");
            delivery.dead_letter(r.reason.code(), &r.message).await
        }
        Outcome::Retry(why) => {
            tracing::warn!(worker, %why, id = ?delivery.message_id, deliveries = delivery.previous_deliveries + 1, "will retry");
            tokio::time::sleep(retry_delay(delivery.previous_deliveries)).await;
            delivery.retry().await
        }
    }
}

/// Consumes the handler's queue until `shutdown` fires, up to `concurrency` messages at once.
pub async fn run_consumer(
    bus: Arc<dyn Bus>,
    queue: QueueSpec,
    handler: Arc<dyn Handler>,
    concurrency: usize,
    mut shutdown: broadcast::Receiver<()>,
) -> BusResult<()> {
    let mut sub = bus.subscribe(&queue).await?;
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    tracing::info!(worker = handler.name(), queue = %queue.name, "consuming");
    crate::metrics::set_ready(true);
    loop {
        let delivery = tokio::select! {
            _ = shutdown.recv() => break,
            d = sub.next() => match d { Some(d) => d, None => break },
        };
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let handler = handler.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = handler.handle(&delivery.routing_key, &delivery.body, Utc::now()).await;
            crate::metrics::latency(handler.name(), started.elapsed());
            if let Err(e) = settle(handler.name(), delivery, outcome).await {
                // The message stays unacked and comes back; handlers are idempotent.
                tracing::warn!(worker = handler.name(), error = %e, "could not settle a delivery");
            }
            drop(permit);
        });
    }
    crate::metrics::set_ready(false);
    // Graceful: wait for messages in flight.
    let _ = permits.acquire_many(concurrency.max(1) as u32).await;
    tracing::info!(worker = handler.name(), "stopped");
    Ok(())
}
