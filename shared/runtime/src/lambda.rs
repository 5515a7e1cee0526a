//! The Lambda adapter: the same worker cores, fed by SQS with `ReportBatchItemFailures`. Each
//! record is decoded and handled on its own, so one bad or failing record fails only itself; a
//! panic in one record's handling becomes that record's failure; the response never names a
//! message id that was not in the batch. A refused record is parked by the function itself on
//! the worker queue's dead-letter queue, with its reason (message attributes
//! `x-worldland-reason`, `x-worldland-detail`), and reported as done — not failed, which would
//! have SQS deliver it again maxReceiveCount times before its redrive policy parks it without a
//! reason; if parking fails, the record is reported as failed and SQS delivers it again. Clients
//! are built once per cold start, in `main`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use worldland_adapters::bus::sqs::SqsBus;
use worldland_core::bus::{BusResult, QueueSpec};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::Utc;
use futures::FutureExt;
use worldland_core::clock::{Clock, SystemClock};

use worldland_core::worker::{Failure, Handler};

use crate::backends::BackendError;
use crate::config::Config;
use crate::policy::Disposition;
use crate::wiring::Backends;
use crate::worker::{Service, Worker};

pub use lambda_runtime::Error;
pub use worldland_adapters::bus::sqs::ROUTING_KEY_ATTRIBUTE;

/// Where a refused record is parked: the worker queue's dead-letter queue.
#[async_trait]
pub trait Park: Send + Sync {
    async fn park(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()>;
}

/// Parks on a worker queue's SQS dead-letter queue (`QueueSpec::dead_letter_name`).
pub struct SqsPark {
    bus: SqsBus,
    queue: QueueSpec,
}

impl SqsPark {
    pub fn new(bus: SqsBus, queue: QueueSpec) -> Self {
        Self { bus, queue }
    }

    /// For `handler`'s queue, named under `WORLDLAND_QUEUE_PREFIX`.
    pub fn for_worker(cfg: &Config, bus: SqsBus, handler: &dyn Handler) -> Self {
        let name = cfg.queue(handler.name());
        let queue = cfg
            .queues()
            .into_iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| QueueSpec::new(name, handler.bindings()));
        Self::new(bus, queue)
    }
}

#[async_trait]
impl Park for SqsPark {
    async fn park(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()> {
        self.bus
            .send_dead_letter(&self.queue, routing_key, message_id, body, reason, detail)
            .await
    }
}

/// A record parked by [`MemoryPark`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    pub reason: String,
    pub detail: String,
}

/// Keeps parked records in memory (tests); refuses every park while `refuse` is set.
#[derive(Default)]
pub struct MemoryPark {
    pub parked: std::sync::Mutex<Vec<Parked>>,
    pub refuse: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Park for MemoryPark {
    async fn park(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(worldland_core::bus::BusError::NotConfirmed("parking refused".into()));
        }
        self.parked.lock().expect("parked lock").push(Parked {
            routing_key: routing_key.into(),
            message_id: message_id.map(str::to_string),
            body: body.to_vec(),
            reason: reason.into(),
            detail: detail.into(),
        });
        Ok(())
    }
}

/// Handles one SQS batch, parking refused records on `park`; the failures to report. Each record
/// is handled at its own `clock.now()`: a batch can take up to the function's timeout, and one
/// time for all of it would bill and judge the last record as if it ran with the first.
pub async fn handle_sqs_batch(handler: &dyn Handler, park: &dyn Park, event: SqsEvent, clock: &dyn Clock) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let Some(id) = record.message_id.clone() else {
            // Nothing to name in a failure report: SQS redelivers it after the visibility timeout.
            tracing::error!(worker = handler.name(), "an SQS record without a message id");
            continue;
        };
        let key = record
            .message_attributes
            .get(ROUTING_KEY_ATTRIBUTE)
            .and_then(|a| a.string_value.clone())
            .unwrap_or_else(|| handler.bindings().first().copied().unwrap_or_default().to_string());
        let message_id = record
            .message_attributes
            .get("message_id")
            .and_then(|a| a.string_value.clone())
            .unwrap_or_else(|| id.clone());
        let body = record.body.unwrap_or_default();
        let started = std::time::Instant::now();
        let result = AssertUnwindSafe(handler.handle(&key, body.as_bytes(), clock.now()))
            .catch_unwind()
            .await;
        crate::metrics::latency(handler.name(), started.elapsed());
        let result = result.unwrap_or_else(|_| {
            tracing::error!(worker = handler.name(), id = %id, "handler panicked on this record");
            Err(Failure::retry("the handler panicked"))
        });
        match crate::policy::disposition(handler.name(), Some(&message_id), &result) {
            Disposition::Ack => {}
            Disposition::Retry => response.add_failure(id),
            Disposition::DeadLetter { reason, detail } => {
                // Parked here with its reason, then done; if parking fails, delivered again.
                if let Err(e) = park.park(&key, Some(&message_id), body.as_bytes(), reason, &detail).await {
                    tracing::warn!(worker = handler.name(), id = %id, reason, error = %e, "could not park a refused record; it is delivered again");
                    response.add_failure(id);
                }
            }
        }
    }
    response
}

/// Runs a worker as a Lambda function fed by SQS, until the runtime stops it; refused records
/// are parked on `park`.
pub async fn run_sqs_worker(handler: Arc<dyn Handler>, park: Arc<dyn Park>) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
        let (handler, park) = (handler.clone(), park.clone());
        async move { Ok::<_, lambda_runtime::Error>(handle_sqs_batch(handler.as_ref(), park.as_ref(), event.payload, &SystemClock).await) }
    }))
    .await
}

