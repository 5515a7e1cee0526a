//! Reconnecting Redis connections for the broker side.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long an ordinary command may take before it fails (and is retried by its caller).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A reconnecting connection to `url`. Commands on one connection are pipelined, so a blocking
/// read (XREAD/XREADGROUP BLOCK) needs one of its own (`blocking`), without a response timeout:
/// a blocked read must not stall, nor be cut short by, other commands.
pub async fn connect(url: &str, blocking: bool) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let timeout = if blocking { None } else { Some(RESPONSE_TIMEOUT) };
    client
        .get_connection_manager_with_config(ConnectionManagerConfig::new().set_response_timeout(timeout))
        .await
}
