//! The raw round trip the heartbeat path is compared with: XADD, XREADGROUP, publish with
//! confirms, consume and ack, pipelined as the bridge is.

use std::time::Instant;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;
use worldland_runtime::{backends, Config};

use super::xadd_all;

/// The raw round trip's plumbing: a stream with its consumer group, a durable queue, a channel
/// publishing with confirms, and a consumer that acks what it gets.
pub(super) struct RawRoundTrip {
    stream: String,
    queue: String,
    amqp: Connection,
    pub_ch: Channel,
    consuming: JoinHandle<usize>,
}

impl RawRoundTrip {
    pub(super) async fn open(cfg: &Config, conn: &mut ConnectionManager, prefix: &str, count: usize) -> anyhow::Result<Self> {
        let stream = format!("{prefix}:raw");
        let queue = format!("{prefix}.raw");
        worldland_redis::ensure_group(conn, &stream, "raw", "0").await?;
        let amqp = Connection::connect(&cfg.amqp_url, ConnectionProperties::default()).await?;
        let pub_ch = amqp.create_channel().await?;
        pub_ch.confirm_select(ConfirmSelectOptions::default()).await?;
        pub_ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let sub_ch = amqp.create_channel().await?;
        sub_ch.basic_qos(cfg.prefetch, Default::default()).await?;
        let mut consumer = sub_ch
            .basic_consume(
                queue.as_str().into(),
                "raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consuming = tokio::spawn(async move {
            let mut n = 0;
            while n < count {
                match consumer.next().await {
                    Some(Ok(d)) => {
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                        n += 1;
                    }
                    _ => break,
                }
            }
            n
        });
        Ok(Self {
            stream,
            queue,
            amqp,
            pub_ch,
            consuming,
        })
    }

    /// XADD `bodies`, then XREADGROUP batches of `batch` → publish all, await the confirms
    /// together → one XACK per batch, while the consumer consumes and acks: the seconds until
    /// it has all `count`.
    pub(super) async fn measure(
        &mut self,
        cfg: &Config,
        conn: &mut ConnectionManager,
        bodies: &[(String, String)],
        count: usize,
        batch: usize,
    ) -> anyhow::Result<f64> {
        let mut reader = backends::redis_blocking(cfg).await?;
        let t0 = Instant::now();
        xadd_all(conn, &self.stream, bodies).await?;
        self.forward(&mut reader, conn, count, batch).await?;
        let consumed = (&mut self.consuming).await?;
        anyhow::ensure!(consumed == count, "the raw consumer got {consumed} of {count}");
        Ok(t0.elapsed().as_secs_f64())
    }

    pub(super) async fn forward(
        &self,
        reader: &mut ConnectionManager,
        conn: &mut ConnectionManager,
        count: usize,
        batch: usize,
    ) -> anyhow::Result<()> {
        let mut forwarded = 0;
        while forwarded < count {
            let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("raw")
                .arg("raw-1")
                .arg("COUNT")
                .arg(batch.max(1))
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">")
                .query_async(reader)
                .await?;
            let entries: Vec<_> = reply.keys.iter().flat_map(|k| k.ids.iter()).collect();
            if entries.is_empty() {
                continue;
            }
            // Every publish started together, as the bridge does (see `RabbitBus::publish_batch`).
            let publishes = entries.iter().map(|entry| async move {
                let data: Vec<u8> = entry.get("data").unwrap_or_default();
                self.pub_ch
                    .basic_publish(
                        "".into(),
                        self.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &data,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await
            });
            for c in futures::future::join_all(publishes).await {
                anyhow::ensure!(c?.is_ack(), "the broker nacked a raw publish");
            }
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            redis::cmd("XACK")
                .arg(&self.stream)
                .arg("raw")
                .arg(&ids)
                .query_async::<()>(conn)
                .await?;
            forwarded += entries.len();
        }
        Ok(())
    }

    /// Deletes the queue and closes the connection.
    pub(super) async fn close(self) {
        let _ = self
            .pub_ch
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.amqp.close(200, "bench done".into()).await;
    }
}
