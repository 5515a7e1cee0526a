//! Against a real Kubernetes cluster, when `KUBECONFIG` is set: creates a bootstrap token,
//! reads cluster-info and its CA hash, reads the token back, deletes it. Without `KUBECONFIG`
//! there is no cluster to talk to here, and the test says so and passes.

use chrono::Utc;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_core::cluster::bootstrap::ca_cert_hash;
use worldland_core::cluster::{BootstrapToken, Cluster, Created};

#[tokio::test]
async fn token_lifecycle_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("KUBECONFIG is not set: no real cluster here, nothing to check");
        return;
    }
    let client = kube::Client::try_default().await.expect("a client from KUBECONFIG");
    let cluster = KubeCluster::new(client);
    let info = cluster.cluster_info().await.expect("cluster-info in kube-public");
    let hash = ca_cert_hash(&info.ca_cert).expect("a CA certificate in cluster-info");
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
    let token = BootstrapToken::generate(Utc::now() + chrono::Duration::minutes(10), "worldland real-cluster test".into());
    assert_eq!(cluster.create_bootstrap_token(&token).await.unwrap(), Created::New);
    let read = cluster
        .get_bootstrap_token(&token.id)
        .await
        .unwrap()
        .expect("the token just created");
    assert_eq!(read.secret, token.secret);
    cluster.delete_bootstrap_token(&token.id).await.unwrap();
    assert!(cluster.get_bootstrap_token(&token.id).await.unwrap().is_none());
    cluster.delete_bootstrap_token(&token.id).await.expect("deleting twice is fine");
}
