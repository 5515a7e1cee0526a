//! The agents' wire format (legacy-wire.md) and the broker's internal bus messages.
//!
//! Pure: serde only. Unknown fields are ignored everywhere, so newer and older agents both parse.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Largest stream entry (`data` plus `signature`) the broker accepts.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// A GPU as the agents (`memory_mb`) or the product description (`memory`) spell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Position of the GPU on the machine (the NVML / `nvidia-smi` index), when the agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Name as the driver reports it (e.g. `NVIDIA GeForce RTX 4090`); the GPU model label is derived from it.
    pub name: String,
    /// GPU memory in MiB (1 GiB – 1 TiB); `memory` in the product description's spelling.
    #[serde(alias = "memory")]
    pub memory_mb: u64,
    /// The driver's GPU UUID (`GPU-…`), when reported; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// NVIDIA driver version on the machine; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_ver: Option<String>,
    /// CUDA driver version, when NVML reports it; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// PCI bus id of the GPU (e.g. `00000000:01:00.0`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
}

/// The machine as measured by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Host name (RFC 1123); lower-cased, it becomes the provider's Kubernetes node name.
    pub hostname: String,
    /// Operating system (`PRETTY_NAME` of `/etc/os-release`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Kernel release; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_ver: Option<String>,
    /// CPU architecture (e.g. `x86_64`); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// CPU model name from `/proc/cpuinfo`; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// CPU cores on the machine (1–1024); the CPU offer when `capacity.cpu_cores` is absent.
    pub cpu_cores: u32,
    /// Hardware threads (logical CPUs); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<u32>,
    /// Total memory in MiB (1 GiB – 64 TiB); the memory offer when `capacity.memory_mb` is absent.
    pub total_memory_mb: u64,
    /// Every GPU on the machine, one entry each; exactly `total_gpus` of them.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Number of GPUs on the machine (1–64); must equal the length of `gpus`.
    pub total_gpus: u32,
    /// Size of the agent's data disk, in GiB; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_disk_gb: Option<u64>,
    /// Free space on the agent's data disk, in GiB; at least 1.
    pub available_disk_gb: u64,
    /// Address the machine is reached at; it must be public unless the operator allows private networks.
    pub public_ip: String,
    /// LAN address, when the agent reports one; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
}

/// What the provider offers out of its spec, and at what price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// GPUs offered for rent, taken in `spec.gpus` order; all of them when absent. Never 0, never above `spec.total_gpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// CPU cores offered; all of `spec.cpu_cores` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    /// Memory offered, in MiB; all of `spec.total_memory_mb` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Asking price per GPU-hour (above 0, at most the operator's ceiling); the broker keeps it in integer micro-units.
    pub gpu_price_per_hour: f64,
    /// Asking price per CPU core-hour (finite, not negative), when given; checked but not billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_price_per_hour: Option<f64>,
}

/// The provider's mining setup: how many of its offered GPUs mine while no job rents them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiningConfig {
    /// Container image of the miner; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// GPUs that mine while idle (at most the GPUs offered); the ledger starts them as `gpus_mining` and rentals take them back.
    #[serde(default)]
    pub gpu_count: u32,
    /// CPU cores the miner uses; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    /// Memory the miner uses, in MiB; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Wallet the mining rewards go to; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_address: Option<String>,
}

/// `data` of a `provider:registration` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The provider's id: a UUID or 1–63 characters of `[a-z0-9-]`; it names the response stream and the node's provider label.
    pub provider_id: String,
    /// The provider's Ethereum wallet (`0x` + 40 hex digits, EIP-55 if mixed case): it signs the entry and owns the
    /// provider id once stored.
    pub wallet_addr: String,
    /// The machine as the agent measured it.
    pub spec: Spec,
    /// What the provider offers out of the spec, and at what price.
    pub capacity: Capacity,
    /// Mining setup, when the provider mines on its idle GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mining_config: Option<MiningConfig>,
    /// Version of the agent that sent the registration; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the agent made the registration; when present it must lie within the replay window of the broker's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    /// X25519 public key (base64) to which the join command is sealed. New agents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_pubkey: Option<String>,
}

