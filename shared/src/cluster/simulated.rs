//! An in-process cluster for the demo: bootstrap tokens in memory and a generated CA. It says
//! in its logs that it is simulated, so nobody mistakes a demo for a real join.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{BootstrapToken, Cluster, ClusterInfo, ClusterResult, Created};

/// A real (but throwaway) CA certificate so the CA hash path is exercised end to end.
const SIMULATED_CA_PEM: &str = include_str!("simulated-ca.pem");

pub struct SimulatedCluster {
    server: String,
    tokens: Mutex<HashMap<String, BootstrapToken>>,
}

impl SimulatedCluster {
    pub fn new(server: impl Into<String>) -> Self {
        let server = server.into();
        tracing::warn!(%server, "using a SIMULATED Kubernetes cluster: tokens are not real and nothing can join");
        Self { server, tokens: Mutex::default() }
    }

    pub fn token_count(&self) -> usize {
        self.tokens.lock().expect("cluster lock").len()
    }
}

#[async_trait]
impl Cluster for SimulatedCluster {
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo> {
        Ok(ClusterInfo { server: self.server.clone(), ca_cert: SIMULATED_CA_PEM.as_bytes().to_vec() })
    }

    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        let mut tokens = self.tokens.lock().expect("cluster lock");
        if tokens.contains_key(&token.id) {
            return Ok(Created::AlreadyExists);
        }
        tracing::debug!(token_id = %token.id, "simulated cluster: bootstrap token created");
        tokens.insert(token.id.clone(), token.clone());
        Ok(Created::New)
    }

    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>> {
        Ok(self.tokens.lock().expect("cluster lock").get(token_id).cloned())
    }

    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()> {
        self.tokens.lock().expect("cluster lock").remove(token_id);
        Ok(())
    }
}
