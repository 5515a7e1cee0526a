//! Redis connections for both sides of WorldLand: the provider SDK and the broker.
//!
//! Every connection made here has a response timeout. Without one, a half-open socket (a
//! failover, a dropped NAT entry) hangs its caller forever; with one, a command fails and its
//! caller can reconnect. A connection for blocking reads (XREAD/XREADGROUP BLOCK) gets its BLOCK
//! time plus a margin ([`RedisTimeouts::blocking`]), so a blocked read is never cut short.
//!
//! Shutdown on a signal needs no Redis: the connections are behind the `conn` feature (on by
//! default), so a worker that never calls Redis does not link it. This crate depends on tokio,
//! redis and tracing only, so the SDK's tree stays free of the
//! broker's crates.

mod shutdown;

use std::time::Duration;

#[cfg(feature = "conn")]
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use shutdown::shutdown_on_signal;

/// How long an ordinary command may take before it fails (and is retried by its caller).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The response timeout of a blocking connection made by [`connect`], which does not know the
/// BLOCK time of its reads: long enough for any BLOCK the broker uses, yet bounded. Callers that
/// know their BLOCK use [`RedisTimeouts::blocking`].
pub const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection's timeouts: connecting, and waiting for the answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            response: RESPONSE_TIMEOUT,
        }
    }
}

impl RedisTimeouts {
    /// For a connection of blocking reads (XREAD/XREADGROUP BLOCK `block`): the response timeout
    /// is the BLOCK time plus this one's response timeout as a margin, so a blocked read is never
    /// cut short, yet a server that never answers fails it.
    pub fn blocking(self, block: Duration) -> Self {
        Self {
            connect: self.connect,
            response: block.saturating_add(self.response),
        }
    }

    /// The longest [`connect_with`] may take: one connection attempt and the answer to its
    /// handshake.
    pub fn first_connection(self) -> Duration {
        self.connect.saturating_add(self.response)
    }
}

#[cfg(feature = "conn")]
/// A reconnecting connection to `url`: an ordinary one with the default timeouts, or a
/// `blocking` one whose response timeout is [`BLOCKING_RESPONSE_TIMEOUT`]. Commands on one
/// connection are pipelined, so blocking reads need a connection of their own.
pub async fn connect(url: &str, blocking: bool) -> redis::RedisResult<ConnectionManager> {
    let timeouts = if blocking {
        RedisTimeouts {
            response: BLOCKING_RESPONSE_TIMEOUT,
            ..RedisTimeouts::default()
        }
    } else {
        RedisTimeouts::default()
    };
    connect_with(url, timeouts).await
}

#[cfg(feature = "conn")]
/// A reconnecting connection to `url` with these timeouts. The manager reconnects by itself
/// after a dropped connection, but not after a timed-out command: a caller that sees one
/// (`RedisError::is_timeout`) should make a new connection rather than go on with a socket that
/// may be half-open.
pub async fn connect_with(url: &str, timeouts: RedisTimeouts) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response));
    // The first connection too is bounded (a server that accepts and never answers); its
    // retries would otherwise go on for a while.
    let bound = timeouts.first_connection();
    match tokio::time::timeout(bound, client.get_connection_manager_with_config(config)).await {
        Ok(conn) => conn,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to Redis took over {bound:?}"),
        ))),
    }
}

#[cfg(feature = "conn")]
/// Creates consumer group `group` on `stream` (and the stream) at entry `from`, treating "the
/// group already exists" as success.
pub async fn ensure_group(conn: &mut ConnectionManager, stream: &str, group: &str, from: &str) -> redis::RedisResult<()> {
    let res: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(from)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match res {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// `url` fit for a log line or an error message: a password in it (`redis://user:secret@host`)
/// is replaced by `***`, so a connection error never carries the credential.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // Split at the last '@' of the whole rest, not of the authority alone: a password written
    // with an unescaped '/' or '@' must not end the user part early and leave a piece shown.
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{scheme}://{hidden}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
