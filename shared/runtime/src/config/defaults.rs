//! The default of every setting that has one (serde's `default = "d_…"`).

use super::{ClusterKind, StoreKind};

pub(super) fn d_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}

pub(super) fn d_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}

pub(super) fn d_exchange() -> String {
    "worldland".into()
}

pub(super) fn d_queue_prefix() -> String {
    "worldland.".into()
}

pub(super) fn d_prefetch() -> u16 {
    32
}

pub(super) fn d_delivery_limit() -> u32 {
    5
}

pub(super) fn d_store() -> StoreKind {
    StoreKind::Dynamodb
}

pub(super) fn d_cluster() -> ClusterKind {
    ClusterKind::Kube
}

pub(super) fn d_region() -> String {
    "us-east-1".into()
}

pub(super) fn d_providers_table() -> String {
    "worldland-providers".into()
}

pub(super) fn d_state_index() -> String {
    "state-heartbeat-index".into()
}

pub(super) fn d_placement_index() -> String {
    "model-price-index".into()
}

pub(super) fn d_jobs_index() -> String {
    "state-due-index".into()
}

pub(super) fn d_jobs_table() -> String {
    "worldland-jobs".into()
}

pub(super) fn d_price_ceiling() -> f64 {
    100.0
}

pub(super) fn d_replay_window_s() -> i64 {
    300
}

pub(super) fn d_token_ttl_s() -> i64 {
    3600
}

pub(super) fn d_max_pending_joins_per_wallet() -> usize {
    3
}

pub(super) fn d_bridge_group() -> String {
    "worldland-bridge".into()
}

pub(super) fn d_reclaim_idle_ms() -> u64 {
    60_000
}

pub(super) fn d_block_ms() -> u64 {
    1_000
}

pub(super) fn d_batch() -> usize {
    64
}

pub(super) fn d_response_ttl_s() -> i64 {
    86_400
}

pub(super) fn d_sweep_interval_s() -> u64 {
    15
}

pub(super) fn d_stale_after_s() -> i64 {
    120
}

pub(super) fn d_annotate_interval_s() -> i64 {
    300
}

pub(super) fn d_min_heartbeat_interval_s() -> i64 {
    10
}

pub(super) fn d_active_jobs_label_interval_s() -> i64 {
    60
}

pub(super) fn d_stall_guard_share() -> f64 {
    0.5
}

pub(super) fn d_stall_guard_min() -> usize {
    5
}

pub(super) fn d_health_addr() -> String {
    "127.0.0.1:8080".into()
}

pub(super) fn d_dlq_max_length() -> u64 {
    100_000
}

pub(super) fn d_dlq_ttl_s() -> u64 {
    14 * 86_400
}

pub(super) fn d_deadletter_stream_maxlen() -> u64 {
    100_000
}

pub(super) fn d_response_stream_maxlen() -> u64 {
    1_000
}

pub(super) fn d_bridge_max_forward_failures() -> u64 {
    10
}

pub(super) fn d_aws_operation_timeout_ms() -> u64 {
    30_000
}

pub(super) fn d_aws_attempt_timeout_ms() -> u64 {
    10_000
}

pub(super) fn d_redis_connect_timeout_ms() -> u64 {
    5_000
}

pub(super) fn d_redis_response_timeout_ms() -> u64 {
    5_000
}

pub(super) fn d_amqp_connect_timeout_ms() -> u64 {
    10_000
}

pub(super) fn d_amqp_operation_timeout_ms() -> u64 {
    10_000
}

pub(super) fn d_kube_connect_timeout_s() -> u64 {
    10
}

pub(super) fn d_kube_read_timeout_s() -> u64 {
    60
}
