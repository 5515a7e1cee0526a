//! Customers' requests and the allocator's answers (`job.*` on the bus).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `job.allocate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocateRequest {
    /// The customer's id for the job (a UUID or 1–63 characters of `[a-z0-9-]`); redeliveries and the release share it.
    pub job_id: String,
    /// The customer who asks, and who is billed.
    pub customer_id: String,
    /// Wanted GPU model, in any spelling (compared through the model label); any model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// GPUs wanted, all on one node.
    pub gpus: u32,
    /// CPU cores wanted.
    pub cpu_cores: u32,
    /// Memory wanted, in MiB.
    pub memory_mb: u64,
    /// Highest price per GPU-hour the customer accepts; no cap when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_per_gpu_hour: Option<f64>,
    /// Seconds after allocation at which the sweeper releases the job as `expired`; open-ended when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// What the rental runs: `image`, `command`, `args`, `env`, `ssh_public_key` — at the top
    /// level of the message, beside the fields above.
    #[serde(flatten)]
    pub workload: Workload,
}

/// What a rental runs, as `job.allocate` carries it; the rules it must meet are
/// [`crate::workload::check_workload`]'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// OCI image reference (`[registry[:port]/]path[:tag][@sha256:<hex>]`); required. Absent
    /// decodes as empty, so a request from before workloads (or without one) is answered
    /// `job.rejected` `image_missing` instead of failing to decode, which answers nobody.
    #[serde(default)]
    pub image: String,
    /// The container's entrypoint (Kubernetes `command`); the image's own when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to it (Kubernetes `args`); the image's own `CMD` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables, in order. A list of name/value pairs rather than a JSON object, so
    /// a name given twice is refused instead of one value silently winning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA… comment`) let into the rental; no SSH
    /// access when absent. Never a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
}

impl Workload {
    /// A workload that runs `image` as it is built (its own entrypoint, no env, no SSH).
    pub fn of_image(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            ..Self::default()
        }
    }
}

/// One environment variable of a [`Workload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// A C identifier (`[A-Za-z_][A-Za-z0-9_]*`).
    pub name: String,
    /// Its value (may be empty).
    #[serde(default)]
    pub value: String,
}

/// `job.release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The job to release.
    pub job_id: String,
    /// Why, in the customer's words (at most 128 characters); becomes the job's end reason, `released` when empty.
    #[serde(default)]
    pub reason: String,
}

/// `job.allocated`: where the job runs and what it pays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAllocated {
    /// The job placed.
    pub job_id: String,
    /// The customer who asked for it.
    pub customer_id: String,
    /// The provider whose node runs it.
    pub provider_id: String,
    /// That provider's Kubernetes node.
    pub node_name: String,
    /// Labels a pod's nodeSelector uses to land on that node.
    pub node_selector: BTreeMap<String, String>,
    /// Model key of the GPUs given (the model label, `.` written as `_`).
    pub gpu_model: String,
    /// GPUs given, free ones and any taken from mining.
    pub gpus: u32,
    /// CPU cores given.
    pub cpu_cores: u32,
    /// Memory given, in MiB.
    pub memory_mb: u64,
    /// The provider's price per GPU-hour in integer micro-units, fixed for the life of the job.
    pub price_per_gpu_hour_micros: i64,
    /// GPUs taken back from mining for this job.
    pub mining_gpus_taken: u32,
}

/// `job.rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRejected {
    /// The job refused.
    pub job_id: String,
    /// Stable code: `no_capacity`, `price_too_low`, `unknown_model`, `invalid_request`, `cancelled`,
    /// or one of the workload's (`image_missing`, `invalid_image`, `invalid_command`, `invalid_env`,
    /// `invalid_ssh_key`, `ssh_key_too_weak`).
    pub reason: String,
    /// Explanation for the customer.
    pub message: String,
}

/// `job.released`: the job is closed, with its duration and cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReleased {
    /// The job closed.
    pub job_id: String,
    /// The provider it ran on.
    pub provider_id: String,
    /// Why it ended: the release's reason, `expired` (its duration ran out) or `interrupted` (its provider went offline).
    pub reason: String,
    /// Billed time in ms, from allocation to the end (never negative).
    pub duration_ms: i64,
    /// GPUs × price per GPU-hour × hours, in integer micro-units (exact).
    pub cost_micros: i64,
}

/// A command to a provider's SDK, on its response stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiningCommand {
    /// `mining.stop` or `mining.resume`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Idempotency id (`<job_id>/stop` or `<job_id>/resume`): the SDK runs each once and acknowledges it by this id.
    pub command_id: String,
    /// The job whose allocation or release caused the command.
    pub job_id: String,
    /// Model key of the GPUs concerned.
    pub gpu_model: String,
    /// How many GPUs stop or resume mining.
    pub gpus: u32,
}

/// [`MiningCommand::kind`] asking the SDK to stop mining on `gpus` GPUs: a rental took them.
pub const MINING_STOP: &str = "mining.stop";
/// [`MiningCommand::kind`] asking the SDK to resume mining on `gpus` GPUs: the rental that took them ended.
pub const MINING_RESUME: &str = "mining.resume";
