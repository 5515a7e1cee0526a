//! The Lambda adapter: the same worker cores, fed by SQS with `ReportBatchItemFailures`. Each
//! record is decoded and handled on its own, so one bad or failing record fails only itself; a
//! panic in one record's handling becomes that record's failure; the response never names a
//! message id that was not in the batch. Clients are built once per cold start, in `main`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use worldland_core::bus::Bus;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use futures::FutureExt;

use worldland_core::worker::{Failure, Handler};

use crate::backends::BackendError;
use crate::config::Config;
use crate::policy::Disposition;
use crate::worker::{Service, Worker};

pub use worldland_adapters::bus::sqs::ROUTING_KEY_ATTRIBUTE;

/// Handles one SQS batch; the failures to report.
pub async fn handle_sqs_batch(handler: &dyn Handler, event: SqsEvent, now: DateTime<Utc>) -> SqsBatchResponse {
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
        let body = record.body.unwrap_or_default();
        let started = std::time::Instant::now();
        let result = AssertUnwindSafe(handler.handle(&key, body.as_bytes(), now)).catch_unwind().await;
        crate::metrics::latency(handler.name(), started.elapsed());
        let result = result.unwrap_or_else(|_| {
            tracing::error!(worker = handler.name(), id = %id, "handler panicked on this record");
            Err(Failure::retry("the handler panicked"))
        });
        // A refused record fails too, so the queue's redrive policy parks it on its dead-letter
        // queue; its reason is in the log and the metrics.
        if crate::policy::disposition(handler.name(), Some(&id), &result) != Disposition::Ack {
            response.add_failure(id);
        }
    }
    response
}

/// Runs a worker as a Lambda function fed by SQS, until the runtime stops it.
pub async fn run_sqs_worker(handler: Arc<dyn Handler>) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        async move { Ok::<_, lambda_runtime::Error>(handle_sqs_batch(handler.as_ref(), event.payload, Utc::now()).await) }
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
    F: FnOnce(Config, Arc<dyn Bus>) -> Fut,
    Fut: Future<Output = Result<Worker, BackendError>>,
{
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let cfg = Config::from_env()?;
            crate::telemetry::init_lambda(cfg.log_format);
            let bus = crate::backends::bus(&cfg).await?;
            match factory(cfg, bus).await? {
                Worker::Consumer(handler) => run_sqs_worker(handler).await,
                Worker::Service(service) => run_scheduled(service).await,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
    use worldland_core::validation::{Reason, Rejection};

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
        let response = handle_sqs_batch(&Scripted, event, Utc::now()).await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(
            failed,
            vec!["m2", "m3", "m4", "m7"],
            "only the failing records, never an id not in the batch"
        );
    }
}
