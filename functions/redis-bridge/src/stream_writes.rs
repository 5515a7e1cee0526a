//! The bridge's writes to its streams: an entry dead-lettered with its reason and acked in one
//! atomic step, the delivery count of an entry, one XACK for a batch.

use redis::Value;

use crate::{entry, RawEntry, RedisBridge, Result};

impl RedisBridge {
    /// Writes `e` to the dead-letter stream with its reason and acks it, atomically: a small
    /// record (where from, why, its size and at most a few cut fields, [`entry::dead_letter_fields`])
    /// in a stream bounded by `MAXLEN ~`, so bounded in bytes too.
    pub(crate) async fn dead_letter(&self, stream: &str, e: &RawEntry, reason: &str, message: &str) -> Result<()> {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("XADD")
            .arg(self.settings.streams.dead_letter())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.limits.dead_letter_max_len.max(1))
            .arg("*")
            .arg("stream")
            .arg(stream)
            .arg("entry_id")
            .arg(&e.id)
            .arg("reason")
            .arg(reason)
            .arg("message")
            .arg(&message.as_bytes()[..message.len().min(entry::DEAD_LETTER_FIELD_BYTES)]);
        for (k, v) in entry::dead_letter_fields(e) {
            p.arg(k).arg(v);
        }
        p.ignore().cmd("XACK").arg(stream).arg(&self.settings.group).arg(&e.id).ignore();
        p.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// How many times the group has delivered `id` (read, then reclaimed): the forwards tried.
    /// 1 when Redis does not say (no longer pending).
    pub(crate) async fn delivery_count(&self, stream: &str, id: &str) -> Result<u64> {
        let reply: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&self.settings.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(entry::pending_delivery_count(&reply).unwrap_or(1))
    }

    /// Acks `ids` of `stream` in one XACK.
    pub(crate) async fn ack(&self, stream: &str, ids: &[String]) -> Result<()> {
        redis::cmd("XACK")
            .arg(stream)
            .arg(&self.settings.group)
            .arg(ids)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
