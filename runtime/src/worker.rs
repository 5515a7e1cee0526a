//! The container transport's consumer loop: take a delivery, hand it to the handler, settle it by
//! the outcome. Acks happen only after the handler has written its work.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, Semaphore};

use worldland_core::bus::{Bus, BusResult, Delivery, QueueSpec};
use worldland_core::worker::{Handler, Outcome};

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
