//! Redis-to-bus bridge: reads the agents' streams through a consumer group, publishes each
//! entry to the bus and XACKs only after the publish is confirmed. Pipelined: a read batch is
//! published without waiting in between, its confirms are awaited together and the confirmed
//! entries are acked in one XACK; the streams' batches are forwarded concurrently. Entries a
//! crashed bridge left pending are reclaimed (XAUTOCLAIM); entries that cannot be forwarded go
//! to a dead-letter stream with their reason, then are acked; processed entries are trimmed. An
//! entry whose forward has failed `max_forward_failures` times (a publish the bus refuses every
//! time) is dead-lettered with reason `forward_failed` and acked, so trimming never stalls
//! behind it; its count of failed forwards is the group's delivery count for it (XPENDING). The
//! dead-letter stream itself is bounded (`MAXLEN ~`, and each record is small). Entries are read
//! through a script Redis runs ([`read`]), so an entry over `MAX_ENTRY_BYTES` never reaches the
//! bridge: it is dead-lettered by id and size. Several bridges may run at once: the consumer
//! group shares the entries out.

pub mod dead_letter;
pub mod entry;
pub mod read;
pub mod response_streams;
mod settings;
mod stream_writes;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::broadcast;
use worldland_core::bus::{Bus, BusError, HeartbeatReceived, Message, RegistrationReceived};
use worldland_redis::ensure_group;

pub use entry::{envelope_for, RawEntry};
use read::ReadFrom;
use response_streams::ResponseStreamWalk;
pub use response_streams::WalkPass;
pub use settings::*;

/// `SCAN` pages of response streams walked per housekeeping pass (500 keys each): a million
/// providers' streams are walked in 100 passes.
pub const RESPONSE_WALK_PAGES: usize = 20;

/// The longest a poll that found nothing waits before the next read.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis to {0}")]
    Reply(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub forwarded: usize,
    pub dead_lettered: usize,
    /// Entries whose publish failed: left pending, to be reclaimed later.
    pub left_pending: usize,
}

impl std::ops::AddAssign for Pass {
    fn add_assign(&mut self, o: Self) {
        self.forwarded += o.forwarded;
        self.dead_lettered += o.dead_lettered;
        self.left_pending += o.left_pending;
    }
}

pub struct RedisBridge {
    conn: ConnectionManager,
    /// Only for the reads (the script of [`read`]): counting a batch with oversized entries
    /// takes Redis a while (~0.5 s per 100 MB), longer than other commands should wait behind
    /// it on a shared connection; this connection's response timeout allows `block_ms` more.
    reader: ConnectionManager,
    bus: Arc<dyn Bus>,
    settings: BridgeSettings,
    limits: BridgeLimits,
    /// The housekeeping's walk over the response streams ([`response_streams`]).
    response_walk: ResponseStreamWalk,
}

impl RedisBridge {
    pub fn new(conn: ConnectionManager, reader: ConnectionManager, bus: Arc<dyn Bus>, settings: BridgeSettings) -> Self {
        Self {
            conn,
            reader,
            bus,
            settings,
            limits: BridgeLimits::default(),
            response_walk: ResponseStreamWalk::default(),
        }
    }

    /// With these bounds instead of the defaults.
    pub fn with_limits(mut self, limits: BridgeLimits) -> Self {
        self.limits = limits;
        self
    }

