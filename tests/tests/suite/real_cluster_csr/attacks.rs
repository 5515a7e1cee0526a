//! What a token buys that it should not: another wallet's token, an operator's token, and (why the
//! broker's tokens left it) a token in kubeadm's group.

use chrono::Utc;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, PostParams};
use worldland_core::certificates::CLIENT_SIGNER;
use worldland_core::cluster::bootstrap::TOKEN_NAMESPACE;
use worldland_core::cluster::BootstrapToken;
use worldland_tests::kubelet;
use worldland_tests::real_cluster::{admin, bearer, unique};

use super::{node_subject, Broker, CLIENT_USAGES, ONE_AT_A_TIME};

/// Another wallet's token buys no certificate for the victim's node, nor for a name nobody
/// reserved (a control-plane node's, say); the attacker's record says why, the victim's record
/// and Node are untouched.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn another_wallets_token_gets_no_certificate_for_a_victims_node_nor_an_unreserved_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let victim = broker.approved_provider().await;
    let attacker = broker.approved_provider().await;
    let key = kubelet::key();
    let unreserved = unique("control-plane");
    broker.nodes.lock().unwrap().push(unreserved.clone());
    for (target, reason) in [(&victim.node, "WorldLandWrongNodeName"), (&unreserved, "WorldLandWrongNodeName")] {
        let csr = broker
            .submit(
                bearer(&attacker.token).await,
                CLIENT_SIGNER,
                &kubelet::request(&key, &node_subject(target), None),
                CLIENT_USAGES,
            )
            .await;
        let decided = broker.decide(&csr).await;
        assert_eq!(
            (decided.approved, decided.reason.as_str()),
            (false, reason),
            "{target}: {decided:?}"
        );
        let signed = Api::<CertificateSigningRequest>::all(admin().await).get(&csr).await.unwrap();
        assert!(signed.status.and_then(|s| s.certificate).is_none(), "no certificate for {target}");
    }
    // A client request with more than a kubelet asks for (system:masters) is denied too.
    let masters = broker
        .submit(
            bearer(&attacker.token).await,
            CLIENT_SIGNER,
            &kubelet::request(&key, &format!("/O=system:masters/CN=system:node:{}", attacker.node), None),
            CLIENT_USAGES,
        )
        .await;
    assert_eq!(broker.decide(&masters).await.reason, "WorldLandWrongOrganization");
    let attacker_rec = broker.record(&attacker.provider_id).await;
    assert!(
        attacker_rec.csr_refusal.is_some() && attacker_rec.client_csr.is_none(),
        "{attacker_rec:?}"
    );
    let victim_rec = broker.record(&victim.provider_id).await;
    assert!(victim_rec.client_csr.is_none() && victim_rec.csr_refusal.is_none());
    let nodes: Api<Node> = Api::all(admin().await);
    assert!(nodes.get_opt(&victim.node).await.unwrap().is_none(), "no Node made for the victim");
    broker.clean_up().await;
}

/// A bootstrap token the broker did not issue (an operator's, outside the broker's group) that
/// names a provider's node is denied; one naming another machine is left to the administrator.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_foreign_token_naming_a_provider_node_is_denied_and_other_machines_are_left_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let p = broker.approved_provider().await;
    let foreign = BootstrapToken::generate(Utc::now() + chrono::Duration::minutes(10), "an operator's token".into());
    let secrets: Api<Secret> = Api::namespaced(admin().await, TOKEN_NAMESPACE);
    let mut data = foreign.secret_data();
    data.remove("auth-extra-groups");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": foreign.secret_name()}, "type": "bootstrap.kubernetes.io/token", "stringData": data,
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    broker.tokens.lock().unwrap().push(foreign.id.clone());
    let key = kubelet::key();
    let named = broker
        .submit(
            bearer(&foreign.token()).await,
            CLIENT_SIGNER,
            &kubelet::request(&key, &node_subject(&p.node), None),
            CLIENT_USAGES,
        )
        .await;
    assert_eq!(broker.decide(&named).await.reason, "WorldLandNotABrokerToken");
    let other = unique("broker-node");
    let left = broker
        .submit(
            bearer(&foreign.token()).await,
            CLIENT_SIGNER,
            &kubelet::request(&key, &node_subject(&other), None),
            CLIENT_USAGES,
        )
        .await;
    let report = csr_approver::approve_pending(&broker.approver, Utc::now()).await.unwrap();
    assert!(report.left >= 1, "{report:?}");
    assert!(kubelet::undecided(admin().await, &left).await, "left for the administrator");
    broker.clean_up().await;
}

/// Why the broker's tokens left kubeadm's group: on a cluster configured as kubeadm configures
/// one, a token in `system:bootstrappers:kubeadm:default-node-token` (what the issuer minted
/// before) buys a kubelet certificate for any node name, with no broker involved.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_token_in_kubeadms_group_buys_a_certificate_for_any_name_without_the_broker() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let kubeadm = BootstrapToken::generate(Utc::now() + chrono::Duration::minutes(10), "kubeadm-style".into());
    let mut data = kubeadm.secret_data();
    data.insert("auth-extra-groups".into(), "system:bootstrappers:kubeadm:default-node-token".into());
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": kubeadm.secret_name()}, "type": "bootstrap.kubernetes.io/token", "stringData": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin().await, TOKEN_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    broker.tokens.lock().unwrap().push(kubeadm.id.clone());
    let anyone = unique("someone-elses-node");
    let csr = broker
        .submit(
            bearer(&kubeadm.token()).await,
            CLIENT_SIGNER,
            &kubelet::request(&kubelet::key(), &node_subject(&anyone), None),
            CLIENT_USAGES,
        )
        .await;
    // No approver pass: the controller manager alone approves it.
    let decided = kubelet::decision(admin().await, &csr, 30).await;
    assert!(decided.approved, "{decided:?}");
    broker.clean_up().await;
}