/// Provider states, as the agents spell them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderState {
    /// Registration valid and stored; waiting for a join token.
    Pending,
    /// Join token issued and sent; waiting for the first heartbeat from the provider's node.
    Approved,
    /// The node has joined and heartbeats, but is not yet Ready and labelled (or contradicts the claimed spec).
    Joined,
    /// Node Ready and labelled: the provider takes jobs, and its capacity ledger is set up.
    Available,
    /// Part of the agents' vocabulary; the broker never moves a provider into it (jobs live in the ledger).
    Busy,
    /// No heartbeat for the stale interval (2 min by default); the node is tainted until a fresh heartbeat.
    Offline,
    /// The registration was refused; a new registration from the same wallet starts over as `pending`.
    Rejected,
    /// The join token ran out before the node joined; a new registration from the same wallet starts over as `pending`.
    Expired,
}

impl ProviderState {
    /// Every state, in lifecycle order.
    pub const ALL: [ProviderState; 8] = [
        Self::Pending,
        Self::Approved,
        Self::Joined,
        Self::Available,
        Self::Busy,
        Self::Offline,
        Self::Rejected,
        Self::Expired,
    ];

    /// The state as spelt on the wire and in the store (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Joined => "joined",
            Self::Available => "available",
            Self::Busy => "busy",
            Self::Offline => "offline",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// The state for its wire spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for ProviderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `data` of a `provider:response:<provider_id>` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderResponse {
    /// Whether the registration was accepted (approved, or already joined).
    pub success: bool,
    /// The provider's state as the broker sees it, in its wire spelling (`approved`, `rejected`, …).
    pub status: String,
    /// Explanation for the provider's operator.
    pub message: String,
    /// Bootstrap token `<id>.<secret>` in the clear; only for old agents that sent no `enc_pubkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// The full `kubeadm join` command in the clear; only for old agents that sent no `enc_pubkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_command: Option<String>,
    /// Host of the cluster's API server that the node joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_ip: Option<String>,
    /// Port of the cluster's API server (usually 6443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_port: Option<u16>,
    /// Discovery hash of the cluster CA (`sha256:<hex>`), for `--discovery-token-ca-cert-hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_hash: Option<String>,
    /// The Kubernetes node name the provider joins as (its lower-cased host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Labels the broker puts on the node: rental type, provider id, GPU model and count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Base64 sealed box holding a [`SealedJoin`], when the registration carried `enc_pubkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_join: Option<String>,
}

impl ProviderResponse {
    /// A refusal: `success: false`, status `rejected`, and `message` for the provider's operator.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            success: false,
            status: ProviderState::Rejected.as_str().to_string(),
            message: message.into(),
            ..Default::default()
        }
    }
}

/// The secret part of an approval, sealed to the agent's `enc_pubkey`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedJoin {
    /// Bootstrap token `<id>.<secret>`, for `kubeadm join --token`.
    pub join_token: String,
    /// The full `kubeadm join` command line.
    pub join_command: String,
}

impl std::fmt::Debug for SealedJoin {
    // Never print the token, even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedJoin { .. }")
    }
}