    fn streams(&self) -> [(String, &'static str); 2] {
        [
            (self.settings.streams.registration(), RegistrationReceived::ROUTING_KEY),
            (self.settings.streams.heartbeat(), HeartbeatReceived::ROUTING_KEY),
        ]
    }

    /// Creates the consumer group at `0` on both streams, so entries written before any bridge
    /// ran are read too.
    pub async fn ensure_groups(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        for (stream, _) in self.streams() {
            ensure_group(&mut conn, &stream, &self.settings.group, "0").await?;
        }
        Ok(())
    }

    /// Reads new entries of both streams (through [`read::READ_SCRIPT`], so no entry over
    /// `MAX_ENTRY_BYTES` ever reaches the bridge) and forwards them; when there were none, waits
    /// `block_ms` (at most [`IDLE_WAIT`]) before returning: a script cannot block.
    pub async fn poll_once(&self) -> Result<Pass> {
        let streams = self.streams();
        // Each stream's batch is read and forwarded concurrently with the other's.
        let forwards = streams.iter().map(|(stream, _)| async move {
            let (_, entries, _) = self.read(stream, ReadFrom::New).await?;
            let read = entries.len();
            self.forward_all(stream, entries).await.map(|pass| (read, pass))
        });
        let (mut read, mut pass) = (0, Pass::default());
        for r in futures::future::join_all(forwards).await {
            let (n, p) = r?;
            read += n;
            pass += p;
        }
        if read == 0 {
            tokio::time::sleep(Duration::from_millis(self.settings.block_ms).min(IDLE_WAIT)).await;
        }
        Ok(pass)
    }

    /// Takes over entries another (crashed) bridge left pending longer than `reclaim_idle_ms`;
    /// the streams concurrently.
    pub async fn reclaim_once(&self) -> Result<Pass> {
        let streams = self.streams();
        let reclaims = streams.iter().map(|(stream, _)| self.reclaim_stream(stream));
        let mut pass = Pass::default();
        for r in futures::future::join_all(reclaims).await {
            pass += r?;
        }
        Ok(pass)
    }

    async fn reclaim_stream(&self, stream: &str) -> Result<Pass> {
        let mut pass = Pass::default();
        let mut start = "0-0".to_string();
        loop {
            let from = ReadFrom::Pending {
                idle_ms: self.settings.reclaim_idle_ms,
                start: &start,
            };
            let (next, entries, deleted) = self.read(stream, from).await?;
            if !deleted.is_empty() {
                // Trimmed away while pending: nothing left to forward, just clear them.
                self.ack(stream, &deleted).await?;
            }
            if !entries.is_empty() {
                tracing::info!(%stream, count = entries.len(), "reclaimed pending entries");
            }
            pass += self.forward_all(stream, entries).await?;
            if next == "0-0" {
                break;
            }
            start = next;
        }
        Ok(pass)
    }

    /// Forwards one stream's entries, pipelined: every forwardable entry is published without
    /// waiting in between, the confirms are awaited together, and the confirmed ones are acked
    /// in one XACK (never before their confirm). An entry id in the future that Redis may have
    /// given (a `*` id dragged behind a forged one) is forwarded on the bridge's clock; one only
    /// its writer can have chosen is refused ([`entry::may_be_dragged`]).
    /// Refused entries are dead-lettered; an entry whose publish was not confirmed stays pending
    /// to be reclaimed, or is dead-lettered once the bus has refused it `max_forward_failures`
    /// times.
    async fn forward_all(&self, stream: &str, entries: Vec<RawEntry>) -> Result<Pass> {
        let topic = self
            .streams()
            .into_iter()
            .find(|(s, _)| s == stream)
            .map(|(_, t)| t)
            .ok_or(Error::Reply("unknown stream"))?;
        let mut pass = Pass::default();
        let now = chrono::Utc::now();
        let mut future = Vec::new();
        let mut left = Vec::new();
        // (message id, body, entry) to publish; (entry, rejection) to dead-letter.
        let mut outgoing: Vec<(String, Vec<u8>, RawEntry)> = Vec::with_capacity(entries.len());
        let mut refused = Vec::new();
        for e in entries {
            // Whatever batch or bridge reads it: an id in the future Redis may have numbered
            // (an honest `*` entry dragged behind a forged id) is forwarded on the bridge's
            // clock; one only its writer can have chosen is refused.
            let in_future = entry::lies_in_future(&e.id, now);
            let dragged = in_future && entry::may_be_dragged(&e.id);
            if in_future {
                future.push(e.id.clone());
            }
            match envelope_for(stream, &e, now, dragged) {
                Ok(env) => {
                    let body = serde_json::to_vec(&env).expect("envelopes serialise");
                    outgoing.push((env.message_id(), body, e));
                }
                Err(rej) => refused.push((e, rej)),
            }
        }

        if !outgoing.is_empty() {
            let msgs: Vec<(&str, &str, &[u8])> = outgoing.iter().map(|(id, body, _)| (topic, id.as_str(), body.as_slice())).collect();
            let mut results = self.bus.publish_batch(&msgs).await.into_iter();
            let mut confirmed = Vec::with_capacity(outgoing.len());
            let mut failed = Vec::new();
            for (_, _, e) in outgoing {
                // A transport that answered fewer results than messages: the rest unconfirmed.
                match results.next().unwrap_or(Err(BusError::Closed)) {
                    Ok(()) => confirmed.push(e.id),
                    Err(err) => failed.push((e, err)),
                }
            }
            if !confirmed.is_empty() {
                self.ack(stream, &confirmed).await?;
                pass.forwarded += confirmed.len();
            }
            for (e, err) in failed {
                let tries = self.delivery_count(stream, &e.id).await?;
                if tries >= self.limits.max_forward_failures.max(1) {
                    tracing::error!(%stream, id = %e.id, tries, error = %err, "publish refused every time; entry dead-lettered");
                    let message = format!("the bus refused it {tries} times; last: {err}");
                    self.dead_letter(stream, &e, FORWARD_FAILED, &message).await?;
                    pass.dead_lettered += 1;
                } else {
                    // Not acked: it stays pending and is reclaimed after the idle time.
                    tracing::warn!(%stream, id = %e.id, tries, error = %err, "publish not confirmed; entry left pending");
                    pass.left_pending += 1;
                    left.push(e.id);
                }
            }
        }
        for (e, rej) in refused {
            tracing::warn!(%stream, id = %e.id, reason = rej.reason.code(), message = %rej.message, "entry dead-lettered");
            self.dead_letter(stream, &e, rej.reason.code(), &rej.message).await?;
            pass.dead_lettered += 1;
        }
        // Those left pending stay in the stream until forwarded (the reset waits for them).
        future.retain(|id| !left.contains(id));
        if !future.is_empty() {
            self.undo_drag(stream, &future, now).await;
        }
        Ok(pass)
    }

    /// Trims entries every bridge has finished with: everything before the oldest pending
    /// entry, or before the last delivered one when none is pending.
    pub async fn trim_once(&self) -> Result<u64> {
        let mut trimmed = 0;
        for (stream, _) in self.streams() {
            let groups: Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut self.conn.clone())
                .await?;
            if let Some(lag) = entry::group_lag(&groups, &self.settings.group) {
                worldland_runtime::metrics::lag(&stream, lag);
            }
            let Some(last_delivered) = entry::group_last_delivered(&groups, &self.settings.group) else {
                continue;
            };
            let pending: Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(&self.settings.group)
                .query_async(&mut self.conn.clone())
                .await?;
            let min_id = entry::pending_min_id(&pending).unwrap_or(last_delivered);
            let n: u64 = redis::cmd("XTRIM")
                .arg(&stream)
                .arg("MINID")
                .arg(&min_id)
                .query_async(&mut self.conn.clone())
                .await?;
            trimmed += n;
        }
        Ok(trimmed)
    }

