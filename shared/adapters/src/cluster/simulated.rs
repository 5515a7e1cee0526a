//! An in-process cluster for the demo: bootstrap tokens in memory and a generated CA. It says
//! in its logs that it is simulated, so nobody mistakes a demo for a real join.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use chrono::{DateTime, Utc};
use worldland_core::cluster::health::{ReadyCondition, ReadyStatus};
use worldland_core::cluster::node::taints_with;
use worldland_core::cluster::{
    BootstrapToken, Cluster, ClusterError, ClusterInfo, ClusterResult, Created, Csr, CsrDecision, NodeHealth, NodeHealthPage, NodeInfo,
    Taint,
};
use worldland_core::labels;

/// A real (but throwaway) CA certificate so the CA hash path is exercised end to end.
const SIMULATED_CA_PEM: &str = include_str!("simulated-ca.pem");

pub struct SimulatedCluster {
    server: String,
    tokens: Mutex<HashMap<String, BootstrapToken>>,
    nodes: Mutex<HashMap<String, NodeInfo>>,
    /// Nodes' Ready conditions and Leases as a test set them ([`SimulatedCluster::set_node_health`]).
    health: Mutex<HashMap<String, NodeState>>,
    writes: AtomicU64,
}

/// What a node's kubelet (or the node lifecycle controller) last wrote: its Ready condition and
/// its Lease's renewal.
#[derive(Debug, Clone, Copy)]
struct NodeState {
    ready: ReadyCondition,
    lease_renewed: Option<DateTime<Utc>>,
}

impl SimulatedCluster {
    pub fn new(server: impl Into<String>) -> Self {
        let server = server.into();
        tracing::warn!(%server, "using a SIMULATED Kubernetes cluster: tokens are not real and nothing can join");
        Self {
            server,
            tokens: Mutex::default(),
            nodes: Mutex::default(),
            health: Mutex::default(),
            writes: AtomicU64::new(0),
        }
    }

    /// A node joins (what `kubeadm join` and the kubelet would do). Its Ready condition is its
    /// `ready`, with no transition time, and it has no Lease, until [`Self::set_node_health`].
    pub fn add_node(&self, node: NodeInfo) {
        self.health.lock().expect("cluster lock").remove(&node.name);
        self.nodes.lock().expect("cluster lock").insert(node.name.clone(), node);
    }

    /// What the node's kubelet (or the node lifecycle controller) writes: its Ready condition
    /// (the node is `ready` exactly when it is True) and its Lease's last renewal.
    pub fn set_node_health(&self, name: &str, ready: ReadyCondition, lease_renewed: Option<DateTime<Utc>>) {
        if let Some(node) = self.nodes.lock().expect("cluster lock").get_mut(name) {
            node.ready = ready.status == ReadyStatus::True;
        }
        let state = NodeState { ready, lease_renewed };
        self.health.lock().expect("cluster lock").insert(name.to_string(), state);
    }

    fn health_of(&self, node: &NodeInfo) -> NodeHealth {
        let set = self.health.lock().expect("cluster lock").get(&node.name).copied();
        let derived = ReadyCondition {
            status: if node.ready { ReadyStatus::True } else { ReadyStatus::False },
            since: None,
        };
        NodeHealth {
            name: node.name.clone(),
            provider_id: node.labels.get(labels::PROVIDER_ID).cloned(),
            marked_offline: node.labels.get(labels::STATUS).map(String::as_str) == Some(labels::STATUS_OFFLINE),
            ready: Some(set.map_or(derived, |s| s.ready)),
            lease_renewed: set.and_then(|s| s.lease_renewed),
        }
    }

    pub fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.lock().expect("cluster lock").get(name).cloned()
    }

    /// Writes made to the cluster (creates, patches, deletes).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn token_count(&self) -> usize {
        self.tokens.lock().expect("cluster lock").len()
    }
}

