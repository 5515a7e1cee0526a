//! Answers to providers written to Redis (`provider:response:<id>`), and answers kept in memory.
//!
//! Old agents create their consumer group (`sdk-group`) at `$` only after publishing, so an
//! answer written before that group exists would never reach them. The broker therefore creates
//! `sdk-group` at `0` itself before writing: the agent's own create then meets BUSYGROUP (which
//! the agents tolerate) and its `XREADGROUP >` still delivers every answer written since.
//!
//! Every entry written to Redis is signed with the broker key (`worldland_core::answers`): the
//! signature over the stream name, the `timestamp` field and the exact `data` bytes travels in
//! the extra field `broker_sig`, so agents that pin the broker's public key can tell the broker's
//! answers from anyone else's XADD, and old agents read the same `data` and `timestamp` as before.
//!
//! A response stream is bounded: each XADD trims it to about [`DEFAULT_RESPONSE_MAXLEN`] entries
//! (`MAXLEN ~`), so a provider that never reads its answers cannot grow Redis without end.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
#[cfg(feature = "redis")]
use redis::aio::ConnectionManager;

use worldland_core::answers::BrokerKey;
#[cfg(feature = "redis")]
use worldland_core::answers::{BrokerPublicKey, SIGNATURE_FIELD};
use worldland_core::messages::jobs::MiningCommand;
use worldland_core::messages::ProviderResponse;
use worldland_core::replies::{ProviderReplies, ReplyError};
use worldland_core::streams::StreamNames;
#[cfg(feature = "redis")]
use worldland_core::streams::AGENT_RESPONSE_GROUP;

#[cfg(feature = "redis")]
pub struct RedisReplies {
    /// Made on first use, so a Lambda cold start makes no network call.
    conn: tokio::sync::OnceCell<ConnectionManager>,
    url: Option<String>,
    streams: StreamNames,
    ttl_s: i64,
    /// Signs every entry written.
    key: BrokerKey,
    /// Approximate MAXLEN of each response stream.
    max_len: u64,
    timeouts: worldland_redis::RedisTimeouts,
}

/// The default approximate length bound of a response stream.
pub const DEFAULT_RESPONSE_MAXLEN: u64 = 1_000;

#[cfg(feature = "redis")]
impl RedisReplies {
    /// Answers on `conn`, each entry signed with `key`.
    pub fn new(conn: ConnectionManager, streams: StreamNames, ttl_s: i64, key: BrokerKey) -> Self {
        Self {
            conn: tokio::sync::OnceCell::new_with(Some(conn)),
            url: None,
            streams,
            ttl_s,
            key,
            max_len: DEFAULT_RESPONSE_MAXLEN,
            timeouts: Default::default(),
        }
    }

    /// Connects to `url` on the first answer, not before; each entry signed with `key`.
    pub fn lazy(url: String, streams: StreamNames, ttl_s: i64, key: BrokerKey) -> Self {
        Self {
            conn: tokio::sync::OnceCell::new(),
            url: Some(url),
            streams,
            ttl_s,
            key,
            max_len: DEFAULT_RESPONSE_MAXLEN,
            timeouts: Default::default(),
        }
    }

    /// The public half of the signing key: what agents pin.
    /// Bounds each response stream to about `max_len` entries (at least 1).
    pub fn with_max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// The connect and response timeouts of a lazily made connection.
    pub fn with_timeouts(mut self, timeouts: worldland_redis::RedisTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn public_key(&self) -> BrokerPublicKey {
        self.key.public()
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let url = self.url.as_deref().unwrap_or("redis://127.0.0.1:6379");
                worldland_redis::connect_with(url, self.timeouts).await
            })
            .await?;
        Ok(conn.clone())
    }
}

