//! A worker's core, transport-free: the RabbitMQ, in-process and Lambda adapters all call a
//! [`Handler`]. A handler returns `Ok(())` when its work is written (or was already done: a
//! duplicate), or a [`Failure`] saying whether the message is refused for good or worth another
//! delivery. The handlers use `?`; the `From` impls below classify every port's error, and the
//! transports turn a `Failure` into a dead letter or a retry in one place.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::bus::{BusError, Inbound};
use crate::cluster::ClusterError;
use crate::refusal::{Reason, Rejection};
use crate::replies::ReplyError;
use crate::state::StoreError;
use crate::BoxError;

/// Why a message was not done.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Refused for good, with its reason: dead-lettered, never retried.
    #[error("refused: {0}")]
    Refuse(Rejection),
    /// A transient failure (a backend down, a race to settle later): deliver again.
    #[error("will retry: {0}")]
    Retry(#[source] BoxError),
}

impl Failure {
    /// A transient failure from anything that describes it.
    pub fn retry(e: impl Into<BoxError>) -> Self {
        Self::Retry(e.into())
    }
    /// A refusal with its reason code.
    pub fn refuse(reason: Reason, message: impl Into<String>) -> Self {
        Self::Refuse(Rejection::new(reason, message))
    }
    /// The refusal, if this is one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Refuse(r) => Some(r),
            Self::Retry(_) => None,
        }
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Self::Refuse(r)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Backend(_) => Self::Retry(Box::new(e)),
            // The stored item does not have the shape we write: no redelivery will mend it.
            StoreError::Corrupt { .. } | StoreError::Path(_) => Self::refuse(Reason::CorruptRecord, e.to_string()),
        }
    }
}

impl From<BusError> for Failure {
    fn from(e: BusError) -> Self {
        Self::Retry(Box::new(e))
    }
}

impl From<ReplyError> for Failure {
    fn from(e: ReplyError) -> Self {
        Self::Retry(Box::new(e))
    }
}

impl From<ClusterError> for Failure {
    fn from(e: ClusterError) -> Self {
        let reason = match &e {
            ClusterError::Unavailable(_) => return Self::Retry(Box::new(e)),
            ClusterError::Refused {
                status: Some(401 | 403), ..
            } => Reason::ClusterForbidden,
            ClusterError::Refused { status: Some(422), .. } => Reason::ClusterInvalid,
            ClusterError::Refused { .. } => Reason::ClusterRefused,
        };
        Self::refuse(reason, e.to_string())
    }
}

/// A worker's core, transport-free: the RabbitMQ, in-process and Lambda adapters all call it
/// with the routing key and body as delivered. Workers implement [`Consume`] instead, and get
/// this from it; tests and adapters wrap it (counting, scripted failures).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The worker's name; its queue is named after it.
    fn name(&self) -> &'static str;
    /// The routing keys it consumes.
    fn bindings(&self) -> &'static [&'static str];
    /// Handles one message body delivered under `routing_key`.
    async fn handle(&self, routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Failure>;
}

/// A worker's core over its typed inbound messages: decoding, the size check and a refusal of
/// a key it does not take happen once, in the [`Handler`] every `Consume` is.
#[async_trait]
pub trait Consume: Send + Sync + 'static {
    /// What it takes off its queue; names the queue and its bindings.
    type Inbound: Inbound;
    /// Handles one decoded message.
    async fn consume(&self, msg: Self::Inbound, now: DateTime<Utc>) -> Result<(), Failure>;
}

#[async_trait]
impl<C: Consume> Handler for C {
    fn name(&self) -> &'static str {
        C::Inbound::QUEUE
    }
    fn bindings(&self) -> &'static [&'static str] {
        C::Inbound::KEYS
    }
    async fn handle(&self, routing_key: &str, body: &[u8], now: DateTime<Utc>) -> Result<(), Failure> {
        self.consume(C::Inbound::decode(routing_key, body)?, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: Option<u16>) -> Option<&'static str> {
        Failure::from(ClusterError::refused(status, "x"))
            .rejection()
            .map(|r| r.reason.code())
    }

    #[test]
    fn cluster_errors_are_classified_by_status() {
        assert_eq!(refused(Some(401)), Some("cluster_forbidden"));
        assert_eq!(refused(Some(403)), Some("cluster_forbidden"));
        assert_eq!(refused(Some(422)), Some("cluster_invalid"));
        assert_eq!(refused(Some(404)), Some("cluster_refused"));
        assert_eq!(refused(None), Some("cluster_refused"));
        assert!(matches!(Failure::from(ClusterError::unavailable("timeout")), Failure::Retry(_)));
    }

    #[test]
    fn store_errors_retry_unless_the_record_is_corrupt() {
        assert!(matches!(Failure::from(StoreError::Backend("down".into())), Failure::Retry(_)));
        let corrupt = StoreError::Corrupt {
            key: "p".into(),
            why: "no state".into(),
        };
        assert_eq!(Failure::from(corrupt).rejection().map(|r| r.reason), Some(Reason::CorruptRecord));
    }

    #[test]
    fn the_source_is_kept_not_flattened() {
        let f = Failure::from(BusError::Connection("socket closed".into()));
        let source = std::error::Error::source(&f).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("bus connection: socket closed"));
    }
}
