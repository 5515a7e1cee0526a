//! Against a real Kubernetes control plane: the private one `scripts/test` starts from
//! `KUBEBUILDER_ASSETS` (`scripts/control_plane.sh`), named by `WORLDLAND_TEST_KUBECONFIG` (an
//! admin kubeconfig) and `WORLDLAND_TEST_CA_HASH` (its CA's hash, computed by openssl as kubeadm
//! documents it). These tests are ignored in an ordinary run, so without a control plane they are
//! counted as skipped, never as passed; `scripts/test` runs them with the rest (`--run-ignored all`) when
//! it started one.

use chrono::Utc;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_core::cluster::bootstrap::{ca_cert_hash, TOKEN_EXTRA_GROUPS};
use worldland_core::cluster::{BootstrapToken, Cluster, Created};
use worldland_tests::real_cluster::{admin, bearer, until};

fn fresh_token() -> BootstrapToken {
    BootstrapToken::generate(Utc::now() + chrono::Duration::minutes(10), "worldland real-cluster test".into())
}

#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn token_lifecycle_on_a_real_cluster() {
    let cluster = KubeCluster::new(admin().await);
    let token = fresh_token();
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

/// The join command's CA hash is the hash of the server's own CA (computed by openssl, not by
/// the code under test), read from cluster-info as a joining kubeadm reads it.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_join_ca_hash_is_the_servers_ca() {
    let cluster = KubeCluster::new(admin().await);
    let info = cluster.cluster_info().await.expect("cluster-info in kube-public");
    let hash = ca_cert_hash(&info.ca_cert).expect("a CA certificate in cluster-info");
    let expected = std::env::var("WORLDLAND_TEST_CA_HASH").expect("WORLDLAND_TEST_CA_HASH (scripts/test sets it)");
    assert_eq!(hash, expected);
}

/// A token the broker issues is a credential the API server takes: its bearer is
/// `system:bootstrap:<id>` in the token's groups; once deleted, it is refused.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_bootstrap_token_authenticates_as_its_id_until_deleted() {
    let cluster = KubeCluster::new(admin().await);
    let token = fresh_token();
    cluster.create_bootstrap_token(&token).await.unwrap();
    let token_bearer = format!("{}.{}", token.id, token.secret);
    let reviews: Api<SelfSubjectReview> = Api::all(bearer(&token_bearer).await);
    // The API server learns of a token's Secret through its informer: a moment after it is written.
    let review = until("the new token authenticates", 10, || async {
        reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await.ok()
    })
    .await;
    let user = review.status.and_then(|s| s.user_info).expect("who the bearer is");
    assert_eq!(user.username.as_deref(), Some(format!("system:bootstrap:{}", token.id).as_str()));
    let groups = user.groups.unwrap_or_default();
    assert!(groups.iter().any(|g| g == "system:bootstrappers"), "{groups:?}");
    assert!(groups.iter().any(|g| g == TOKEN_EXTRA_GROUPS), "{groups:?}");

    cluster.delete_bootstrap_token(&token.id).await.unwrap();
    // The API server caches a successful token authentication for 10 s: a deleted token is
    // refused once that has run out.
    until("the deleted token is refused", 30, || async {
        let refused = reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await;
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 401).then_some(())
    })
    .await;
}
