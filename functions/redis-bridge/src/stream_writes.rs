//! The bridge's writes to its streams: an entry dead-lettered with its reason and acked in one
//! atomic step, the delivery count of an entry, one XACK for a batch, and the reset of a stream
//! whose ids were dragged into the future.

use redis::Value;

use crate::{dead_letter, entry, RawEntry, RedisBridge, Result};

/// KEYS[1]: the stream. ARGV: the group, the id to go back to, then the future entries already
/// handled (acked), to delete. Deletes them; then, only if no entry above that id is left (one
/// dragged there meanwhile, not yet handled, or left pending), sets the stream's last id and
/// the group's back to it. Answers 1 when reset, 0 when not yet. One script: nothing can arrive
/// between the check and the reset.
const RESET_SCRIPT: &str = r"
for i = 3, #ARGV do redis.call('XDEL', KEYS[1], ARGV[i]) end
if redis.pcall('XSETID', KEYS[1], ARGV[2])['err'] then return 0 end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
return 1
";

impl RedisBridge {
    /// Writes `e` to the dead-letter stream with its reason and acks it, atomically: a small
    /// record (where from, why, its size and at most a few cut fields, [`dead_letter::dead_letter_fields`])
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
            .arg(&message.as_bytes()[..message.len().min(dead_letter::DEAD_LETTER_FIELD_BYTES)]);
        for (k, v) in dead_letter::dead_letter_fields(e) {
            p.arg(k).arg(v);
        }
        p.ignore().cmd("XACK").arg(stream).arg(&self.settings.group).arg(&e.id).ignore();
        p.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// An entry id chosen in the future by its writer drags every later `*` id after it. Once the
    /// future entries read here are handled (`done`: forwarded or dead-lettered, so acked):
    /// delete them and set the stream's last id and the group's back to the bridge's clock (plus
    /// the allowed lead, so no id Redis gave is ever above it) — when nothing above that is left
    /// in the stream; else whoever handles the rest (this bridge's next pass or another bridge)
    /// resets it then. Entries dragged meanwhile are never lost: they are forwarded by whoever
    /// reads them.
    pub(crate) async fn undo_drag(&self, stream: &str, done: &[String], now: chrono::DateTime<chrono::Utc>) {
        let back_to = format!("{}-0", (now + entry::MAX_ENTRY_ID_LEAD).timestamp_millis());
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RESET_SCRIPT)
            .arg(1)
            .arg(stream)
            .arg(&self.settings.group)
            .arg(&back_to)
            .arg(done);
        match cmd.query_async::<i64>(&mut self.conn.clone()).await {
            Ok(1) => tracing::warn!(%stream, entries = done.len(), %back_to, "entry ids were dragged into the future; stream reset"),
            Ok(_) => tracing::warn!(%stream, "entries dragged into the future remain; whoever handles them resets the stream"),
            Err(e) => tracing::warn!(%stream, error = %e, "could not reset a dragged stream yet; the next pass retries"),
        }
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
