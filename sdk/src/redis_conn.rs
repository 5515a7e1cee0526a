//! The SDK's own Redis connections: it depends on `worldland-core` and nothing else of ours.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A reconnecting connection to `url`; a `blocking` one (for XREADGROUP BLOCK) has no response
/// timeout, an ordinary one fails a command after 5 s.
pub async fn connect(url: &str, blocking: bool) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let timeout = if blocking { None } else { Some(Duration::from_secs(5)) };
    client
        .get_connection_manager_with_config(ConnectionManagerConfig::new().set_response_timeout(timeout))
        .await
}

/// Creates a consumer group at `from`, treating "already exists" as success.
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
