//! The transport-neutral worker loop: take a delivery, hand it to the handler, settle it by the
//! outcome. Acks happen only after the handler has written its work.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

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
