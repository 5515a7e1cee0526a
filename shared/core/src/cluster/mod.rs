//! The Kubernetes cluster as the workers use it, behind a small trait: the kube-rs client for
//! real clusters, and a simulated in-process cluster for the demo.

pub mod bootstrap;
pub mod csr;
pub mod health;
pub mod node;
pub mod rbac_audit;

use async_trait::async_trait;

use std::collections::BTreeMap;

pub use bootstrap::BootstrapToken;
pub use csr::{Csr, CsrDecision};
pub use health::{NodeHealth, NodeHealthPage};
pub use node::{NodeInfo, Taint};

/// Why a Kubernetes API call failed: worth retrying or not.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Worth retrying: network trouble, timeouts, server errors, throttling.
    #[error("Kubernetes API unavailable: {0}")]
    Unavailable(#[source] crate::BoxError),
    /// Retrying will not help: unauthorized, forbidden, invalid, malformed cluster-info. `status`
    /// is the API's HTTP status when it answered one.
    #[error("Kubernetes API refused (status {status:?}): {source}")]
    Refused {
        /// The API's HTTP status, when it answered with one.
        status: Option<u16>,
        /// The underlying error.
        #[source]
        source: crate::BoxError,
    },
}

impl ClusterError {
    /// A transient failure.
    pub fn unavailable(e: impl Into<crate::BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
    /// A refusal with the API's status, if it gave one.
    pub fn refused(status: Option<u16>, e: impl Into<crate::BoxError>) -> Self {
        Self::Refused { status, source: e.into() }
    }
}

/// Result of a Kubernetes API call.
pub type ClusterResult<T> = std::result::Result<T, ClusterError>;

/// What `kubeadm join` needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The API server URL, from cluster-info (or the operator's override).
    pub server: String,
    /// The cluster CA certificate (PEM or DER).
    pub ca_cert: Vec<u8>,
}

/// What a create found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was created.
    New,
    /// An object of that name was already there (a redelivery, say); not an error.
    AlreadyExists,
}

/// The Kubernetes port: kube-rs for real clusters, a simulated cluster for the demo.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Reads `cluster-info` in `kube-public`.
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo>;
    /// Creates the token's Secret `bootstrap-token-<id>` in `kube-system`.
    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created>;
    /// Reads a bootstrap token back from its Secret; `None` when there is none.
    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>>;
    /// Deleting a token that is already gone is not an error.
    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()>;
    /// The node of that name; `None` when it has not joined.
    async fn get_node(&self, name: &str) -> ClusterResult<Option<NodeInfo>>;
    /// Merge-patches labels and annotations (`None` removes one). One write.
    async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> ClusterResult<()>;
    /// Adds or removes `taint` (by key), keeping every other taint (read, modify, write with a
    /// resourceVersion precondition). No write if already so.
    async fn set_taint(&self, name: &str, taint: &Taint, present: bool) -> ClusterResult<()>;
    /// Adds or removes the `worldland.io/offline=true:NoSchedule` taint.
    async fn set_offline_taint(&self, name: &str, offline: bool) -> ClusterResult<()> {
        self.set_taint(name, &Taint::offline(), offline).await
    }
    /// Creates a provider's Node, before its kubelet can, carrying only the provider taint
    /// ([`Taint::provider`]), so nothing the broker runs can be scheduled there from its first
    /// moment; a Node already there gets the taint added instead.
    async fn create_provider_node(&self, name: &str) -> ClusterResult<Created>;
    /// The certificate signing requests for kubelets' signers that carry no decision yet.
    async fn undecided_kubelet_csrs(&self) -> ClusterResult<Vec<Csr>>;
    /// Writes a decision on a CSR through its approval subresource, with the CSR's
    /// resourceVersion as precondition (a CSR decided in between is a conflict, `Refused` 409).
    async fn decide_csr(&self, csr: &Csr, decision: &CsrDecision) -> ClusterResult<()>;
    /// Returns when a CSR may have been created or changed, or after `limit` (a container's
    /// approver waits here between passes; a watch where there is one).
    async fn csr_change(&self, limit: std::time::Duration);
    /// One bounded page of provider nodes' health: Nodes carrying `worldland.io/provider-id`,
    /// at most `limit` of them, from `cursor` (the previous page's `next`; `None` for the first),
    /// each with its Ready condition and its Lease's renewal (`kube-node-lease/<node>`). A cursor
    /// too old to continue from is `Refused` 410: start again from the first page.
    async fn provider_node_health(&self, cursor: Option<&str>, limit: u32) -> ClusterResult<NodeHealthPage>;
    /// One node's health as [`Cluster::provider_node_health`] reads it; `None` when there is no
    /// such node.
    async fn node_health(&self, name: &str) -> ClusterResult<Option<NodeHealth>>;
}
