//! Talking to the broker through Redis: publish a signed registration, wait for the broker's
//! signed answer on the provider's response stream (read from the registration's own time, so an
//! answer written before we start reading is never missed; entries the pinned broker key did not
//! sign are skipped), open the sealed join token.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use crypto_box::SecretKey;
use k256::ecdsa::SigningKey;
use redis::aio::ConnectionManager;
use redis::Value;
use worldland_core::answers::BrokerPublicKey;
use worldland_core::messages::{ProviderResponse, Registration, SealedJoin};
use worldland_core::sealed::open_join;
use worldland_core::signature::sign_personal;
use worldland_core::streams::StreamNames;
use worldland_redis::RedisTimeouts;

use crate::{verify, Error, Result};

/// XADDs the registration with its EIP-191 signature; returns the entry id.
pub async fn publish_registration(
    conn: &mut ConnectionManager,
    streams: &StreamNames,
    reg: &Registration,
    key: &SigningKey,
) -> Result<String> {
    let data = serde_json::to_string(reg).expect("registrations serialise");
    let signature = sign_personal(key, data.as_bytes());
    let id: String = redis::cmd("XADD")
        .arg(streams.registration())
        .arg("*")
        .arg("data")
        .arg(&data)
        .arg("signature")
        .arg(signature)
        .arg("timestamp")
        .arg(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true))
        .query_async(conn)
        .await?;
    Ok(id)
}

/// How long each read of the answer wait blocks.
pub const ANSWER_BLOCK: Duration = Duration::from_secs(1);

/// Waits for the broker's answer written after `registration_entry` (an id of the registration
/// stream, which shares Redis's clock with the response stream). Only an entry signed by
/// `broker` for this provider's stream, and fresh, counts: every other entry (unsigned, forged,
/// signed for another stream, stale, or not an answer) is skipped — logged — and the wait goes
/// on, so a forged entry can neither be taken nor hide the real answer.
///
/// `conn` must be a connection of its own for blocking reads, with a response timeout over
/// [`ANSWER_BLOCK`] (`worldland_redis::connect_with(url, timeouts.blocking(ANSWER_BLOCK))`). A
/// read that fails ends the wait with its error: the caller reconnects and calls again, or uses
/// [`wait_for_response_at`], which does that itself.
pub async fn wait_for_response(
    conn: &mut ConnectionManager,
    streams: &StreamNames,
    provider_id: &str,
    registration_entry: &str,
    broker: &BrokerPublicKey,
    timeout: Duration,
) -> Result<ProviderResponse> {
    let wait = Wait::new(streams, provider_id, registration_entry, broker, timeout);
    wait.run(&mut Reader::Given(conn)).await
}

/// [`wait_for_response`] on connections of its own to `redis_url` (with `timeouts`, and
/// [`ANSWER_BLOCK`] added to the response timeout): a read that fails — a timed-out one
/// included, as after a failover — is logged and retried on a new connection, with a growing
/// backoff, until `timeout`.
pub async fn wait_for_response_at(
    redis_url: &str,
    timeouts: RedisTimeouts,
    streams: &StreamNames,
    provider_id: &str,
    registration_entry: &str,
    broker: &BrokerPublicKey,
    timeout: Duration,
) -> Result<ProviderResponse> {
    let wait = Wait::new(streams, provider_id, registration_entry, broker, timeout);
    let mut reader = Reader::Fresh {
        url: redis_url,
        timeouts: timeouts.blocking(ANSWER_BLOCK),
        conn: None,
    };
    wait.run(&mut reader).await
}

/// Where the answer wait reads: a connection given, or ones of its own, replaced after a failure.
enum Reader<'a> {
    Given(&'a mut ConnectionManager),
    Fresh {
        url: &'a str,
        timeouts: RedisTimeouts,
        conn: Option<ConnectionManager>,
    },
}

