//! The honest path: a provider's kubelet, with the join token the broker issued it, gets its
//! client and serving certificates for its own node, and no more.

use chrono::Utc;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use worldland_core::certificates::{CLIENT_SIGNER, SERVING_SIGNER};
use worldland_core::labels::PROVIDER_TAINT;
use worldland_tests::kubelet;
use worldland_tests::real_cluster::{admin, bearer, unique, until, with_certificate};

use super::{node_subject, Broker, CLIENT_USAGES, ONE_AT_A_TIME, SERVING_USAGES};

/// The honest path: the provider's kubelet gets a client certificate for its own node name, is
/// `system:node:<name>` with it, finds its Node already there with the provider taint (so nothing
/// of the broker's can ever be scheduled on it), reports its status, cannot remove the taint, and
/// gets a serving certificate for its own name and address only. A second client certificate is
/// refused, and the refusal is on the provider's record.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn an_honest_kubelet_gets_a_certificate_for_its_own_node_and_registers_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let p = broker.approved_provider().await;
    let key = kubelet::key();
    let csr = broker.submit_own(&p, &key).await;
    let decided = broker.decide(&csr).await;
    assert!(decided.approved, "{decided:?}");
    assert_eq!(broker.record(&p.provider_id).await.client_csr.as_deref(), Some(csr.as_str()));
    let cert = kubelet::certificate(admin().await, &csr, 30).await;
    let kubelet = with_certificate(&cert, &key).await;

    let review = Api::<SelfSubjectReview>::all(kubelet.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some(format!("system:node:{}", p.node).as_str()));
    assert!(user.groups.unwrap_or_default().iter().any(|g| g == "system:nodes"));

    // The Node is there before the kubelet registers it, with the provider taint.
    let nodes: Api<Node> = Api::all(kubelet.clone());
    let node = nodes.get(&p.node).await.expect("the kubelet reads its own Node");
    let taints = node.spec.unwrap().taints.unwrap_or_default();
    assert!(
        taints.iter().any(|t| t.key == PROVIDER_TAINT && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    // Registering finds it (as a kubelet's registration does), and its status is the kubelet's.
    let mut registration = Node::default();
    registration.metadata.name = Some(p.node.clone());
    let again = nodes.create(&PostParams::default(), &registration).await;
    assert!(matches!(again, Err(kube::Error::Api(ref s)) if s.code == 409), "{again:?}");
    let ready = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "test kubelet", "lastHeartbeatTime": Utc::now().to_rfc3339(), "lastTransitionTime": Utc::now().to_rfc3339()}]}});
    nodes
        .patch_status(&p.node, &PatchParams::default(), &Patch::Strategic(&ready))
        .await
        .expect("a kubelet reports its own status");
    let untaint = serde_json::json!({"spec": {"taints": []}});
    let refused = nodes.patch(&p.node, &PatchParams::default(), &Patch::Merge(&untaint)).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403),
        "NodeRestriction keeps the taint: {refused:?}"
    );

    // Serving: its own name and registered address, nothing else.
    let own = format!("DNS:{},IP:{}", p.node, p.public_ip);
    let serving = broker
        .submit(
            kubelet.clone(),
            SERVING_SIGNER,
            &kubelet::request(&key, &node_subject(&p.node), Some(&own)),
            SERVING_USAGES,
        )
        .await;
    assert!(broker.decide(&serving).await.approved);
    let other = format!("DNS:{},IP:203.0.113.99", p.node);
    let serving_other = broker
        .submit(
            kubelet,
            SERVING_SIGNER,
            &kubelet::request(&key, &node_subject(&p.node), Some(&other)),
            SERVING_USAGES,
        )
        .await;
    let decided = broker.decide(&serving_other).await;
    assert_eq!((decided.approved, decided.reason.as_str()), (false, "WorldLandWrongAltNames"));

    // One client certificate per provider.
    let second = broker
        .submit(
            bearer(&p.token).await,
            CLIENT_SIGNER,
            &kubelet::request(&kubelet::key(), &node_subject(&p.node), None),
            CLIENT_USAGES,
        )
        .await;
    let decided = broker.decide(&second).await;
    assert_eq!((decided.approved, decided.reason.as_str()), (false, "WorldLandAlreadyCertified"));
    let rec = broker.record(&p.provider_id).await;
    assert!(
        rec.csr_refusal.as_deref().is_some_and(|r| r.starts_with("already_certified")),
        "{rec:?}"
    );

    // The approved CSR's name, reused once it is gone (the controller manager cleans approved
    // CSRs up after an hour), buys nothing: not another node, nor a second certificate.
    let csrs: Api<CertificateSigningRequest> = Api::all(admin().await);
    for (subject, reason) in [
        (node_subject(&unique("control-plane")), "WorldLandWrongNodeName"),
        (node_subject(&p.node), "WorldLandAlreadyCertified"),
    ] {
        csrs.delete(&csr, &DeleteParams::default()).await.unwrap();
        until("the CSR is gone", 10, || async {
            csrs.get_opt(&csr).await.unwrap().is_none().then_some(())
        })
        .await;
        broker
            .submit_named(
                &csr,
                bearer(&p.token).await,
                CLIENT_SIGNER,
                &kubelet::request(&key, &subject, None),
                CLIENT_USAGES,
            )
            .await;
        let decided = broker.decide(&csr).await;
        assert_eq!((decided.approved, decided.reason.as_str()), (false, reason), "{subject}");
    }
    broker.clean_up().await;
}
