//! The Lambda adapter: the same worker cores, fed by SQS with `ReportBatchItemFailures`. Each
//! record is decoded and handled on its own, so one bad or failing record fails only itself; a
//! panic in one record's handling becomes that record's failure; the response never names a
//! message id that was not in the batch. Clients are built once per cold start, in `main`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use futures::FutureExt;

use worldland_core::worker::{Handler, Outcome};

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
        let outcome = AssertUnwindSafe(handler.handle(&key, body.as_bytes(), now)).catch_unwind().await;
        crate::metrics::latency(handler.name(), started.elapsed());
        match outcome {
            Ok(Outcome::Done) => crate::metrics::message(handler.name(), "done", ""),
            Ok(Outcome::Rejected(r)) => {
                // Failed, so the queue's redrive policy parks it on its dead-letter queue; the
                // reason is in the log and the metrics.
                tracing::warn!(worker = handler.name(), reason = r.reason.code(), message = %r.message, id = %id, "message refused");
                crate::metrics::message(handler.name(), "refused", r.reason.code());
                response.add_failure(id);
            }
            Ok(Outcome::Retry(why)) => {
                tracing::warn!(worker = handler.name(), %why, id = %id, "will retry");
                crate::metrics::message(handler.name(), "retried", "");
                response.add_failure(id);
            }
            Err(_) => {
                tracing::error!(worker = handler.name(), id = %id, "handler panicked on this record");
                crate::metrics::message(handler.name(), "retried", "panic");
                response.add_failure(id);
            }
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
        async fn handle(&self, key: &str, body: &[u8], _now: DateTime<Utc>) -> Outcome {
            match (key, body) {
                (_, b"ok") => Outcome::Done,
                ("test.other", b"key") => Outcome::Done,
                ("test.default", b"key") => Outcome::Rejected(Rejection::new(Reason::MalformedJson, "wrong key")),
                (_, b"bad") => Outcome::Rejected(Rejection::new(Reason::MalformedJson, "bad")),
                (_, b"busy") => Outcome::Retry("backend down".into()),
                (_, b"boom") => panic!("a bug in one record"),
                _ => Outcome::Done,
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
