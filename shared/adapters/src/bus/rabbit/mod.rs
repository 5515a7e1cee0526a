//! RabbitMQ bus (lapin): a durable topic exchange; one quorum queue per worker with a
//! dead-letter exchange and a delivery limit; publisher confirms; manual acks; prefetch from
//! config; reconnects with backoff. Dead-letter queues are bounded: `x-max-length` (the oldest
//! are dropped) and `x-message-ttl`. RabbitMQ refuses to redeclare an existing queue with other
//! arguments (`PRECONDITION_FAILED`): a dead-letter queue declared before these bounds (or with
//! other values) is used as it is, with a warning naming the policy that bounds it in place
//! (`rabbitmqctl set_policy --apply-to queues worldland-dlq '<prefix>.*\.dlq$'
//! '{"max-length":100000,"message-ttl":1209600000}'`), or delete it to have it redeclared.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex;

use worldland_core::bus::{Bus, BusError, BusResult, QueueSpec, Subscription};

mod subscription;
mod topology;

use subscription::RabbitSubscription;

#[derive(Debug, Clone)]
pub struct RabbitSettings {
    pub url: String,
    pub exchange: String,
    pub prefetch: u16,
    pub delivery_limit: u32,
    /// Most messages a dead-letter queue keeps; the oldest are dropped beyond it.
    pub dlq_max_length: u64,
    /// How long a dead letter is kept.
    pub dlq_ttl: Duration,
    /// Opening a connection (TCP and the AMQP handshake) fails after this long.
    pub connect_timeout: Duration,
    /// A broker's answer to a method (channel open, declare, bind, qos, consume) that takes
    /// longer fails the operation: a node still booting accepts connections and may never answer.
    pub operation_timeout: Duration,
}

impl RabbitSettings {
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }
}

struct Inner {
    settings: RabbitSettings,
    /// The publishing connection and its confirm-mode channel, re-made after a failure.
    publisher: Mutex<Option<Publisher>>,
    /// Counts publishers made, so a failure forgets only the one it happened on.
    generation: std::sync::atomic::AtomicU64,
}

struct Publisher {
    generation: u64,
    conn: Connection,
    ch: Channel,
}

#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

fn conn_err(e: impl Into<worldland_core::BoxError>) -> BusError {
    BusError::Connection(e.into())
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

const MAX_ATTEMPTS: u32 = 6;
/// How long a publish may wait for its confirm before it counts as failed (and is retried).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `op` (a sequence of AMQP methods) within `limit`, or fails naming `what`.
async fn bounded<T>(what: &str, limit: Duration, op: impl std::future::Future<Output = BusResult<T>>) -> BusResult<T> {
    tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(conn_err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("RabbitMQ did not answer {what} within {limit:?}"),
        )))
    })
}

/// Closes a connection that is done with or failed half-way; a broker that does not answer the
/// close is not waited for past a second.
async fn close(conn: Connection, why: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(200, why.into())).await;
}

async fn backoff(attempt: u32) {
    let ms = 100u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(ms.min(5_000))).await;
}