#[cfg(feature = "redis")]
impl RedisReplies {
    async fn write(&self, provider_id: &str, data: String) -> Result<(), ReplyError> {
        let err = |e: redis::RedisError| ReplyError {
            provider_id: provider_id.to_string(),
            source: Box::new(e),
        };
        let stream = self.streams.response(provider_id);
        let mut conn = self.connection().await.map_err(err)?;
        worldland_redis::ensure_group(&mut conn, &stream, AGENT_RESPONSE_GROUP, "0")
            .await
            .map_err(err)?;
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let signature = self.key.sign(&stream, &now, data.as_bytes());
        redis::pipe()
            .cmd("XADD")
            .arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("data")
            .arg(data)
            .arg("timestamp")
            .arg(now)
            .arg(SIGNATURE_FIELD)
            .arg(signature)
            .ignore()
            .cmd("EXPIRE")
            .arg(&stream)
            .arg(self.ttl_s)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(err)
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl ProviderReplies for RedisReplies {
    async fn reply(&self, provider_id: &str, response: &ProviderResponse) -> Result<(), ReplyError> {
        self.write(provider_id, serde_json::to_string(response).expect("responses serialise"))
            .await
    }

    async fn command(&self, provider_id: &str, command: &MiningCommand) -> Result<(), ReplyError> {
        self.write(provider_id, serde_json::to_string(command).expect("commands serialise"))
            .await
    }
}

/// An entry as [`RedisReplies`] would write it: what an agent reads and verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEntry {
    /// The response stream (`provider:response:<id>`, with any prefix).
    pub stream: String,
    /// The `data` field: the answer's or command's JSON.
    pub data: String,
    /// The `timestamp` field (RFC 3339, seconds).
    pub timestamp: String,
    /// The `broker_sig` field.
    pub broker_sig: String,
}

/// Answers kept in memory, for the embedded default and tests. Made with [`MemoryReplies::signed`],
/// it also keeps each entry as Redis would carry it, signed, so the SDK's checks can run on them.
pub struct MemoryReplies {
    answers: Mutex<HashMap<String, Vec<ProviderResponse>>>,
    commands: Mutex<HashMap<String, Vec<MiningCommand>>>,
    /// Bumped on every answer or command, so callers await them instead of polling.
    written: tokio::sync::watch::Sender<u64>,
    /// With a key: stream names and the signing key, and the signed entries per provider.
    wire: Option<(StreamNames, BrokerKey)>,
    entries: Mutex<HashMap<String, Vec<WireEntry>>>,
}

impl Default for MemoryReplies {
    fn default() -> Self {
        Self {
            answers: Mutex::default(),
            commands: Mutex::default(),
            written: tokio::sync::watch::channel(0).0,
            wire: None,
            entries: Mutex::default(),
        }
    }
}

impl MemoryReplies {
    /// Also keeps every answer and command as the signed entry [`RedisReplies`] would write.
    pub fn signed(streams: StreamNames, key: BrokerKey) -> Self {
        Self {
            wire: Some((streams, key)),
            ..Self::default()
        }
    }

    /// The signed entries written for `provider_id`, in order (none unless [`MemoryReplies::signed`]).
    pub fn entries_for(&self, provider_id: &str) -> Vec<WireEntry> {
        self.entries
            .lock()
            .expect("replies lock")
            .get(provider_id)
            .cloned()
            .unwrap_or_default()
    }

    fn record(&self, provider_id: &str, data: String) {
        let Some((streams, key)) = &self.wire else { return };
        let stream = streams.response(provider_id);
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let broker_sig = key.sign(&stream, &timestamp, data.as_bytes());
        self.entries
            .lock()
            .expect("replies lock")
            .entry(provider_id.to_string())
            .or_default()
            .push(WireEntry {
                stream,
                data,
                timestamp,
                broker_sig,
            });
    }

    pub fn answers_for(&self, provider_id: &str) -> Vec<ProviderResponse> {
        self.answers
            .lock()
            .expect("replies lock")
            .get(provider_id)
            .cloned()
            .unwrap_or_default()
    }
    pub fn total(&self) -> usize {
        self.answers.lock().expect("replies lock").values().map(Vec::len).sum()
    }
    /// Changes after every answer or command written.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.subscribe()
    }
    pub fn commands_for(&self, provider_id: &str) -> Vec<MiningCommand> {
        self.commands
            .lock()
            .expect("replies lock")
            .get(provider_id)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl ProviderReplies for MemoryReplies {
    async fn reply(&self, provider_id: &str, response: &ProviderResponse) -> Result<(), ReplyError> {
        self.record(provider_id, serde_json::to_string(response).expect("responses serialise"));
        self.answers
            .lock()
            .expect("replies lock")
            .entry(provider_id.to_string())
            .or_default()
            .push(response.clone());
        self.written.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn command(&self, provider_id: &str, command: &MiningCommand) -> Result<(), ReplyError> {
        self.record(provider_id, serde_json::to_string(command).expect("commands serialise"));
        self.commands
            .lock()
            .expect("replies lock")
            .entry(provider_id.to_string())
            .or_default()
            .push(command.clone());
        Ok(())
    }
}
