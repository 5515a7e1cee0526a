//! Response streams that nobody bounds: agents may create them.
//!
//! The agents in the field create their consumer group on their response stream with
//! `XGROUP CREATE … MKSTREAM` and tolerate only `BUSYGROUP`, so the `agent` ACL keeps that
//! command on `provider:response:*` — and an ACL cannot forbid `MKSTREAM` alone: any agent can
//! create response streams under any name, which would never expire. The broker writes every
//! stream it answers on with its own expiry (`RedisReplies`, a plain `EXPIRE` that also
//! lengthens a shorter one), so a response stream without an expiry was made by an agent. The
//! bridge's housekeeping walks the response streams a page at a time and gives each stream that
//! has no expiry a short one ([`AGENT_STREAM_TTL_S`], `EXPIRE … NX`: a stream the broker wrote
//! keeps its own): whatever an agent creates lives minutes, not the day an answer lives.
//!
//! The walk runs inside Redis (one script per page: `SCAN … TYPE stream`, then the `EXPIRE`s),
//! so key names never come back to the bridge: an agent's key may be any bytes and up to the
//! bulk limit long, and neither can break or stall the walk.

use redis::aio::ConnectionManager;

/// Keys asked for per `SCAN` call.
const SCAN_COUNT: usize = 500;

/// The expiry a response stream without one gets (seconds): long enough for a registration's
/// answer (seconds, normally), after which the broker's own `EXPIRE` gives the answer's TTL.
pub const AGENT_STREAM_TTL_S: i64 = 600;

/// One page: SCAN from the cursor, `EXPIRE … NX` on each stream found. Answers the next cursor,
/// the streams seen and how many of them had no expiry.
const PAGE: &str = r"
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', 'stream')
local bounded = 0
for _, key in ipairs(page[2]) do
  bounded = bounded + redis.call('EXPIRE', key, ARGV[4], 'NX')
end
return {page[1], #page[2], bounded}
";

/// Where the walk over the response streams stands between passes.
#[derive(Debug, Default)]
pub struct ResponseStreamWalk {
    cursor: tokio::sync::Mutex<String>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkPass {
    /// Response streams seen.
    pub seen: usize,
    /// Of those, streams that had no expiry and now have [`AGENT_STREAM_TTL_S`] (or less).
    pub bounded: usize,
    /// Whether the pass reached the end of the key space (the next starts over).
    pub finished: bool,
}

impl ResponseStreamWalk {
    /// Walks on for at most `pages` pages: every response stream (`pattern`, e.g.
    /// `provider:response:*`) without an expiry gets `ttl_s`.
    pub async fn pass(&self, conn: &ConnectionManager, pattern: &str, ttl_s: i64, pages: usize) -> redis::RedisResult<WalkPass> {
        let mut cursor = self.cursor.lock().await;
        if cursor.is_empty() {
            *cursor = "0".into();
        }
        let mut pass = WalkPass::default();
        for _ in 0..pages {
            // No keys declared: the script finds its own (standalone Redis; the ACL still checks
            // every command it runs against the broker's key patterns).
            let (next, seen, bounded): (String, usize, usize) = redis::cmd("EVAL")
                .arg(PAGE)
                .arg(0)
                .arg(cursor.as_str())
                .arg(pattern)
                .arg(SCAN_COUNT)
                .arg(ttl_s)
                .query_async(&mut conn.clone())
                .await?;
            pass.seen += seen;
            pass.bounded += bounded;
            *cursor = next;
            if cursor.as_str() == "0" {
                pass.finished = true;
                break;
            }
        }
        Ok(pass)
    }
}
