//! A cluster decorator whose CSR decisions fail before they are written (a timeout to the API
//! server), everything else passed through.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use worldland_core::cluster::{
    BootstrapToken, Cluster, ClusterError, ClusterInfo, ClusterResult, Created, Csr, CsrDecision, NodeInfo, Taint,
};

pub struct FailingDecisions {
    inner: Arc<dyn Cluster>,
}

impl FailingDecisions {
    pub fn new(inner: Arc<dyn Cluster>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl Cluster for FailingDecisions {
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo> {
        self.inner.cluster_info().await
    }
    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        self.inner.create_bootstrap_token(token).await
    }
    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>> {
        self.inner.get_bootstrap_token(token_id).await
    }
    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()> {
        self.inner.delete_bootstrap_token(token_id).await
    }
    async fn get_node(&self, name: &str) -> ClusterResult<Option<NodeInfo>> {
        self.inner.get_node(name).await
    }
    async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> ClusterResult<()> {
        self.inner.patch_node_metadata(name, labels, annotations).await
    }
    async fn set_taint(&self, name: &str, taint: &Taint, present: bool) -> ClusterResult<()> {
        self.inner.set_taint(name, taint, present).await
    }
    async fn create_provider_node(&self, name: &str) -> ClusterResult<Created> {
        self.inner.create_provider_node(name).await
    }
    async fn undecided_kubelet_csrs(&self) -> ClusterResult<Vec<Csr>> {
        self.inner.undecided_kubelet_csrs().await
    }
    async fn decide_csr(&self, csr: &Csr, _decision: &CsrDecision) -> ClusterResult<()> {
        Err(ClusterError::unavailable(format!(
            "injected: the decision on {} timed out",
            csr.name
        )))
    }
    async fn csr_change(&self, limit: std::time::Duration) {
        self.inner.csr_change(limit).await
    }
}
