//! SQS bus (aws-sdk-sqs), for the serverless deployment: SQS has no topics, so a publish goes to
//! every worker queue bound to its routing key (the same table the RabbitMQ bindings use), with
//! the routing key as the message attribute `routing_key`. Each queue has a dead-letter queue
//! with a redrive policy and a bounded retention (`MessageRetentionPeriod`, 14 days by default,
//! SQS's maximum). A publish is confirmed when SendMessage succeeds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;

use worldland_core::bus::{topic_matches, Bus, BusError, BusResult, Delivery, QueueSpec, Settle, Subscription};

/// The SQS message attribute that carries the routing key (the bus's topic); without it, the
/// worker's first binding is assumed.
pub const ROUTING_KEY_ATTRIBUTE: &str = "routing_key";

/// SQS names allow letters, digits, `-` and `_`: our `.` becomes `-`.
pub fn sqs_name(queue: &str) -> String {
    queue.replace('.', "-")
}

fn err(e: impl Into<worldland_core::BoxError>) -> BusError {
    BusError::Connection(e.into())
}

#[derive(Clone)]
pub struct SqsBus {
    client: Client,
    /// Every worker queue and its bindings: publishing routes by them.
    queues: Arc<Vec<QueueSpec>>,
    urls: Arc<Mutex<HashMap<String, String>>>,
    delivery_limit: u32,
    /// Long-poll seconds for ReceiveMessage.
    wait_s: i32,
    /// How long a dead-letter queue keeps a message (`MessageRetentionPeriod`).
    dlq_retention_s: u64,
}

/// The default retention of a dead-letter queue: 14 days, the most SQS allows.
pub const DEFAULT_DEAD_LETTER_RETENTION_S: u64 = 1_209_600;

impl SqsBus {
    pub fn new(client: Client, queues: Vec<QueueSpec>, delivery_limit: u32) -> Self {
        Self {
            client,
            queues: Arc::new(queues),
            urls: Arc::default(),
            delivery_limit,
            wait_s: 1,
            dlq_retention_s: DEFAULT_DEAD_LETTER_RETENTION_S,
        }
    }

    /// The dead-letter queues' retention, clamped to what SQS accepts (60 s to 14 days).
    pub fn with_dead_letter_retention(mut self, retention: std::time::Duration) -> Self {
        self.dlq_retention_s = retention.as_secs().clamp(60, DEFAULT_DEAD_LETTER_RETENTION_S);
        self
    }

    /// Parks a message on `queue`'s dead-letter queue with its reason (the message attributes
    /// `x-worldland-reason` and `x-worldland-detail`), as a refused delivery is parked.
    pub async fn send_dead_letter(
        &self,
        queue: &QueueSpec,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
        reason: &str,
        detail: &str,
    ) -> BusResult<()> {
        let extra = [("x-worldland-reason", reason), ("x-worldland-detail", detail)];
        self.send(&queue.dead_letter_name(), routing_key, message_id.unwrap_or(""), body, &extra)
            .await
    }

    async fn url(&self, queue: &str) -> BusResult<String> {
        if let Some(u) = self.urls.lock().expect("urls lock").get(queue) {
            return Ok(u.clone());
        }
        let out = self.client.get_queue_url().queue_name(sqs_name(queue)).send().await.map_err(err)?;
        let url = out.queue_url().ok_or_else(|| err(format!("no URL for queue {queue}")))?.to_string();
        self.urls.lock().expect("urls lock").insert(queue.to_string(), url.clone());
        Ok(url)
    }

    /// Creates a worker's queue and its dead-letter queue with the redrive policy. Idempotent.
    pub async fn declare(&self, q: &QueueSpec) -> BusResult<()> {
        let dlq = self
            .client
            .create_queue()
            .queue_name(sqs_name(&q.dead_letter_name()))
            .send()
            .await
            .map_err(err)?;
        let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
        // Set apart from CreateQueue, which refuses an existing queue with other attributes:
        // a queue made before the bound gets it too.
        self.client
            .set_queue_attributes()
            .queue_url(&dlq_url)
            .attributes(QueueAttributeName::MessageRetentionPeriod, self.dlq_retention_s.to_string())
            .send()
            .await
            .map_err(err)?;
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(err)?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let redrive = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": self.delivery_limit}).to_string();
        let out = self
            .client
            .create_queue()
            .queue_name(sqs_name(&q.name))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .map_err(err)?;
        let mut urls = self.urls.lock().expect("urls lock");
        urls.insert(q.name.clone(), out.queue_url().unwrap_or_default().to_string());
        urls.insert(q.dead_letter_name(), dlq_url);
        Ok(())
    }

