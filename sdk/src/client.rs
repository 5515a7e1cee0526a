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

/// Waits for the broker's answer written after `registration_entry` (an id of the registration
/// stream, which shares Redis's clock with the response stream). Only an entry signed by
/// `broker` for this provider's stream, and fresh, counts: every other entry (unsigned, forged,
/// signed for another stream, stale, or not an answer) is skipped — logged — and the wait goes
/// on, so a forged entry can neither be taken nor hide the real answer. `conn` must be a
/// connection of its own without a response timeout (`redis_conn::connect(url, true)`): it blocks.
pub async fn wait_for_response(
    conn: &mut ConnectionManager,
    streams: &StreamNames,
    provider_id: &str,
    registration_entry: &str,
    broker: &BrokerPublicKey,
    timeout: Duration,
) -> Result<ProviderResponse> {
    // XREAD returns entries after the cursor: start just before the registration's millisecond,
    // so an answer written within that same millisecond is not missed.
    let ms: u64 = registration_entry.split('-').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let mut cursor = match ms.checked_sub(1) {
        Some(before) => format!("{before}-{}", u64::MAX),
        None => "0-0".to_string(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = streams.response(provider_id);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(timeout.as_secs()));
        }
        let block = left.as_millis().clamp(1, 1_000) as u64;
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(10)
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&cursor)
            .query_async(conn)
            .await?;
        for entry in verify::entries(&reply) {
            cursor = entry.id.clone();
            if !verify::believe(&entry, &stream, broker, Utc::now()) {
                continue;
            }
            match serde_json::from_slice::<ProviderResponse>(&entry.data) {
                Ok(resp) => return Ok(resp),
                // The broker's, but a command rather than an answer.
                Err(_) => tracing::debug!(entry = %entry.id, "not an answer; still waiting"),
            }
        }
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
