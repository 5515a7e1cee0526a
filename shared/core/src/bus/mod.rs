//! The message bus between workers. Two implementations with the same contract: RabbitMQ
//! (lapin) and in-process. Publishing returns only once the broker has taken the message
//! (publisher confirms); a delivery is acknowledged only after its work is written.

use async_trait::async_trait;

mod inbound;
mod message;
pub mod routes;

pub use inbound::{unknown_key, Inbound};
pub use message::{publish, HeartbeatReceived, Message, RegistrationReceived};

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The connection or channel to the broker failed.
    #[error("bus connection: {0}")]
    Connection(#[source] crate::BoxError),
    /// The broker did not take the message (nacked, unroutable or refused); says which routing key and why.
    #[error("broker refused the publish of {0}")]
    NotConfirmed(String),
    /// The bus has been shut down.
    #[error("bus closed")]
    Closed,
    /// A message could not be encoded as its body; says which routing key.
    #[error("cannot encode a {0} message: {1}")]
    Encode(&'static str, #[source] serde_json::Error),
}

/// Result of a bus operation.
pub type BusResult<T> = std::result::Result<T, BusError>;

/// A worker's queue: its name and the routing keys bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name: the configured prefix + the worker's name.
    pub name: String,
    /// Routing keys bound to the queue (AMQP topic patterns).
    pub bindings: Vec<String>,
}

impl QueueSpec {
    /// A queue from its name and the routing keys bound to it.
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
    /// The routing key the message was published with.
    pub routing_key: String,
    /// The publisher's message id (the same on redeliveries), when the transport carries one.
    pub message_id: Option<String>,
    /// The message body: JSON.
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
    /// A delivery as a transport hands it over, with the way to settle it.
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
    /// Acknowledges the delivery: the work is done and written.
    async fn ack(&self) -> BusResult<()>;
    /// Returns the message to its queue for a later delivery.
    async fn retry(&self) -> BusResult<()>;
    /// Parks the message on the queue's dead-letter queue with the refusal's reason and detail, then acks it.
    async fn dead_letter(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()>;
}

/// A queue being consumed.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the bus is shut down.
    async fn next(&mut self) -> Option<Delivery>;
}

/// The message bus port: RabbitMQ, SQS and in-process implementations with one contract.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns once the broker confirmed it holds the message.
    async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) -> BusResult<()>;
    /// Publishes several messages, each `(routing_key, message_id, body)`, and returns once the
    /// broker has confirmed or refused every one: one result per message, in order. A message
    /// whose result is `Ok` is held by the broker exactly as after [`Bus::publish`]; the others
    /// may or may not have been taken (publish them again; consumers deduplicate by message id).
    /// Transports that can pipeline (publish all, then await the confirms together) override
    /// this; the default publishes one after another.
    async fn publish_batch(&self, msgs: &[(&str, &str, &[u8])]) -> Vec<BusResult<()>> {
        let mut out = Vec::with_capacity(msgs.len());
        for (routing_key, message_id, body) in msgs {
            out.push(self.publish(routing_key, message_id, body).await);
        }
        out
    }
    /// Declares the queue (idempotently) and consumes it.
    async fn subscribe(&self, queue: &QueueSpec) -> BusResult<Box<dyn Subscription>>;
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