/// `data` of a `provider:heartbeat` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The provider sending the heartbeat.
    pub provider_id: String,
    /// Node the heartbeat comes from; it must be the provider's own node.
    pub node_name: String,
    /// The agent's own claim of its status; recorded (`hb_status`), never trusted.
    #[serde(default)]
    pub status: String,
    /// Utilisation of each GPU in percent (0–100), in GPU index order.
    #[serde(default)]
    pub gpu_usage: Vec<f64>,
    /// CPU utilisation since the agent's previous sample, in percent.
    #[serde(default)]
    pub cpu_usage: f64,
    /// Memory in use, in percent of the machine's total.
    #[serde(default)]
    pub memory_usage: f64,
    /// Jobs the agent says it runs; mirrored on the node's `worldland.io/active-jobs` label.
    #[serde(default)]
    pub active_jobs: u32,
    /// When the agent sent it; it must lie in the replay window and, without `seq`, be later
    /// than the last recorded heartbeat.
    pub timestamp: DateTime<Utc>,
    /// New agents only: a sequence number, signed with the rest of `data`, that grows with every
    /// heartbeat (the SDK persists it in its state directory). When present it alone orders
    /// heartbeats — each must exceed the last recorded — so an agent clock stepped back changes
    /// nothing; at most `i64::MAX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A Redis stream entry as the bridge forwards it onto the bus: the exact bytes of `data` (as
/// UTF-8 text) so that signatures can be checked over them downstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnvelope {
    /// Name of the Redis stream the entry came from (with any prefix).
    pub stream: String,
    /// Redis entry id (`<ms>-<seq>`); the same on every redelivery.
    pub entry_id: String,
    /// The entry's `data` field, byte for byte: the agent's JSON that the signature covers.
    pub data: String,
    /// The entry's `signature` field: an EIP-191 signature over `data` (`0x` + 65 bytes in hex), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The entry's `timestamp` field, as text, as the agent wrote it; not used for decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// When the broker received the entry (epoch ms), as the bridge stamped it: the entry id's
    /// time when Redis chose it, the bridge's own clock when the id lay in the future. Absent
    /// from envelopes made before bridges stamped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<i64>,
}

impl StreamEnvelope {
    /// Bus message id: stable across redeliveries of the same stream entry.
    pub fn message_id(&self) -> String {
        format!("{}/{}", self.stream, self.entry_id)
    }
}

/// Emitted by the registration handler once a registration is valid and stored as `pending`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderValidated {
    /// The provider now stored as `pending`.
    pub provider_id: String,
    /// The stream entry the registration came from; the issuer answers each registration once.
    pub registration_id: String,
    /// The registration's X25519 public key (base64) to seal the join command to; `None` for old agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_pubkey: Option<String>,
}

/// Routing keys on the bus.
pub mod topics {
    /// A `provider:registration` entry, forwarded by the bridge as a `StreamEnvelope`.
    pub const REGISTRATION_RECEIVED: &str = "provider.registration.received";
    /// A `provider:heartbeat` entry, forwarded by the bridge as a `StreamEnvelope`.
    pub const HEARTBEAT_RECEIVED: &str = "provider.heartbeat.received";
    /// A registration stored as `pending` (`ProviderValidated`), for the join-token issuer.
    pub const PROVIDER_VALIDATED: &str = "provider.validated";
    /// A provider's approval; reserved: no worker publishes or consumes it today.
    pub const PROVIDER_APPROVED: &str = "provider.approved";
    /// A customer's `AllocateRequest`, for the allocator.
    pub const JOB_ALLOCATE: &str = "job.allocate";
    /// A customer's `ReleaseRequest`, for the allocator.
    pub const JOB_RELEASE: &str = "job.release";
    /// The allocator's `JobAllocated` answer.
    pub const JOB_ALLOCATED: &str = "job.allocated";
    /// The allocator's `JobRejected` answer.
    pub const JOB_REJECTED: &str = "job.rejected";
    /// `JobReleased`: a job closed by a release, by running out its duration, or by its provider going offline.
    pub const JOB_RELEASED: &str = "job.released";
    /// The answers customers (and billing) read, kept on one queue of their own.
    pub const JOB_EVENTS: &[&str] = &[JOB_ALLOCATED, JOB_REJECTED, JOB_RELEASED];
    /// Name (before the configured queue prefix) of the queue bound to [`JOB_EVENTS`].
    pub const JOB_EVENTS_QUEUE: &str = "job-events";
}

#[cfg(test)]
mod sample;
#[cfg(test)]
pub(crate) use sample::sample_registration;

#[cfg(test)]
mod tests;

pub mod jobs;
