//! The container transport's consumer loop: take a delivery, hand it to the handler, settle it by
//! the [`policy`](crate::policy). Acks happen only after the handler has written its work. A
//! handler that panics is a retry of that delivery, as on Lambda.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::{broadcast, Semaphore};

use async_trait::async_trait;
use chrono::DateTime;
use worldland_core::bus::{Bus, BusResult, Delivery, QueueSpec};
use worldland_core::worker::{Failure, Handler};
use worldland_core::BoxError;

use crate::config::Config;
use crate::policy::{disposition, Disposition};
use crate::readiness::ReadyPart;

/// What a worker crate builds from configuration: the entry points in [`crate::container`] and
/// [`crate::lambda`] run it.
#[derive(Clone)]
pub enum Worker {
    /// Consumes its own queue (named after it, bound to its routing keys) through a handler.
    Consumer(Arc<dyn Handler>),
    /// Runs a loop of its own until shutdown (the bridge; the sweeper in a container).
    Service(Arc<dyn Service>),
}

impl Worker {
    /// A queue consumer from its handler (a worker's [`Consume`](worldland_core::worker::Consume) is one).
    pub fn consumer(handler: impl Handler) -> Self {
        Self::Consumer(Arc::new(handler))
    }

    /// The handler of a queue consumer; `None` for a service.
    pub fn handler(&self) -> Option<Arc<dyn Handler>> {
        match self {
            Self::Consumer(h) => Some(h.clone()),
            Self::Service(_) => None,
        }
    }

    /// The worker's name (its queue's, its metrics' label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Consumer(h) => h.name(),
            Self::Service(s) => s.name(),
        }
    }
}

/// A worker that is not a queue consumer.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// The worker's name.
    fn name(&self) -> &'static str;
    /// Runs until `shutdown` fires.
    async fn run(&self, shutdown: broadcast::Receiver<()>) -> Result<(), BoxError>;
    /// One pass, for a scheduled Lambda invocation, with its report; `None` when this worker
    /// does not run on Lambda.
    async fn run_once(&self, _now: DateTime<Utc>) -> Option<Result<serde_json::Value, BoxError>> {
        None
    }
}

pub use crate::retry::retry_delay;

/// Settles a delivery by the handler's result.
pub async fn settle(worker: &str, delivery: Delivery, result: Result<(), Failure>) -> BusResult<()> {
    match disposition(worker, delivery.message_id.as_deref(), &result) {
        Disposition::Ack => delivery.ack().await,
        Disposition::DeadLetter { reason, detail } => delivery.dead_letter(reason, &detail).await,
        Disposition::Retry => {
            tokio::time::sleep(retry_delay(delivery.previous_deliveries)).await;
            delivery.retry().await
        }
    }
}

/// Runs a worker until `shutdown` fires: a consumer on its queue (named under the configured
/// prefix, bound to its routing keys), a service in its own loop. The container entry point and
/// `worldland up` both run workers through this.
pub async fn run_worker(
    worker: Worker,
    bus: Arc<dyn Bus>,
    cfg: &Config,
    ready: ReadyPart,
    shutdown: broadcast::Receiver<()>,
) -> Result<(), BoxError> {
    match worker {
        Worker::Consumer(handler) => {
            let queue = QueueSpec::new(cfg.queue(handler.name()), handler.bindings());
            Ok(run_consumer(bus, queue, handler, cfg.prefetch as usize, ready, shutdown).await?)
        }
        Worker::Service(service) => {
            ready.set(true);
            let r = service.run(shutdown).await;
            ready.set(false);
            r
        }
    }
}

/// Consumes the handler's queue until `shutdown` fires, up to `concurrency` messages at once;
/// `ready` while it consumes.
pub async fn run_consumer(
    bus: Arc<dyn Bus>,
    queue: QueueSpec,
    handler: Arc<dyn Handler>,
    concurrency: usize,
    ready: ReadyPart,
    mut shutdown: broadcast::Receiver<()>,
) -> BusResult<()> {
    let mut sub = bus.subscribe(&queue).await?;
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    tracing::info!(worker = handler.name(), queue = %queue.name, "consuming");
    ready.set(true);
    loop {
        let delivery = tokio::select! {
            _ = shutdown.recv() => break,
            d = sub.next() => match d { Some(d) => d, None => break },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break; // the semaphore is never closed; stop rather than panic if it were
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = AssertUnwindSafe(handler.handle(&delivery.routing_key, &delivery.body, Utc::now()))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(worker = handler.name(), id = ?delivery.message_id, "handler panicked on this delivery");
                    Err(Failure::retry("the handler panicked"))
                });
            crate::metrics::latency(handler.name(), started.elapsed());
            if let Err(e) = settle(handler.name(), delivery, result).await {
                // The message stays unacked and comes back; handlers are idempotent.
                tracing::warn!(worker = handler.name(), error = %e, "could not settle a delivery");
            }
            drop(permit);
        });
    }
    ready.set(false);
    // Graceful: wait for messages in flight.
    let _ = permits.acquire_many(concurrency.max(1) as u32).await;
    tracing::info!(worker = handler.name(), "stopped");
    Ok(())
}
