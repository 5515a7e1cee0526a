//! The real cluster, through kube-rs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use worldland_core::cluster::bootstrap::{
    secret_name, BootstrapToken, CLUSTER_INFO_NAME, CLUSTER_INFO_NAMESPACE, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE,
};
use worldland_core::cluster::node::{parse_quantity, taints_with};
use worldland_core::cluster::{
    Cluster, ClusterError, ClusterInfo, ClusterResult, Created, Csr, CsrDecision, NodeHealth, NodeHealthPage, NodeInfo, Taint,
};

use super::kube_csr::{self, CsrWatch};
use worldland_core::labels::FIELD_MANAGER;

#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    csr_watch: CsrWatch,
}

impl KubeCluster {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            csr_watch: CsrWatch::default(),
        }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), TOKEN_NAMESPACE)
    }
}

/// Sorts kube errors into retryable and not. Messages carry no request body, so no secret.
pub(super) fn classify(e: kube::Error) -> ClusterError {
    match &e {
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => ClusterError::unavailable(e),
        kube::Error::Api(status) => ClusterError::refused(Some(status.code), e),
        _ => ClusterError::unavailable(e),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

fn node_info(node: Node) -> NodeInfo {
    let status = node.status.unwrap_or_default();
    let capacity = status.capacity.unwrap_or_default();
    let q = |k: &str, scale| capacity.get(k).and_then(|v| parse_quantity(&v.0, scale));
    NodeInfo {
        name: node.metadata.name.unwrap_or_default(),
        resource_version: node.metadata.resource_version.unwrap_or_default(),
        ready: status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        labels: node.metadata.labels.unwrap_or_default(),
        annotations: node.metadata.annotations.unwrap_or_default(),
        taints: node
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .map(|t| Taint {
                key: t.key,
                value: t.value,
                effect: t.effect,
                time_added: t.time_added.map(|at| at.0.to_string()),
            })
            .collect(),
        cpu_millis: q("cpu", 1000),
        memory_bytes: q("memory", 1),
        gpus: q("nvidia.com/gpu", 1),
    }
}

fn taint_json(t: &Taint) -> serde_json::Value {
    let mut v = serde_json::json!({"key": t.key, "effect": t.effect});
    if let Some(val) = &t.value {
        v["value"] = serde_json::json!(val);
    }
    // Kept as read: eviction timing counts from it.
    if let Some(at) = &t.time_added {
        v["timeAdded"] = serde_json::json!(at);
    }
    v
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn cluster_info(&self) -> ClusterResult<ClusterInfo> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), CLUSTER_INFO_NAMESPACE);
        let cm = cms.get(CLUSTER_INFO_NAME).await.map_err(classify)?;
        let kubeconfig = cm
            .data
            .as_ref()
            .and_then(|d| d.get("kubeconfig"))
            .ok_or_else(|| ClusterError::refused(None, "cluster-info has no kubeconfig"))?;
        let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
            .map_err(|e| ClusterError::refused(None, format!("cluster-info kubeconfig: {e}")))?;
        let cluster = parsed
            .clusters
            .into_iter()
            .find_map(|c| c.cluster)
            .ok_or_else(|| ClusterError::refused(None, "cluster-info names no cluster"))?;
        let server = cluster
            .server
            .ok_or_else(|| ClusterError::refused(None, "cluster-info has no server"))?;
        use base64::Engine;
        let ca_cert = cluster
            .certificate_authority_data
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d.trim()).ok())
            .ok_or_else(|| ClusterError::refused(None, "cluster-info has no certificate-authority-data"))?;
        Ok(ClusterInfo { server, ca_cert })
    }

    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        let data: BTreeMap<String, ByteString> = token
            .secret_data()
            .into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(token.secret_name()),
                namespace: Some(TOKEN_NAMESPACE.to_string()),
                ..Default::default()
            },
            type_: Some(TOKEN_SECRET_TYPE.to_string()),
            data: Some(data),
            ..Default::default()
        };
        match self.secrets().create(&post_params(), &secret).await {
            Ok(_) => Ok(Created::New),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Created::AlreadyExists),
            Err(e) => Err(classify(e)),
        }
    }

    async fn get_bootstrap_token(&self, token_id: &str) -> ClusterResult<Option<BootstrapToken>> {
        let Some(secret) = self.secrets().get_opt(&secret_name(token_id)).await.map_err(classify)? else {
            return Ok(None);
        };
        let data: BTreeMap<String, String> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
            .collect();
        Ok(BootstrapToken::from_secret_data(&data))
    }

    async fn get_node(&self, name: &str) -> ClusterResult<Option<NodeInfo>> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        Ok(nodes.get_opt(name).await.map_err(classify)?.map(node_info))
    }

    async fn patch_node_metadata(
        &self,
        name: &str,
        labels: &BTreeMap<String, Option<String>>,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> ClusterResult<()> {
        let mut metadata = serde_json::Map::new();
        if !labels.is_empty() {
            metadata.insert("labels".into(), serde_json::to_value(labels).expect("maps serialise"));
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), serde_json::to_value(annotations).expect("maps serialise"));
        }
        let patch = serde_json::json!({ "metadata": metadata });
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.patch(name, &patch_params(), &Patch::Merge(&patch)).await.map_err(classify)?;
        Ok(())
    }

    async fn set_taint(&self, name: &str, taint: &Taint, present: bool) -> ClusterResult<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        // A merge patch replaces the whole taint list, so read, modify, and write with the
        // resourceVersion as a precondition; on a conflict, read again.
        for _ in 0..5 {
            let node = match nodes.get_opt(name).await.map_err(classify)? {
                Some(n) => node_info(n),
                None => return Err(ClusterError::refused(None, format!("node {name} not found"))),
            };
            let wanted = taints_with(&node.taints, taint, present);
            if wanted == node.taints {
                return Ok(());
            }
            let taints = if wanted.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Array(wanted.iter().map(taint_json).collect())
            };
            let patch = serde_json::json!({"metadata": {"resourceVersion": node.resource_version}, "spec": {"taints": taints}});
            match nodes.patch(name, &patch_params(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(e) => return Err(classify(e)),
            }
        }
        Err(ClusterError::unavailable(format!(
            "node {name} kept changing under the taint update"
        )))
    }

    async fn create_provider_node(&self, name: &str) -> ClusterResult<Created> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"taints": [taint_json(&Taint::provider())]},
        }))
        .map_err(|e| ClusterError::refused(None, e))?;
        match nodes.create(&post_params(), &node).await {
            Ok(_) => Ok(Created::New),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                self.set_taint(name, &Taint::provider(), true).await?;
                Ok(Created::AlreadyExists)
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn undecided_kubelet_csrs(&self) -> ClusterResult<Vec<Csr>> {
        kube_csr::undecided(&self.client).await
    }

    async fn decide_csr(&self, csr: &Csr, decision: &CsrDecision) -> ClusterResult<()> {
        kube_csr::decide(&self.client, csr, decision).await
    }

    async fn csr_change(&self, limit: std::time::Duration) {
        self.csr_watch.changed(&self.client, limit).await
    }

    async fn provider_node_health(&self, cursor: Option<&str>, limit: u32) -> ClusterResult<NodeHealthPage> {
        super::kube_nodes::page(&self.client, cursor, limit).await
    }

    async fn node_health(&self, name: &str) -> ClusterResult<Option<NodeHealth>> {
        super::kube_nodes::one(&self.client, name).await
    }

    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()> {
        match self.secrets().delete(&secret_name(token_id), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}