    /// Walks on over the response streams (at most [`RESPONSE_WALK_PAGES`] pages): each one an
    /// agent created, which has no expiry, gets [`response_streams::AGENT_STREAM_TTL_S`] (or the
    /// response TTL, if shorter).
    pub async fn bound_response_streams_once(&self) -> Result<WalkPass> {
        let pattern = self.settings.streams.response("*");
        let pass = self
            .response_walk
            .pass(&self.conn, &pattern, self.limits.agent_stream_ttl_s(), RESPONSE_WALK_PAGES)
            .await?;
        if pass.bounded > 0 {
            tracing::info!(
                bounded = pass.bounded,
                "response streams with no expiry (made by agents) given a short one"
            );
        }
        Ok(pass)
    }

    /// Runs until `shutdown` fires: poll continuously; reclaim, trim and walk the response
    /// streams every few seconds.
    pub async fn run(&self, mut shutdown: broadcast::Receiver<()>) -> Result<()> {
        self.ensure_groups().await?;
        let housekeeping = Duration::from_millis(self.settings.reclaim_idle_ms.clamp(1_000, 30_000));
        let mut last_housekeeping = tokio::time::Instant::now() - housekeeping;
        let mut failures = 0u32;
        loop {
            if last_housekeeping.elapsed() >= housekeeping {
                last_housekeeping = tokio::time::Instant::now();
                if let Err(e) = self.reclaim_once().await {
                    tracing::warn!(error = %e, "reclaim failed");
                }
                if let Err(e) = self.trim_once().await {
                    tracing::warn!(error = %e, "trim failed");
                }
                if let Err(e) = self.bound_response_streams_once().await {
                    tracing::warn!(error = %e, "response streams not walked");
                }
            }
            tokio::select! {
                _ = shutdown.recv() => break,
                r = self.poll_once() => match r {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "poll failed; backing off");
                        tokio::time::sleep(worldland_runtime::retry::retry_delay(failures)).await;
                        // The group may have vanished with a Redis restart.
                        let _ = self.ensure_groups().await;
                    }
                },
            }
        }
        tracing::info!("bridge stopped");
        Ok(())
    }
}

#[async_trait::async_trait]
impl worldland_runtime::worker::Service for RedisBridge {
    fn name(&self) -> &'static str {
        "redis-bridge"
    }
    async fn run(&self, shutdown: broadcast::Receiver<()>) -> std::result::Result<(), worldland_core::BoxError> {
        RedisBridge::run(self, shutdown).await.map_err(Into::into)
    }
}

/// The bridge as a worker, for the container entry point: its Redis connections (one of its own
/// for blocking reads) and the configured bus.
pub async fn worker(
    b: worldland_runtime::Backends,
) -> std::result::Result<worldland_runtime::worker::Worker, worldland_runtime::backends::BackendError> {
    use worldland_runtime::backends;
    let cfg = b.config();
    let conn = backends::redis(cfg).await?;
    let reader = backends::redis_blocking(cfg).await?;
    let bridge = RedisBridge::new(conn, reader, b.bus(), BridgeSettings::from_config(cfg)).with_limits(BridgeLimits::from_config(cfg));
    Ok(worldland_runtime::worker::Worker::Service(Arc::new(bridge)))
}
