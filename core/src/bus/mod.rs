//! The message bus between workers. Two implementations with the same contract: RabbitMQ
//! (lapin) and in-process. Publishing returns only once the broker has taken the message
//! (publisher confirms); a delivery is acknowledged only after its work is written.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus connection: {0}")]
    Connection(String),
    #[error("broker refused the publish of {0}")]
    NotConfirmed(String),
    #[error("bus closed")]
    Closed,
}

pub type BusResult<T> = std::result::Result<T, BusError>;

/// A worker's queue: its name and the routing keys bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<String>,
}

impl QueueSpec {
    pub fn new(name: impl Into<String>, bindings: &[&str]) -> Self {
        Self {
            name: name.into(),
            bindings: bindings.iter().map(|s| s.to_string()).collect(),
        }
    }
    /// Where messages that exhausted their deliveries, or were refused, end up.
    pub fn dead_letter_name(&self) -> String {
        format!("{}.dlq", self.name)
    }
}

/// A message taken off the bus, to be settled exactly once.
pub struct Delivery {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    /// How many times this message was delivered before (0 the first time).
    pub previous_deliveries: u32,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("bytes", &self.body.len())
            .field("previous_deliveries", &self.previous_deliveries)
            .finish()
    }
}

impl Delivery {
    pub fn new(routing_key: String, message_id: Option<String>, body: Vec<u8>, previous_deliveries: u32, settle: Box<dyn Settle>) -> Self {
        Self {
            routing_key,
            message_id,
            body,
            previous_deliveries,
            settle,
        }
    }
    /// The work is done and written.
    pub async fn ack(self) -> BusResult<()> {
        self.settle.ack().await
    }
    /// Transient failure: deliver again later (up to the queue's delivery limit).
    pub async fn retry(self) -> BusResult<()> {
        self.settle.retry().await
    }
    /// Refused for good: park it on the dead-letter queue with its reason, then ack.
    pub async fn dead_letter(self, reason: &str, detail: &str) -> BusResult<()> {
        let (settle, body, key, id) = (self.settle, self.body, self.routing_key, self.message_id);
        settle.dead_letter(&key, id.as_deref(), &body, reason, detail).await
    }
}

/// How a transport settles one delivery.
#[async_trait]
pub trait Settle: Send + Sync {
    async fn ack(&self) -> BusResult<()>;
    async fn retry(&self) -> BusResult<()>;
    async fn dead_letter(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()>;
}

#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the bus is shut down.
    async fn next(&mut self) -> Option<Delivery>;
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns once the broker confirmed it holds the message.
    async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) -> BusResult<()>;
    /// Declares the queue (idempotently) and consumes it.
    async fn subscribe(&self, queue: &QueueSpec) -> BusResult<Box<dyn Subscription>>;
}

/// Which worker consumes which routing keys: one table for the RabbitMQ bindings, the SQS bus's
/// routing, `infra init` and the workers themselves.
pub mod routes {
    use crate::messages::topics;

    pub type Route = (&'static str, &'static [&'static str]);

    pub const REGISTRATION_HANDLER: Route = ("registration-handler", &[topics::REGISTRATION_RECEIVED]);
    pub const JOIN_TOKEN_ISSUER: Route = ("join-token-issuer", &[topics::PROVIDER_VALIDATED]);
    pub const HEARTBEAT_RECORDER: Route = ("heartbeat-recorder", &[topics::HEARTBEAT_RECEIVED]);
    pub const ALLOCATOR: Route = ("allocator", &[topics::JOB_ALLOCATE, topics::JOB_RELEASE]);
    /// Not a worker: the answers customers and billing read.
    pub const JOB_EVENTS: Route = (topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS);

    pub const ALL: [Route; 5] = [REGISTRATION_HANDLER, JOIN_TOKEN_ISSUER, HEARTBEAT_RECORDER, ALLOCATOR, JOB_EVENTS];

    /// Every queue, each named by `name_of` (the configured prefix + the worker's name).
    pub fn queues(name_of: impl Fn(&str) -> String) -> Vec<super::QueueSpec> {
        ALL.iter()
            .map(|(name, bindings)| super::QueueSpec::new(name_of(name), bindings))
            .collect()
    }
}

/// Topic matching as AMQP does it: `*` one word, `#` zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topics() {
        let table = [
            ("provider.validated", "provider.validated", true),
            ("provider.*", "provider.validated", true),
            ("provider.*", "provider.registration.received", false),
            ("provider.#", "provider.registration.received", true),
            ("#", "a.b.c", true),
            ("#.received", "provider.heartbeat.received", true),
            ("job.*", "provider.validated", false),
        ];
        for (p, k, want) in table {
            assert_eq!(topic_matches(p, k), want, "{p} {k}");
        }
    }
}
