//! The bridge's settings: which streams, which group and consumer, how long to block and how
//! many entries to read, and the bounds (forward failures, dead-letter length).

use worldland_core::streams::StreamNames;
use worldland_runtime::Config;

#[derive(Debug, Clone)]
pub struct BridgeSettings {
    pub streams: StreamNames,
    pub group: String,
    pub consumer: String,
    pub reclaim_idle_ms: u64,
    pub block_ms: u64,
    pub batch: usize,
}

/// The bridge's bounds ([`RedisBridge::with_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeLimits {
    /// After this many failed forwards an entry is dead-lettered (`forward_failed`).
    pub max_forward_failures: u64,
    /// Approximate MAXLEN of the dead-letter stream.
    pub dead_letter_max_len: u64,
    /// The broker's response TTL (`WORLDLAND_RESPONSE_TTL_S`): a response stream without an
    /// expiry (an agent made it) gets this or [`crate::response_streams::AGENT_STREAM_TTL_S`],
    /// whichever is shorter.
    pub response_ttl_s: i64,
}

impl Default for BridgeLimits {
    fn default() -> Self {
        Self::from_config(&Config::defaults())
    }
}

impl BridgeLimits {
    /// The expiry the walk gives a response stream an agent made.
    pub fn agent_stream_ttl_s(&self) -> i64 {
        self.response_ttl_s.min(crate::response_streams::AGENT_STREAM_TTL_S)
    }

    pub fn from_config(cfg: &Config) -> Self {
        Self {
            max_forward_failures: cfg.bridge_max_forward_failures,
            dead_letter_max_len: cfg.deadletter_stream_maxlen,
            response_ttl_s: cfg.response_ttl_s,
        }
    }
}

/// The reason an entry the bus kept refusing is dead-lettered with.
pub const FORWARD_FAILED: &str = "forward_failed";

impl BridgeSettings {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            streams: cfg.streams(),
            group: cfg.bridge_group.clone(),
            consumer: cfg.consumer_name(),
            reclaim_idle_ms: cfg.reclaim_idle_ms,
            block_ms: cfg.bridge_block_ms,
            batch: cfg.bridge_batch,
        }
    }
}
