//! Reconnecting Redis connections for the broker side.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long an ordinary command may take before it fails (and is retried by its caller).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The response timeout of a blocking connection made by [`connect`], which does not know the
/// BLOCK time of its reads: long enough for any BLOCK the broker uses, yet bounded, so a
/// half-open socket fails the read instead of hanging it. Callers that know their BLOCK use
/// [`RedisTimeouts::blocking`].
pub const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection's timeouts. Every connection has both: without a response timeout a half-open
/// socket (a failover, a dropped NAT entry) hangs its caller forever.
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
            response: block + self.response,
        }
    }
}

/// A reconnecting connection to `url`. Commands on one connection are pipelined, so a blocking
/// read (XREAD/XREADGROUP BLOCK) needs one of its own (`blocking`), whose response timeout is
/// long enough for a blocked read ([`BLOCKING_RESPONSE_TIMEOUT`]): a blocked read must not stall,
/// nor be cut short by, other commands.
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

/// A reconnecting connection to `url` with these timeouts.
pub async fn connect_with(url: &str, timeouts: RedisTimeouts) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response));
    // The first connection too is bounded (a server that accepts and never answers).
    match tokio::time::timeout(
        timeouts.connect + timeouts.response,
        client.get_connection_manager_with_config(config),
    )
    .await
    {
        Ok(conn) => conn,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to Redis took over {:?}", timeouts.connect + timeouts.response),
        ))),
    }
}
