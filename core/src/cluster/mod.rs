//! The Kubernetes cluster as the workers use it, behind a small trait: the kube-rs client for
//! real clusters, and a simulated in-process cluster for the demo.

pub mod bootstrap;
pub mod node;

use async_trait::async_trait;

use std::collections::BTreeMap;

pub use bootstrap::BootstrapToken;
pub use node::{NodeInfo, Taint};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Worth retrying: network trouble, server errors, throttling.
    #[error("Kubernetes API unavailable: {0}")]
    Unavailable(String),
    /// Retrying will not help: forbidden, invalid, malformed cluster-info.
    #[error("Kubernetes API refused: {0}")]
    Refused(String),
}

pub type ClusterResult<T> = std::result::Result<T, ClusterError>;

/// What `kubeadm join` needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The API server URL, from cluster-info (or the operator's override).
    pub server: String,
    /// The cluster CA certificate (PEM or DER).
    pub ca_cert: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExists,
}

#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Reads `cluster-info` in `kube-public`.
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo>;
    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created>;
    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>>;
    /// Deleting a token that is already gone is not an error.
    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()>;
    async fn get_node(&self, name: &str) -> ClusterResult<Option<NodeInfo>>;
    /// Merge-patches labels and annotations (`None` removes one). One write.
    async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> ClusterResult<()>;
    /// Adds or removes the `worldland.io/offline:NoSchedule` taint, keeping every other taint
    /// (read, modify, write with a resourceVersion precondition). No write if already so.
    async fn set_offline_taint(&self, name: &str, offline: bool) -> ClusterResult<()>;
}
