//! A cluster decorator that injects the faults the tests name, everything else passed through:
//! token creates made but their answers lost (a timeout after the API server stored the Secret),
//! CSR decisions that fail before they are written, node-health reads that fail or answer an old
//! snapshot. Token reads
//! panic: no worker reads a Secret.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use worldland_core::cluster::{
    BootstrapToken, Cluster, ClusterError, ClusterInfo, ClusterResult, Created, Csr, CsrDecision, NodeHealth, NodeHealthPage, NodeInfo,
    Taint,
};

pub struct FaultyCluster {
    inner: Arc<dyn Cluster>,
    /// Token creates still to make and then report lost.
    lose_token_creates: AtomicU32,
    /// Whether CSR decisions fail (before they are written).
    fail_decisions: AtomicBool,
    /// Pages of provider nodes' health still to read before the reads fail.
    node_health_pages_left: AtomicU32,
    /// When set, the provider-node list answers this (a snapshot older than the sweep: a
    /// `continue` token reads the first page's snapshot); single-node reads stay live.
    listing_snapshot: std::sync::Mutex<Option<Vec<NodeHealth>>>,
}

impl FaultyCluster {
    pub fn new(inner: Arc<dyn Cluster>) -> Self {
        Self {
            inner,
            lose_token_creates: AtomicU32::new(0),
            fail_decisions: AtomicBool::new(false),
            node_health_pages_left: AtomicU32::new(u32::MAX),
            listing_snapshot: std::sync::Mutex::new(None),
        }
    }

    /// The provider-node list answers `nodes`, one page, whatever the cluster holds now.
    pub fn listing_snapshot(self, nodes: Vec<NodeHealth>) -> Self {
        *self.listing_snapshot.lock().unwrap() = Some(nodes);
        self
    }

    /// Reads of provider nodes' health answer `n` pages, then fail (a timeout).
    pub fn failing_node_health_after(self, n: u32) -> Self {
        self.node_health_pages_left.store(n, Ordering::SeqCst);
        self
    }

    /// The next `n` token creates are made, then reported lost.
    pub fn losing_token_creates(self, n: u32) -> Self {
        self.lose_token_creates.store(n, Ordering::SeqCst);
        self
    }

    /// Every CSR decision fails before it is written.
    pub fn failing_decisions(self) -> Self {
        self.fail_decisions.store(true, Ordering::SeqCst);
        self
    }
}

#[async_trait]
impl Cluster for FaultyCluster {
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo> {
        self.inner.cluster_info().await
    }
    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        let created = self.inner.create_bootstrap_token(token).await?;
        let lose = self
            .lose_token_creates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match lose {
            Ok(_) => Err(ClusterError::unavailable("injected: the create's answer was lost")),
            Err(_) => Ok(created),
        }
    }
    async fn get_bootstrap_token(&self, _token_id: &str) -> ClusterResult<Option<BootstrapToken>> {
        panic!("no worker reads a Secret back")
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
    async fn provider_node_health(&self, cursor: Option<&str>, limit: u32) -> ClusterResult<NodeHealthPage> {
        let left = self
            .node_health_pages_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_err() {
            return Err(ClusterError::unavailable("injected: the node list timed out"));
        }
        if let Some(nodes) = self.listing_snapshot.lock().unwrap().clone() {
            return Ok(NodeHealthPage { nodes, next: None });
        }
        self.inner.provider_node_health(cursor, limit).await
    }
    async fn node_health(&self, name: &str) -> ClusterResult<Option<NodeHealth>> {
        self.inner.node_health(name).await
    }
}
