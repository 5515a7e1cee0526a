//! Response streams that nobody bounds: agents may create them.
//!
//! The agents in the field create their consumer group on their response stream with
//! `XGROUP CREATE … MKSTREAM` and tolerate only `BUSYGROUP`, so the `agent` ACL keeps that
//! command on `provider:response:*` — and an ACL cannot forbid `MKSTREAM` alone: any agent can
//! create response streams under any name, which would never expire. The broker writes every
//! stream it answers on with an expiry (`RedisReplies`), so a response stream without one was
//! made by an agent. The bridge's housekeeping walks the response streams a page at a time
//! (`SCAN … TYPE stream`, a cursor kept between passes) and gives each stream that has no expiry
//! the broker's (`EXPIRE … NX`: a stream the broker wrote keeps its own): whatever an agent
//! creates lives at most the response TTL plus one walk.

use redis::aio::ConnectionManager;

/// Keys asked for per `SCAN` call.
const SCAN_COUNT: usize = 500;

/// Where the walk over the response streams stands between passes.
#[derive(Debug, Default)]
pub struct ResponseStreamWalk {
    cursor: tokio::sync::Mutex<u64>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkPass {
    /// Response streams seen.
    pub seen: usize,
    /// Of those, streams that had no expiry and now have the broker's.
    pub bounded: usize,
    /// Whether the pass reached the end of the key space (the next starts over).
    pub finished: bool,
}

impl ResponseStreamWalk {
    /// Walks on for at most `pages` `SCAN` calls: every response stream (`pattern`, e.g.
    /// `provider:response:*`) without an expiry gets `ttl_s`.
    pub async fn pass(&self, conn: &ConnectionManager, pattern: &str, ttl_s: i64, pages: usize) -> redis::RedisResult<WalkPass> {
        let mut cursor = self.cursor.lock().await;
        let mut pass = WalkPass::default();
        for _ in 0..pages {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(*cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("stream")
                .query_async(&mut conn.clone())
                .await?;
            pass.seen += keys.len();
            pass.bounded += bound(conn, &keys, ttl_s).await?;
            *cursor = next;
            if next == 0 {
                pass.finished = true;
                break;
            }
        }
        Ok(pass)
    }
}

/// `EXPIRE key ttl NX` on each key, pipelined: how many had no expiry.
async fn bound(conn: &ConnectionManager, keys: &[String], ttl_s: i64) -> redis::RedisResult<usize> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("EXPIRE").arg(key).arg(ttl_s).arg("NX");
    }
    let set: Vec<i64> = pipe.query_async(&mut conn.clone()).await?;
    Ok(set.iter().filter(|&&n| n == 1).count())
}
