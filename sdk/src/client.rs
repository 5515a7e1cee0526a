//! Talking to the broker through Redis: publish a signed registration, wait for the answer on
//! the provider's response stream (read from the registration's own time, so an answer written
//! before we start reading is never missed), open the sealed join command.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use crypto_box::SecretKey;
use k256::ecdsa::SigningKey;
use redis::aio::ConnectionManager;
use redis::Value;
use worldland_core::messages::{ProviderResponse, Registration, SealedJoin};
use worldland_core::sealed::open_join;
use worldland_core::signature::sign_personal;
use worldland_core::streams::StreamNames;

use crate::{Error, Result};

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

fn first_answer(reply: &Value) -> Option<(String, ProviderResponse)> {
    // XREAD: [[stream, [[id, [field, value, ...]], ...]]]
    let Value::Array(streams) = reply else {
        return None;
    };
    let Value::Array(parts) = streams.first()? else {
        return None;
    };
    let Value::Array(entries) = parts.get(1)? else {
        return None;
    };
    for e in entries {
        let Value::Array(idf) = e else { continue };
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (idf.first(), idf.get(1)) else {
            continue;
        };
        for kv in fields.chunks(2) {
            if let [Value::BulkString(k), Value::BulkString(v)] = kv {
                if k == b"data" {
                    if let Ok(resp) = serde_json::from_slice::<ProviderResponse>(v) {
                        return Some((String::from_utf8_lossy(id).into_owned(), resp));
                    }
                }
            }
        }
    }
    None
}

/// Waits for the first answer written after `registration_entry` (an id of the registration
/// stream, which shares Redis's clock with the response stream). `conn` must be a connection of
/// its own without a response timeout (`backends::redis_connection(url, true)`): it blocks.
pub async fn wait_for_response(
    conn: &mut ConnectionManager,
    streams: &StreamNames,
    provider_id: &str,
    registration_entry: &str,
    timeout: Duration,
) -> Result<ProviderResponse> {
    let ms = registration_entry.split('-').next().unwrap_or("0");
    let start = format!("{ms}-0");
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
            .arg(&start)
            .query_async(conn)
            .await?;
        if let Some((_, resp)) = first_answer(&reply) {
            return Ok(resp);
        }
    }
}

/// The token and command of an approval, opened from `sealed_join` when present.
pub fn join_from_response(resp: &ProviderResponse, secret: &SecretKey) -> Result<SealedJoin> {
    if !resp.success {
        return Err(Error::Rejected(resp.message.clone()));
    }
    if let Some(sealed) = &resp.sealed_join {
        return open_join(sealed, secret).map_err(|e| Error::Sealed(e.to_string()));
    }
    match (&resp.join_token, &resp.join_command) {
        (Some(t), Some(c)) => Ok(SealedJoin {
            join_token: t.clone(),
            join_command: c.clone(),
        }),
        _ => Err(Error::Sealed("the answer carries no join command".into())),
    }
}

/// Runs `kubeadm join` (split on whitespace; the command is ours, not a shell string). With
/// `dry_run` it is only printed, with the token masked.
pub async fn run_join(join: &SealedJoin, dry_run: bool) -> Result<()> {
    let masked = join.join_command.replace(&join.join_token, "<token>");
    if dry_run {
        println!("dry run: would run: {masked}");
        return Ok(());
    }
    let mut parts = join.join_command.split_whitespace();
    let program = parts.next().ok_or_else(|| Error::Join("empty join command".into()))?;
    let status = tokio::process::Command::new(program)
        .args(parts)
        .status()
        .await
        .map_err(|e| Error::Join(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Join(format!("{masked} exited with {status}")))
    }
}