    /// The retention (`MessageRetentionPeriod`, seconds) of `q`'s dead-letter queue.
    pub async fn dead_letter_retention(&self, q: &QueueSpec) -> BusResult<Option<u64>> {
        let url = self.url(&q.dead_letter_name()).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod)
            .send()
            .await
            .map_err(err)?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MessageRetentionPeriod))
            .and_then(|v| v.parse().ok()))
    }

    /// Deletes queues (tests clean up what they declared).
    pub async fn delete(&self, queues: &[QueueSpec]) {
        for q in queues {
            for name in [q.name.clone(), q.dead_letter_name()] {
                if let Ok(url) = self.url(&name).await {
                    let _ = self.client.delete_queue().queue_url(url).send().await;
                }
            }
        }
    }

    async fn send(&self, queue: &str, routing_key: &str, message_id: &str, body: &[u8], extra: &[(&str, &str)]) -> BusResult<()> {
        let url = self.url(queue).await?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| BusError::NotConfirmed(format!("{routing_key}: SQS bodies are text")))?;
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(err)
        };
        let mut req = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(text)
            .message_attributes(ROUTING_KEY_ATTRIBUTE, attr(routing_key)?);
        if !message_id.is_empty() {
            req = req.message_attributes("message_id", attr(message_id)?);
        }
        for (k, v) in extra {
            req = req.message_attributes(*k, attr(v)?);
        }
        req.send()
            .await
            .map_err(|e| BusError::NotConfirmed(format!("{routing_key}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))))?;
        Ok(())
    }
}

#[async_trait]
impl Bus for SqsBus {
    async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) -> BusResult<()> {
        let targets: Vec<&QueueSpec> = self
            .queues
            .iter()
            .filter(|q| q.bindings.iter().any(|b| topic_matches(b, routing_key)))
            .collect();
        if targets.is_empty() {
            return Err(BusError::NotConfirmed(format!("{routing_key} (no queue bound)")));
        }
        for q in targets {
            self.send(&q.name, routing_key, message_id, body, &[]).await?;
        }
        Ok(())
    }

    /// Sends up to 16 messages at a time, each confirmed by SQS's answer; results in order.
    async fn publish_batch(&self, msgs: &[(&str, &str, &[u8])]) -> Vec<BusResult<()>> {
        let mut out = Vec::with_capacity(msgs.len());
        for chunk in msgs.chunks(16) {
            let mut sends = Vec::with_capacity(chunk.len());
            for &(key, id, body) in chunk {
                sends.push(self.publish(key, id, body));
            }
            out.extend(futures::future::join_all(sends).await);
        }
        out
    }

    async fn subscribe(&self, queue: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        let url = self.url(&queue.name).await?;
        Ok(Box::new(SqsSubscription {
            bus: self.clone(),
            queue: queue.clone(),
            url,
            buffered: VecDeque::new(),
        }))
    }
}

struct SqsSubscription {
    bus: SqsBus,
    queue: QueueSpec,
    url: String,
    buffered: VecDeque<aws_sdk_sqs::types::Message>,
}

#[async_trait]
impl Subscription for SqsSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(m) = self.buffered.pop_front() {
                let attr = |k: &str| {
                    m.message_attributes()
                        .and_then(|a| a.get(k))
                        .and_then(|v| v.string_value())
                        .map(str::to_string)
                };
                let key = attr(ROUTING_KEY_ATTRIBUTE).unwrap_or_default();
                let received: u32 = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let settle = SqsSettle {
                    bus: self.bus.clone(),
                    queue: self.queue.clone(),
                    url: self.url.clone(),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                };
                return Some(Delivery::new(
                    key,
                    attr("message_id"),
                    m.body().unwrap_or_default().as_bytes().to_vec(),
                    received.saturating_sub(1),
                    Box::new(settle),
                ));
            }
            let out = self
                .bus
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(self.bus.wait_s)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await;
            match out {
                Ok(o) => self.buffered.extend(o.messages().iter().cloned()),
                Err(e) => {
                    tracing::warn!(queue = %self.queue.name, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive failed; backing off");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

struct SqsSettle {
    bus: SqsBus,
    queue: QueueSpec,
    url: String,
    receipt: String,
}

#[async_trait]
impl Settle for SqsSettle {
    async fn ack(&self) -> BusResult<()> {
        self.bus
            .client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&self.receipt)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn retry(&self) -> BusResult<()> {
        // Visible again at once; the redrive policy dead-letters it at the delivery limit.
        self.bus
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&self.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn dead_letter(&self, routing_key: &str, message_id: Option<&str>, body: &[u8], reason: &str, detail: &str) -> BusResult<()> {
        self.bus
            .send_dead_letter(&self.queue, routing_key, message_id, body, reason, detail)
            .await?;
        self.ack().await
    }
}