impl RabbitBus {
    /// Connects and declares the exchanges. Fails if the broker cannot be reached after retries.
    pub async fn connect(settings: RabbitSettings) -> BusResult<Self> {
        let bus = Self {
            inner: Arc::new(Inner {
                settings,
                publisher: Mutex::new(None),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        let mut attempt = 0;
        loop {
            match bus.publisher_channel().await {
                Ok(_) => return Ok(bus),
                Err(e) if attempt + 1 >= MAX_ATTEMPTS => return Err(e),
                Err(e) => tracing::warn!(attempt, error = %e, "RabbitMQ connect failed; backing off"),
            }
            backoff(attempt).await;
            attempt += 1;
        }
    }

    pub fn settings(&self) -> &RabbitSettings {
        &self.inner.settings
    }

    async fn open(&self) -> BusResult<(Connection, Channel)> {
        let s = &self.inner.settings;
        let conn = tokio::time::timeout(s.connect_timeout, Connection::connect(&s.url, ConnectionProperties::default()))
            .await
            .map_err(|_| {
                conn_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to RabbitMQ took over {:?}", s.connect_timeout),
                ))
            })?
            .map_err(conn_err)?;
        match bounded("opening a channel", s.operation_timeout, self.declare_exchanges(&conn)).await {
            Ok(ch) => Ok((conn, ch)),
            Err(e) => {
                close(conn, "failed").await;
                Err(e)
            }
        }
    }

    /// The publisher's channel and its generation, opened now if there is none that works. One
    /// attempt, its time bounded (connect + operation timeouts): callers retry with backoff, and
    /// the lock is never held across a backoff.
    async fn publisher_channel(&self) -> BusResult<(u64, Channel)> {
        let mut guard = self.inner.publisher.lock().await;
        if let Some(p) = guard.as_ref() {
            if p.conn.status().connected() && p.ch.status().connected() {
                return Ok((p.generation, p.ch.clone()));
            }
            tracing::debug!(
                connection_errored = p.conn.status().errored(),
                channel_connected = p.ch.status().connected(),
                "publisher connection lost; reopening"
            );
        }
        let (conn, ch) = self.open().await?;
        let confirm = async { ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(conn_err) };
        if let Err(e) = bounded("confirm.select", self.inner.settings.operation_timeout, confirm).await {
            close(conn, "failed").await;
            return Err(e);
        }
        let generation = self.inner.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        *guard = Some(Publisher {
            generation,
            conn,
            ch: ch.clone(),
        });
        Ok((generation, ch))
    }

    /// Forgets the publisher of `generation` after a failure on it (not a newer one another task
    /// has made since).
    async fn forget_publisher(&self, generation: u64) {
        let mut guard = self.inner.publisher.lock().await;
        if guard.as_ref().is_some_and(|p| p.generation == generation) {
            *guard = None;
        }
    }

    async fn publish_to(&self, exchange: &str, routing_key: &str, message_id: &str, body: &[u8], headers: FieldTable) -> BusResult<()> {
        let mut last = None;
        for attempt in 0..MAX_ATTEMPTS {
            let (generation, ch) = match self.publisher_channel().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "RabbitMQ connect failed; backing off");
                    last = Some(e);
                    backoff(attempt).await;
                    continue;
                }
            };
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(ShortString::from(message_id))
                .with_headers(headers.clone());
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let publish = async {
                ch.basic_publish(exchange.into(), routing_key.into(), opts, body, props)
                    .await?
                    .await
            };
            // A confirm that never comes (a broker gone without a word, a blocked connection)
            // must not hold the handler, and with it a consumer permit, forever.
            let res = match tokio::time::timeout(CONFIRM_TIMEOUT, publish).await {
                Ok(res) => res,
                Err(_) => Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                    lapin::ConnectionState::Error,
                ))),
            };
            match res {
                Ok(lapin::Confirmation::Ack(None)) => return Ok(()),
                Ok(_) => {
                    return Err(BusError::NotConfirmed(format!(
                        "{routing_key} (nacked or unroutable: no queue bound)"
                    )))
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "publish failed; reconnecting");
                    self.forget_publisher(generation).await;
                    last = Some(conn_err(e));
                    backoff(attempt).await;
                }
            }
        }
        Err(last.unwrap_or(BusError::Closed))
    }

    async fn consume(&self, queue: &QueueSpec) -> BusResult<(Connection, Consumer)> {
        let (conn, ch) = self.open().await?;
        let consume = async {
            let ch = self.declare_on(&conn, ch, queue).await?;
            ch.basic_qos(self.inner.settings.prefetch, BasicQosOptions::default())
                .await
                .map_err(conn_err)?;
            let tag = format!("{}-{}", queue.name, uuid::Uuid::new_v4().simple());
            ch.basic_consume(
                queue.name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(conn_err)
        };
        match bounded("declaring and consuming", self.inner.settings.operation_timeout, consume).await {
            Ok(consumer) => Ok((conn, consumer)),
            Err(e) => {
                close(conn, "failed").await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Bus for RabbitBus {
    async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) -> BusResult<()> {
        let exchange = self.inner.settings.exchange.clone();
        self.publish_to(&exchange, routing_key, message_id, body, FieldTable::default())
            .await
    }

    /// Pipelined: publishes every message on the confirm channel without waiting in between,
    /// then awaits the confirms together. A message whose publish failed on the connection (not
    /// a nack) is published again on its own, with reconnects, as [`Bus::publish`] does.
    async fn publish_batch(&self, msgs: &[(&str, &str, &[u8])]) -> Vec<BusResult<()>> {
        let exchange = self.inner.settings.exchange.clone();
        let Ok((_, ch)) = self.publisher_channel().await else {
            // Cannot open a channel now: one by one, each with its reconnects and backoff.
            let mut out = Vec::with_capacity(msgs.len());
            for (key, id, body) in msgs {
                out.push(self.publish(key, id, body).await);
            }
            return out;
        };
        let opts = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        // All publishes are started together: a publish's first poll takes its delivery tag and
        // queues its frames, then waits for the I/O thread to write them. Awaiting each write
        // before queueing the next made every message a round trip between the two threads.
        let pipelined = futures::future::join_all(msgs.iter().map(|(key, id, body)| {
            let (ch, exchange) = (&ch, exchange.as_str());
            async move {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(ShortString::from(*id));
                ch.basic_publish(exchange.into(), (*key).into(), opts, body, props).await?.await
            }
        }));
        // Bounded like a single publish, the writes included (a blocked connection stops taking
        // frames): past it, each message goes again on its own (at least once; consumers are
        // idempotent).
        let confirmations = match tokio::time::timeout(CONFIRM_TIMEOUT, pipelined).await {
            Ok(c) => c,
            Err(_) => msgs
                .iter()
                .map(|_| {
                    Err(lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Error,
                    )))
                })
                .collect(),
        };
        let mut out = Vec::with_capacity(msgs.len());
        for ((key, id, body), c) in msgs.iter().zip(confirmations) {
            out.push(match c {
                Ok(lapin::Confirmation::Ack(None)) => Ok(()),
                Ok(_) => Err(BusError::NotConfirmed(format!("{key} (nacked or unroutable: no queue bound)"))),
                Err(e) => {
                    // The channel failed under it (a broken channel is re-made on next use):
                    // published again on its own, with reconnects and backoff.
                    tracing::warn!(error = %e, "pipelined publish failed; publishing it again");
                    self.publish(key, id, body).await
                }
            });
        }
        out
    }

    async fn subscribe(&self, queue: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        let (conn, consumer) = self.consume(queue).await?;
        Ok(Box::new(RabbitSubscription {
            bus: self.clone(),
            queue: queue.clone(),
            conn: Arc::new(conn),
            consumer: Some(consumer),
        }))
    }
}