impl Reader<'_> {
    async fn query(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Reader::Given(conn) => cmd.query_async(&mut **conn).await,
            Reader::Fresh { url, timeouts, conn } => {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => worldland_redis::connect_with(url, *timeouts).await?,
                };
                let reply = cmd.query_async(&mut c).await;
                // Kept only while it answers: a timed-out socket may be half-open.
                if reply.is_ok() {
                    *conn = Some(c);
                }
                reply
            }
        }
    }

    fn retries(&self) -> bool {
        matches!(self, Reader::Fresh { .. })
    }
}

/// One answer wait: what it reads, after what, until when.
struct Wait<'a> {
    stream: String,
    broker: &'a BrokerPublicKey,
    timeout: Duration,
    cursor: String,
}

impl<'a> Wait<'a> {
    fn new(streams: &StreamNames, provider_id: &str, registration_entry: &str, broker: &'a BrokerPublicKey, timeout: Duration) -> Self {
        // XREAD returns entries after the cursor: start just before the registration's
        // millisecond, so an answer written within that same millisecond is not missed.
        let ms: u64 = registration_entry.split('-').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let cursor = match ms.checked_sub(1) {
            Some(before) => format!("{before}-{}", u64::MAX),
            None => "0-0".to_string(),
        };
        Self {
            stream: streams.response(provider_id),
            broker,
            timeout,
            cursor,
        }
    }

    async fn run(mut self, reader: &mut Reader<'_>) -> Result<ProviderResponse> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = crate::heartbeat::reconnect_backoff(Duration::from_secs(5));
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(self.timeout.as_secs()));
            }
            let block = left.min(ANSWER_BLOCK).as_millis().max(1) as u64;
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(10)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&self.cursor);
            // Connecting counts against the deadline too.
            let reply = match tokio::time::timeout_at(deadline, reader.query(&cmd)).await {
                Err(_) => return Err(Error::Timeout(self.timeout.as_secs())),
                Ok(Err(e)) if reader.retries() => {
                    let retry_in = backoff.next().unwrap_or(ANSWER_BLOCK);
                    tracing::warn!(error = %e, ?retry_in, "reading the broker's answer failed; retrying on a new connection");
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + retry_in)).await;
                    continue;
                }
                Ok(reply) => reply?,
            };
            backoff = crate::heartbeat::reconnect_backoff(Duration::from_secs(5));
            if let Some(resp) = self.take_answer(&reply) {
                return Ok(resp);
            }
        }
    }

    /// The first entry of `reply` that is the broker's answer; the cursor moves past the others.
    fn take_answer(&mut self, reply: &Value) -> Option<ProviderResponse> {
        for entry in verify::entries(reply) {
            self.cursor = entry.id.clone();
            if !verify::believe(&entry, &self.stream, self.broker, Utc::now()) {
                continue;
            }
            match serde_json::from_slice::<ProviderResponse>(&entry.data) {
                Ok(resp) => return Some(resp),
                // The broker's, but a command rather than an answer.
                Err(_) => tracing::debug!(entry = %entry.id, "not an answer; still waiting"),
            }
        }
        None
    }
}

/// The token of an approval, opened from `sealed_join`. This SDK always sends `enc_pubkey`, so
/// a join in the clear (`join_token` / `join_command` without `sealed_join`) is refused: the
/// broker seals to every agent that asks. Use [`crate::join::JoinPlan::from_answer`] next; the
/// `join_command` text is never run.
pub fn join_from_response(resp: &ProviderResponse, secret: &SecretKey) -> Result<SealedJoin> {
    if !resp.success {
        return Err(Error::Rejected(resp.message.clone()));
    }
    if let Some(sealed) = &resp.sealed_join {
        return open_join(sealed, secret).map_err(|e| Error::Sealed(e.to_string()));
    }
    if resp.join_token.is_some() || resp.join_command.is_some() {
        return Err(Error::UnsafeJoin(
            "the answer carries a join token in the clear although this agent sent enc_pubkey; refusing it".into(),
        ));
    }
    Err(Error::Sealed("the answer carries no sealed join".into()))
}