/// Runs a service's one pass per scheduled (EventBridge) event, its report as the result.
pub async fn run_scheduled(service: Arc<dyn Service>) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_event: lambda_runtime::LambdaEvent<EventBridgeEvent>| {
            let service = service.clone();
            async move {
                match service.run_once(Utc::now()).await {
                    Some(result) => result,
                    None => Err(format!("{} does not run on a schedule", service.name()).into()),
                }
            }
        },
    ))
    .await
}

/// The Lambda entry point every worker's `lambda.rs` calls: configuration, Lambda logging, the
/// configured bus for publishing, the worker built once per cold start, then its events.
pub fn main<F, Fut>(factory: F) -> Result<(), lambda_runtime::Error>
where
    F: FnOnce(Backends) -> Fut,
    Fut: Future<Output = Result<Worker, BackendError>>,
{
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let cfg = Config::from_env()?;
            crate::telemetry::init_lambda(cfg.log_format);
            let bus = crate::backends::bus(&cfg).await?;
            // Refused records are parked on the worker queue's SQS dead-letter queue.
            let sqs = crate::backends::sqs(&cfg).await;
            match factory(Backends::new(cfg.clone(), bus)).await? {
                Worker::Consumer(handler) => {
                    let park = Arc::new(SqsPark::for_worker(&cfg, sqs, handler.as_ref()));
                    run_sqs_worker(handler, park).await
                }
                Worker::Service(service) => run_scheduled(service).await,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
    use chrono::DateTime;
    use worldland_core::refusal::{Reason, Rejection};

    /// Done for "ok", refused for "bad", retry for "busy", and a panic for "boom".
    struct Scripted;

    #[async_trait]
    impl Handler for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn bindings(&self) -> &'static [&'static str] {
            &["test.default"]
        }
        async fn handle(&self, key: &str, body: &[u8], _now: DateTime<Utc>) -> Result<(), Failure> {
            match (key, body) {
                (_, b"ok") => Ok(()),
                ("test.other", b"key") => Ok(()),
                ("test.default", b"key") => Err(Rejection::new(Reason::MalformedJson, "wrong key").into()),
                (_, b"bad") => Err(Rejection::new(Reason::MalformedJson, "bad").into()),
                (_, b"busy") => Err(Failure::retry("backend down")),
                (_, b"boom") => panic!("a bug in one record"),
                _ => Ok(()),
            }
        }
    }

    fn record(id: Option<&str>, body: &str, key: Option<&str>) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = id.map(str::to_string);
        m.body = Some(body.to_string());
        if let Some(k) = key {
            let mut a = SqsMessageAttribute::default();
            a.string_value = Some(k.to_string());
            a.data_type = Some("String".into());
            m.message_attributes.insert(ROUTING_KEY_ATTRIBUTE.into(), a);
        }
        m
    }

    #[tokio::test]
    async fn each_record_fails_only_itself() {
        let mut event = SqsEvent::default();
        event.records = vec![
            record(Some("m1"), "ok", None),
            record(Some("m2"), "bad", None),
            record(Some("m3"), "busy", None),
            record(Some("m4"), "boom", None),
            record(Some("m5"), "ok", None),
            record(None, "busy", None),
            record(Some("m6"), "key", Some("test.other")),
            record(Some("m7"), "key", None),
        ];
        let park = MemoryPark::default();
        let response = handle_sqs_batch(&Scripted, &park, event.clone(), &SystemClock).await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(
            failed,
            vec!["m3", "m4"],
            "only the records to retry, never an id not in the batch; refused ones are parked"
        );
        let parked = park.parked.lock().unwrap().clone();
        let parked: Vec<(Option<&str>, &str, &[u8])> = parked
            .iter()
            .map(|p| (p.message_id.as_deref(), p.reason.as_str(), p.body.as_slice()))
            .collect();
        assert_eq!(
            parked,
            vec![
                (Some("m2"), "malformed_json", b"bad".as_slice()),
                (Some("m7"), "malformed_json", b"key".as_slice())
            ]
        );

        // Parking fails: the refused records are reported as failed, to be delivered again.
        let refusing = MemoryPark::default();
        refusing.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        let response = handle_sqs_batch(&Scripted, &refusing, event, &SystemClock).await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(failed, vec!["m2", "m3", "m4", "m7"]);
    }

    /// Records the time it was given for each record.
    #[derive(Default)]
    struct Timed(std::sync::Mutex<Vec<DateTime<Utc>>>);

    #[async_trait]
    impl Handler for Timed {
        fn name(&self) -> &'static str {
            "timed"
        }
        fn bindings(&self) -> &'static [&'static str] {
            &["test.timed"]
        }
        async fn handle(&self, _key: &str, _body: &[u8], now: DateTime<Utc>) -> Result<(), Failure> {
            self.0.lock().unwrap().push(now);
            Ok(())
        }
    }

    /// A batch can run for the function's whole timeout: each record is judged at its own time,
    /// not the batch's start.
    #[tokio::test]
    async fn each_record_is_handled_at_its_own_time() {
        let start = Utc::now();
        let ticks = std::sync::atomic::AtomicI64::new(0);
        let clock = move || start + chrono::Duration::seconds(60 * ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let mut event = SqsEvent::default();
        event.records = (0..3).map(|i| record(Some(&format!("m{i}")), "ok", None)).collect();
        let handler = Timed::default();
        handle_sqs_batch(&handler, &MemoryPark::default(), event, &clock).await;
        let seen = handler.0.lock().unwrap().clone();
        let minutes: Vec<i64> = seen.iter().map(|t| (*t - start).num_minutes()).collect();
        assert_eq!(minutes, vec![0, 1, 2]);
    }
}
