//! The real cluster, through kube-rs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use super::bootstrap::{secret_name, BootstrapToken, CLUSTER_INFO_NAME, CLUSTER_INFO_NAMESPACE, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE};
use super::{Cluster, ClusterError, ClusterInfo, ClusterResult, Created};
use crate::labels::FIELD_MANAGER;

#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl KubeCluster {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), TOKEN_NAMESPACE)
    }
}

/// Sorts kube errors into retryable and not. Messages carry no request body, so no secret.
fn classify(e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
            ClusterError::Unavailable(format!("{} {}: {}", status.code, status.reason, status.message))
        }
        kube::Error::Api(status) => ClusterError::Refused(format!("{} {}: {}", status.code, status.reason, status.message)),
        other => ClusterError::Unavailable(other.to_string()),
    }
}

fn post_params() -> PostParams {
    PostParams { dry_run: false, field_manager: Some(FIELD_MANAGER.to_string()) }
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
            .ok_or_else(|| ClusterError::Refused("cluster-info has no kubeconfig".into()))?;
        let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
            .map_err(|e| ClusterError::Refused(format!("cluster-info kubeconfig: {e}")))?;
        let cluster = parsed
            .clusters
            .into_iter()
            .find_map(|c| c.cluster)
            .ok_or_else(|| ClusterError::Refused("cluster-info names no cluster".into()))?;
        let server = cluster.server.ok_or_else(|| ClusterError::Refused("cluster-info has no server".into()))?;
        use base64::Engine;
        let ca_cert = cluster
            .certificate_authority_data
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d.trim()).ok())
            .ok_or_else(|| ClusterError::Refused("cluster-info has no certificate-authority-data".into()))?;
        Ok(ClusterInfo { server, ca_cert })
    }

    async fn create_bootstrap_token(&self, token: &BootstrapToken) -> ClusterResult<Created> {
        let data: BTreeMap<String, ByteString> =
            token.secret_data().into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect();
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

    async fn delete_bootstrap_token(&self, token_id: &str) -> ClusterResult<()> {
        match self.secrets().delete(&secret_name(token_id), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}
