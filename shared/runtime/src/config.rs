//! Configuration from the environment, all under `WORLDLAND_`, checked at start. An error names
//! the variable at fault.

use serde::Deserialize;

mod defaults;

use defaults::*;

use worldland_core::bus::{routes, QueueSpec};
use worldland_core::signature::SignaturePolicy;
use worldland_core::state::TableNames;
use worldland_core::streams::StreamNames;
use worldland_core::validation::ValidationPolicy;

pub const PREFIX: &str = "WORLDLAND_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Dynamodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    #[default]
    Rabbitmq,
    Sqs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterKind {
    Simulated,
    Kube,
}

/// Every setting, with its default. The README lists them all.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "d_redis_url")]
    pub redis_url: String,
    #[serde(default = "d_amqp_url")]
    pub amqp_url: String,
    #[serde(default = "d_exchange")]
    pub exchange: String,
    #[serde(default = "d_queue_prefix")]
    pub queue_prefix: String,
    #[serde(default = "d_prefetch")]
    pub prefetch: u16,
    #[serde(default = "d_delivery_limit")]
    pub delivery_limit: u32,
    #[serde(default = "d_store")]
    pub store: StoreKind,
    /// Where the bridge (and publishing workers) send messages: RabbitMQ or SQS.
    #[serde(default)]
    pub bus: BusKind,
    /// An SQS-compatible endpoint (moto, LocalStack); unset for AWS.
    #[serde(default)]
    pub sqs_endpoint: Option<String>,
    #[serde(default = "d_cluster")]
    pub cluster: ClusterKind,
    #[serde(default)]
    pub dynamodb_endpoint: Option<String>,
    #[serde(default = "d_region")]
    pub aws_region: String,
    #[serde(default = "d_providers_table")]
    pub providers_table: String,
    #[serde(default = "d_state_index")]
    pub providers_state_index: String,
    #[serde(default = "d_placement_index")]
    pub providers_placement_index: String,
    #[serde(default = "d_jobs_table")]
    pub jobs_table: String,
    #[serde(default = "d_jobs_index")]
    pub jobs_state_index: String,
    #[serde(default)]
    pub signature_policy: SignaturePolicy,
    #[serde(default)]
    pub allow_private_networks: bool,
    #[serde(default = "d_price_ceiling")]
    pub price_ceiling: f64,
    #[serde(default = "d_replay_window_s")]
    pub replay_window_s: i64,
    #[serde(default = "d_token_ttl_s")]
    pub token_ttl_s: i64,
    /// At most this many of one wallet's providers hold a live join token without having joined;
    /// further registrations are refused (`too_many_pending_joins`) until one joins or expires.
    #[serde(default = "d_max_pending_joins_per_wallet")]
    pub max_pending_joins_per_wallet: usize,
    /// Overrides the API server address taken from cluster-info (e.g. a public load balancer).
    #[serde(default)]
    pub api_endpoint: Option<String>,
    #[serde(default)]
    pub stream_prefix: String,
    #[serde(default = "d_bridge_group")]
    pub bridge_group: String,
    #[serde(default)]
    pub consumer_name: Option<String>,
    #[serde(default = "d_reclaim_idle_ms")]
    pub reclaim_idle_ms: u64,
    #[serde(default = "d_block_ms")]
    pub bridge_block_ms: u64,
    #[serde(default = "d_batch")]
    pub bridge_batch: usize,
    #[serde(default = "d_response_ttl_s")]
    pub response_ttl_s: i64,
    /// File holding the broker's ed25519 signing key (`worldland keys` creates one): every answer
    /// and command written to `provider:response:<id>` is signed with it, and agents pin its
    /// public key. Required by the workers that answer providers, except on the simulated
    /// cluster, where an ephemeral key is made when it is unset.
    #[serde(default)]
    pub broker_key_file: Option<std::path::PathBuf>,
    /// How often the staleness sweeper runs.
    #[serde(default = "d_sweep_interval_s")]
    pub sweep_interval_s: u64,
    /// A provider whose last heartbeat is older than this is offline.
    #[serde(default = "d_stale_after_s")]
    pub stale_after_s: i64,
    /// The sweeper's stall guard: when more than this share of the joined/available fleet would
    /// go offline in one sweep, it marks nobody (a pipeline stall, not a fleet failure).
    #[serde(default = "d_stall_guard_share")]
    pub stall_guard_share: f64,
    /// The stall guard holds only when at least this many providers would go offline (or, when
    /// no heartbeat arrived for a whole stale period, when the fleet is at least this large).
    #[serde(default = "d_stall_guard_min")]
    pub stall_guard_min: usize,
    /// The node's last-heartbeat annotation is rewritten at most this often.
    #[serde(default = "d_annotate_interval_s")]
    pub annotate_interval_s: i64,
    /// The recorder records at most one heartbeat per provider this often (by the broker's
    /// receive time); the others are acknowledged as routine duplicates. 0: no limit.
    #[serde(default = "d_min_heartbeat_interval_s")]
    pub min_heartbeat_interval_s: i64,
    /// The node's active-jobs label is patched at most this often per provider. 0: on every change.
    #[serde(default = "d_active_jobs_label_interval_s")]
    pub active_jobs_label_interval_s: i64,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default = "d_health_addr")]
    pub health_addr: String,

    // --- Bounds and timeouts (issue 11) ---
    /// Most messages a RabbitMQ dead-letter queue keeps (`x-max-length`; the oldest are dropped).
    #[serde(default = "d_dlq_max_length")]
    pub dlq_max_length: u64,
    /// How long a dead letter is kept: RabbitMQ `x-message-ttl`, SQS `MessageRetentionPeriod`
    /// (which SQS caps at 14 days).
    #[serde(default = "d_dlq_ttl_s")]
    pub dlq_ttl_s: u64,
    /// Approximate MAXLEN of the dead-letter stream (`provider:deadletter`).
    #[serde(default = "d_deadletter_stream_maxlen")]
    pub deadletter_stream_maxlen: u64,
    /// Approximate MAXLEN of each provider's response stream.
    #[serde(default = "d_response_stream_maxlen")]
    pub response_stream_maxlen: u64,
    /// The bridge dead-letters an entry (reason `forward_failed`) after this many failed forwards.
    #[serde(default = "d_bridge_max_forward_failures")]
    pub bridge_max_forward_failures: u64,
    /// AWS SDK calls: the whole operation, retries included, and each attempt.
    #[serde(default = "d_aws_operation_timeout_ms")]
    pub aws_operation_timeout_ms: u64,
    #[serde(default = "d_aws_attempt_timeout_ms")]
    pub aws_attempt_timeout_ms: u64,
    /// Redis: establishing a connection, and a command's answer. A blocking read waits its BLOCK
    /// time plus the response timeout.
    #[serde(default = "d_redis_connect_timeout_ms")]
    pub redis_connect_timeout_ms: u64,
    #[serde(default = "d_redis_response_timeout_ms")]
    pub redis_response_timeout_ms: u64,
    /// RabbitMQ: opening a connection (TCP and the AMQP handshake).
    #[serde(default = "d_amqp_connect_timeout_ms")]
    pub amqp_connect_timeout_ms: u64,
    /// RabbitMQ: the broker's answer to a method (channel open, declare, consume). A node that is
    /// still booting accepts connections and may not answer.
    #[serde(default = "d_amqp_operation_timeout_ms")]
    pub amqp_operation_timeout_ms: u64,
    /// Kubernetes API: connecting, and reading an answer.
    #[serde(default = "d_kube_connect_timeout_s")]
    pub kube_connect_timeout_s: u64,
    #[serde(default = "d_kube_read_timeout_s")]
    pub kube_read_timeout_s: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn var(field: &str) -> String {
    format!("{PREFIX}{}", field.to_ascii_uppercase())
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// From any set of variables (tests pass their own).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(PREFIX)).collect();
        let cfg = match envy::prefixed(PREFIX).from_iter::<_, Config>(vars.clone()) {
            Ok(cfg) => cfg,
            Err(envy::Error::MissingValue(field)) => return Err(ConfigError(format!("{} is required", var(field)))),
            Err(envy::Error::Custom(msg)) => {
                // envy does not always say which variable it choked on: find it by reading each
                // variable alone.
                let culprit = vars
                    .iter()
                    .find(|kv| envy::prefixed(PREFIX).from_iter::<_, Config>(vec![(*kv).clone()]).is_err())
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| format!("a {PREFIX}* variable"));
                let msg = msg.split(" provided by ").next().unwrap_or(&msg).to_string();
                return Err(ConfigError(format!("{culprit} is invalid: {msg}")));
            }
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The defaults, as if no variable were set.
    pub fn defaults() -> Self {
        Self::from_vars(std::iter::empty()).expect("defaults are valid")
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("{} {why}", var(field))));
        if self.prefetch == 0 {
            return bad("prefetch", "must be at least 1");
        }
        if self.delivery_limit == 0 {
            return bad("delivery_limit", "must be at least 1");
        }
        if !(self.price_ceiling.is_finite() && self.price_ceiling > 0.0) {
            return bad("price_ceiling", "must be a number above 0");
        }
        if self.replay_window_s <= 0 {
            return bad("replay_window_s", "must be above 0");
        }
        if !(60..=7 * 86_400).contains(&self.token_ttl_s) {
            return bad("token_ttl_s", "must be between 60 s and 7 days");
        }
        if self.max_pending_joins_per_wallet == 0 {
            return bad("max_pending_joins_per_wallet", "must be at least 1");
        }
        if self.bridge_batch == 0 {
            return bad("bridge_batch", "must be at least 1");
        }
        if self.sweep_interval_s == 0 {
            return bad("sweep_interval_s", "must be at least 1");
        }
        if self.stale_after_s <= 0 {
            return bad("stale_after_s", "must be above 0");
        }
        if self.annotate_interval_s <= 0 {
            return bad("annotate_interval_s", "must be above 0");
        }
        if self.min_heartbeat_interval_s < 0 || self.active_jobs_label_interval_s < 0 {
            return bad("min_heartbeat_interval_s", "intervals must be 0 or above");
        }
        if !(self.stall_guard_share.is_finite() && self.stall_guard_share > 0.0 && self.stall_guard_share <= 1.0) {
            return bad("stall_guard_share", "must be a number above 0 and at most 1");
        }
        if self.response_ttl_s <= 0 {
            return bad("response_ttl_s", "must be above 0");
        }
        if self.broker_key_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return bad("broker_key_file", "must name a file when set");
        }
        self.check_bounds()?;
        Ok(())
    }

    fn check_bounds(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| Err(ConfigError(format!("{} {why}", var(field))));
        let at_least_1 = [
            ("dlq_max_length", self.dlq_max_length),
            ("deadletter_stream_maxlen", self.deadletter_stream_maxlen),
            ("response_stream_maxlen", self.response_stream_maxlen),
            ("bridge_max_forward_failures", self.bridge_max_forward_failures),
            ("aws_operation_timeout_ms", self.aws_operation_timeout_ms),
            ("aws_attempt_timeout_ms", self.aws_attempt_timeout_ms),
            ("redis_connect_timeout_ms", self.redis_connect_timeout_ms),
            ("redis_response_timeout_ms", self.redis_response_timeout_ms),
            ("amqp_connect_timeout_ms", self.amqp_connect_timeout_ms),
            ("kube_connect_timeout_s", self.kube_connect_timeout_s),
            ("kube_read_timeout_s", self.kube_read_timeout_s),
        ];
        if let Some((field, _)) = at_least_1.iter().find(|(_, v)| *v == 0) {
            return bad(field, "must be at least 1");
        }
        if !(60..=1_209_600).contains(&self.dlq_ttl_s) {
            return bad("dlq_ttl_s", "must be between 60 s and 14 days (1209600 s, the SQS maximum)");
        }
        if self.dlq_max_length > i64::MAX as u64 {
            return bad("dlq_max_length", "is too large");
        }
        Ok(())
    }

    pub fn validation_policy(&self) -> ValidationPolicy {
        ValidationPolicy {
            allow_private_networks: self.allow_private_networks,
            price_ceiling: self.price_ceiling,
            replay_window: chrono::Duration::seconds(self.replay_window_s),
        }
    }

    pub fn streams(&self) -> StreamNames {
        StreamNames::new(self.stream_prefix.clone())
    }

    pub fn table_names(&self) -> TableNames {
        TableNames {
            providers: self.providers_table.clone(),
            providers_state_index: self.providers_state_index.clone(),
            providers_placement_index: self.providers_placement_index.clone(),
            jobs: self.jobs_table.clone(),
            jobs_state_index: self.jobs_state_index.clone(),
        }
    }

    pub fn queue(&self, worker: &str) -> String {
        format!("{}{worker}", self.queue_prefix)
    }

    /// Every worker's queue (and the job-events queue), named under the configured prefix.
    pub fn queues(&self) -> Vec<QueueSpec> {
        routes::queues(|name| self.queue(name))
    }

    pub fn consumer_name(&self) -> String {
        self.consumer_name
            .clone()
            .unwrap_or_else(|| format!("bridge-{}", uuid::Uuid::new_v4().simple()))
    }
}

#[cfg(test)]
mod tests;