#[async_trait]
impl Cluster for SimulatedCluster {
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo> {
        Ok(ClusterInfo {
            server: self.server.clone(),
            ca_cert: SIMULATED_CA_PEM.as_bytes().to_vec(),
        })
    }

    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        let mut tokens = self.tokens.lock().expect("cluster lock");
        if tokens.contains_key(&token.id) {
            return Ok(Created::AlreadyExists);
        }
        tracing::debug!(token_id = %token.id, "simulated cluster: bootstrap token created");
        tokens.insert(token.id.clone(), token.clone());
        self.wrote();
        Ok(Created::New)
    }

    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>> {
        Ok(self.tokens.lock().expect("cluster lock").get(token_id).cloned())
    }

    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()> {
        if self.tokens.lock().expect("cluster lock").remove(token_id).is_some() {
            self.wrote();
        }
        Ok(())
    }

    async fn get_node(&self, name: &str) -> ClusterResult<Option<NodeInfo>> {
        Ok(self.node(name))
    }

    async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> ClusterResult<()> {
        let mut nodes = self.nodes.lock().expect("cluster lock");
        let node = nodes
            .get_mut(name)
            .ok_or_else(|| ClusterError::refused(Some(404), format!("node {name} not found")))?;
        for (map, patch) in [(&mut node.labels, labels), (&mut node.annotations, annotations)] {
            for (k, v) in patch {
                match v {
                    Some(v) => map.insert(k.clone(), v.clone()),
                    None => map.remove(k),
                };
            }
        }
        self.wrote();
        Ok(())
    }

    async fn set_taint(&self, name: &str, taint: &Taint, present: bool) -> ClusterResult<()> {
        let mut nodes = self.nodes.lock().expect("cluster lock");
        let node = nodes
            .get_mut(name)
            .ok_or_else(|| ClusterError::refused(Some(404), format!("node {name} not found")))?;
        let wanted = taints_with(&node.taints, taint, present);
        if wanted != node.taints {
            node.taints = wanted;
            self.wrote();
        }
        Ok(())
    }

    async fn create_provider_node(&self, name: &str) -> ClusterResult<Created> {
        if self.node(name).is_some() {
            self.set_taint(name, &Taint::provider(), true).await?;
            return Ok(Created::AlreadyExists);
        }
        self.add_node(NodeInfo {
            name: name.to_string(),
            taints: vec![Taint::provider()],
            ..Default::default()
        });
        self.wrote();
        Ok(Created::New)
    }

    /// Nothing joins a simulated cluster through TLS bootstrap: no CSRs.
    async fn undecided_kubelet_csrs(&self) -> ClusterResult<Vec<Csr>> {
        Ok(Vec::new())
    }

    async fn decide_csr(&self, csr: &Csr, _decision: &CsrDecision) -> ClusterResult<()> {
        Err(ClusterError::refused(
            Some(404),
            format!("no CSR {} in a simulated cluster", csr.name),
        ))
    }

    async fn csr_change(&self, limit: std::time::Duration) {
        tokio::time::sleep(limit).await
    }

    /// Nodes carrying a provider id, by name; the cursor is the last name of the previous page.
    async fn provider_node_health(&self, cursor: Option<&str>, limit: u32) -> ClusterResult<NodeHealthPage> {
        let mut nodes: Vec<NodeInfo> = self
            .nodes
            .lock()
            .expect("cluster lock")
            .values()
            .filter(|n| n.labels.contains_key(labels::PROVIDER_ID))
            .filter(|n| cursor.is_none_or(|c| n.name.as_str() > c))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let limit = limit.max(1) as usize;
        let next = (nodes.len() > limit).then(|| nodes[limit - 1].name.clone());
        nodes.truncate(limit);
        Ok(NodeHealthPage {
            nodes: nodes.iter().map(|n| self.health_of(n)).collect(),
            next,
        })
    }

    async fn node_health(&self, name: &str) -> ClusterResult<Option<NodeHealth>> {
        Ok(self.node(name).map(|n| self.health_of(&n)))
    }
}
