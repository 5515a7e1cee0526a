//! The bus's topology on RabbitMQ: the exchanges, each worker's quorum queue with its bindings,
//! and its bounded dead-letter queue (used as it is, with a warning, when declared before with
//! other bounds).

use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use worldland_core::bus::{BusResult, QueueSpec};

use super::{bounded, close, conn_err, long, RabbitBus};

impl RabbitBus {
    pub(super) async fn declare_exchanges(&self, conn: &Connection) -> BusResult<Channel> {
        let s = &self.inner.settings;
        let ch = conn.create_channel().await.map_err(conn_err)?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(s.exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(conn_err)?;
        ch.exchange_declare(
            s.dead_letter_exchange().as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(conn_err)?;
        Ok(ch)
    }

    /// Declares a worker's queue, its dead-letter queue and bindings. Idempotent.
    pub async fn declare(&self, queue: &QueueSpec) -> BusResult<()> {
        let (conn, ch) = self.open().await?;
        let declared = bounded(
            "declaring queues",
            self.inner.settings.operation_timeout,
            self.declare_on(&conn, ch, queue),
        )
        .await;
        close(conn, "declared").await;
        declared.map(|_| ())
    }

    /// The dead-letter queue's arguments: a quorum queue bounded in length and age.
    pub fn dead_letter_arguments(&self) -> FieldTable {
        let s = &self.inner.settings;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long("quorum"));
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(s.dlq_max_length.min(i64::MAX as u64) as i64),
        );
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(s.dlq_ttl.as_millis().min(i64::MAX as u128) as i64),
        );
        args
    }

    /// Declares the queues on `ch` (which a refused redeclare closes: the channel to go on with
    /// is returned).
    pub(super) async fn declare_on(&self, conn: &Connection, ch: Channel, queue: &QueueSpec) -> BusResult<Channel> {
        let s = &self.inner.settings;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dlq = queue.dead_letter_name();
        let ch = match ch.queue_declare(dlq.as_str().into(), durable, self.dead_letter_arguments()).await {
            Ok(_) => ch,
            Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
                // Declared earlier with other arguments (before the bounds, or other values):
                // RabbitMQ closed the channel. Use the queue as it is.
                tracing::warn!(
                    queue = %dlq,
                    error = %e,
                    "the dead-letter queue exists with other arguments and is used as it is; bound it with a policy \
                     (rabbitmqctl set_policy --apply-to queues <name> '<pattern>' '{{\"max-length\":N,\"message-ttl\":MS}}') \
                     or delete it to have it redeclared"
                );
                let ch = conn.create_channel().await.map_err(conn_err)?;
                ch.queue_declare(
                    dlq.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(conn_err)?;
                ch
            }
            Err(e) => return Err(conn_err(e)),
        };
        ch.queue_bind(
            queue.dead_letter_name().as_str().into(),
            s.dead_letter_exchange().as_str().into(),
            queue.name.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(conn_err)?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long("quorum"));
        args.insert("x-dead-letter-exchange".into(), long(&s.dead_letter_exchange()));
        args.insert("x-dead-letter-routing-key".into(), long(&queue.name));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(s.delivery_limit as i32));
        ch.queue_declare(queue.name.as_str().into(), durable, args)
            .await
            .map_err(conn_err)?;
        for key in &queue.bindings {
            ch.queue_bind(
                queue.name.as_str().into(),
                s.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(conn_err)?;
        }
        Ok(ch)
    }

    /// Removes queues and exchanges (tests clean up what they declared).
    pub async fn delete_topology(&self, queues: &[QueueSpec]) -> BusResult<()> {
        let (conn, ch) = self.open().await?;
        for q in queues {
            for name in [q.name.clone(), q.dead_letter_name()] {
                let _ = ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
            }
        }
        let s = &self.inner.settings;
        for ex in [s.exchange.clone(), s.dead_letter_exchange()] {
            let _ = ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = conn.close(200, "cleanup".into()).await;
        Ok(())
    }
}
