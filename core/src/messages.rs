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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub name: String,
    #[serde(alias = "memory")]
    pub memory_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_ver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
}

/// The machine as measured by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_ver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    pub cpu_cores: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threads: Option<u32>,
    pub total_memory_mb: u64,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    pub total_gpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_disk_gb: Option<u64>,
    pub available_disk_gb: u64,
    pub public_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
}

/// What the provider offers out of its spec, and at what price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    pub gpu_price_per_hour: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_price_per_hour: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiningConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub gpu_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_address: Option<String>,
}

/// `data` of a `provider:registration` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub provider_id: String,
    pub wallet_addr: String,
    pub spec: Spec,
    pub capacity: Capacity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mining_config: Option<MiningConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
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
    Pending,
    Approved,
    Joined,
    Available,
    Busy,
    Offline,
    Rejected,
    Expired,
}

impl ProviderState {
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
    pub success: bool,
    pub status: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Base64 sealed box holding a [`SealedJoin`], when the registration carried `enc_pubkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_join: Option<String>,
}

impl ProviderResponse {
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
    pub join_token: String,
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
    pub provider_id: String,
    pub node_name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub gpu_usage: Vec<f64>,
    #[serde(default)]
    pub cpu_usage: f64,
    #[serde(default)]
    pub memory_usage: f64,
    #[serde(default)]
    pub active_jobs: u32,
    pub timestamp: DateTime<Utc>,
}

/// A Redis stream entry as the bridge forwards it onto the bus: the exact bytes of `data` (as
/// UTF-8 text) so that signatures can be checked over them downstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnvelope {
    pub stream: String,
    pub entry_id: String,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
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
    pub provider_id: String,
    /// The stream entry the registration came from; the issuer answers each registration once.
    pub registration_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc_pubkey: Option<String>,
}

/// Routing keys on the bus.
pub mod topics {
    pub const REGISTRATION_RECEIVED: &str = "provider.registration.received";
    pub const HEARTBEAT_RECEIVED: &str = "provider.heartbeat.received";
    pub const PROVIDER_VALIDATED: &str = "provider.validated";
    pub const PROVIDER_APPROVED: &str = "provider.approved";
    pub const JOB_ALLOCATE: &str = "job.allocate";
    pub const JOB_RELEASE: &str = "job.release";
    pub const JOB_ALLOCATED: &str = "job.allocated";
    pub const JOB_REJECTED: &str = "job.rejected";
    pub const JOB_RELEASED: &str = "job.released";
    /// The answers customers (and billing) read, kept on one queue of their own.
    pub const JOB_EVENTS: &[&str] = &[JOB_ALLOCATED, JOB_REJECTED, JOB_RELEASED];
    pub const JOB_EVENTS_QUEUE: &str = "job-events";
}

/// A plain registration for the crate's unit tests: `gpus` × RTX 4090, 8 cores per GPU, 32 GiB
/// per GPU, a public IP, no offer limits.
#[cfg(test)]
pub(crate) fn sample_registration(provider_id: &str, wallet: &str, gpus: u32) -> Registration {
    let gpu = Gpu {
        index: None,
        name: "NVIDIA GeForce RTX 4090".into(),
        memory_mb: 24564,
        uuid: None,
        driver_ver: None,
        cuda_version: None,
        pci_bus_id: None,
    };
    Registration {
        provider_id: provider_id.into(),
        wallet_addr: wallet.into(),
        spec: Spec {
            hostname: "GPU-01".into(),
            os: None,
            kernel_ver: None,
            architecture: None,
            cpu_model: None,
            cpu_cores: 8 * gpus,
            cpu_threads: None,
            total_memory_mb: 32768 * u64::from(gpus),
            gpus: vec![gpu; gpus as usize],
            total_gpus: gpus,
            total_disk_gb: None,
            available_disk_gb: 100,
            public_ip: "8.8.8.8".into(),
            private_ip: None,
        },
        capacity: Capacity {
            gpu_count: None,
            cpu_cores: None,
            memory_mb: None,
            gpu_price_per_hour: 0.5,
            cpu_price_per_hour: None,
        },
        mining_config: None,
        agent_version: None,
        timestamp: None,
        enc_pubkey: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agents_registration_and_ignores_unknown_fields() {
        let data = r#"{"provider_id":"p-1","wallet_addr":"0xab","spec":{"hostname":"h","cpu_cores":32,
            "total_memory_mb":131072,"gpus":[{"index":0,"name":"NVIDIA GeForce RTX 4090","memory_mb":24564,
            "uuid":"GPU-1","future_field":1}],"total_gpus":1,"available_disk_gb":500,"public_ip":"1.2.3.4"},
            "capacity":{"gpu_count":1,"gpu_price_per_hour":0.5},"new_top_level":{"x":1}}"#;
        let reg: Registration = serde_json::from_str(data).unwrap();
        assert_eq!(reg.spec.gpus[0].memory_mb, 24564);
        assert_eq!(reg.capacity.gpu_count, Some(1));
        assert!(reg.timestamp.is_none());
    }

    #[test]
    fn accepts_the_product_description_gpu_spelling() {
        let gpu: Gpu = serde_json::from_str(r#"{"name":"NVIDIA GeForce RTX 4090","memory":24576}"#).unwrap();
        assert_eq!(gpu.memory_mb, 24576);
    }

    #[test]
    fn rejection_has_the_agents_shape() {
        let v = serde_json::to_value(ProviderResponse::rejected("bad")).unwrap();
        assert_eq!(v, serde_json::json!({"success": false, "status": "rejected", "message": "bad"}));
    }

    #[test]
    fn sealed_join_debug_hides_the_token() {
        let s = SealedJoin {
            join_token: "abcdef.0123456789abcdef".into(),
            join_command: "kubeadm join".into(),
        };
        assert!(!format!("{s:?}").contains("abcdef"));
    }
}

/// Customers' requests and the allocator's answers (`job.*` on the bus).
pub mod jobs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    /// `job.allocate`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct AllocateRequest {
        pub job_id: String,
        pub customer_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gpu_model: Option<String>,
        pub gpus: u32,
        pub cpu_cores: u32,
        pub memory_mb: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_price_per_gpu_hour: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub duration_s: Option<u64>,
    }

    /// `job.release`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ReleaseRequest {
        pub job_id: String,
        #[serde(default)]
        pub reason: String,
    }

    /// `job.allocated`: where the job runs and what it pays.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JobAllocated {
        pub job_id: String,
        pub customer_id: String,
        pub provider_id: String,
        pub node_name: String,
        /// Labels a pod's nodeSelector uses to land on that node.
        pub node_selector: BTreeMap<String, String>,
        pub gpu_model: String,
        pub gpus: u32,
        pub cpu_cores: u32,
        pub memory_mb: u64,
        pub price_per_gpu_hour_micros: i64,
        /// GPUs taken back from mining for this job.
        pub mining_gpus_taken: u32,
    }

    /// `job.rejected`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JobRejected {
        pub job_id: String,
        pub reason: String,
        pub message: String,
    }

    /// `job.released`: the job is closed, with its duration and cost.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JobReleased {
        pub job_id: String,
        pub provider_id: String,
        pub reason: String,
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
        pub command_id: String,
        pub job_id: String,
        pub gpu_model: String,
        pub gpus: u32,
    }

    pub const MINING_STOP: &str = "mining.stop";
    pub const MINING_RESUME: &str = "mining.resume";
}
