//! The broker's CSR approver on the real control plane (`scripts/control_plane.sh`, configured as
//! kubeadm configures a cluster, its auto-approval of `system:bootstrappers:kubeadm:default-node-token`
//! included). Providers are registered and issued their tokens by the real registration handler
//! and join-token issuer; the tests play each kubelet through the API: an openssl key and request,
//! the CSR created as the bearer of the join token, the certificate used as the kubelet's
//! credential. Before this approver (tokens in kubeadm's group, no decision of the broker's), the
//! controller manager approved every one of these requests, the attacks included.
//!
//! The approver decides every kubelet CSR in the cluster, so these tests run one at a time
//! (nextest group `kubelet-csrs`, and a lock for `cargo test`), each deleting what it created.

use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::certificates::{CLIENT_SIGNER, SERVING_SIGNER};
use worldland_core::cluster::bootstrap::TOKEN_NAMESPACE;
use worldland_core::cluster::{BootstrapToken, Cluster};
use worldland_core::labels::PROVIDER_TAINT;
use worldland_core::messages::ProviderValidated;
use worldland_core::provider::{tokens, ProviderRecord};
use worldland_core::signature::SignaturePolicy;
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::client::join_from_response;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::faulty_cluster::FaultyCluster;
use worldland_tests::kubelet::{self, Decided};
use worldland_tests::real_cluster::{admin, as_worker, bearer, unique, until, with_certificate};
use worldland_tests::{validated_sink, Outcome};

const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];
const SERVING_USAGES: &[&str] = &["digital signature", "server auth"];

/// One CSR test at a time within a process (nextest runs each in its own, in one group).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker's half: one store, the real handlers, the approver, all on the real cluster.
struct Broker {
    store: Arc<MemoryStore>,
    replies: Arc<MemoryReplies>,
    cluster: Arc<KubeCluster>,
    approver: csr_approver::Context,
    /// Names to delete at the end: CSRs, Nodes, token ids.
    csrs: std::sync::Mutex<Vec<String>>,
    nodes: std::sync::Mutex<Vec<String>>,
    tokens: std::sync::Mutex<Vec<String>>,
}

/// A provider approved by the broker: its node name and join token.
struct Joiner {
    provider_id: String,
    node: String,
    public_ip: String,
    token: String,
}

impl Broker {
    async fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        // Each worker as its own ServiceAccount: the shipped RBAC and admission policies apply.
        let cluster = Arc::new(KubeCluster::new(as_worker("join-token-issuer").await));
        let approving = Arc::new(KubeCluster::new(as_worker("csr-approver").await));
        Self {
            approver: csr_approver::Context {
                store: store.clone(),
                cluster: approving,
            },
            store,
            replies: Arc::new(MemoryReplies::default()),
            cluster,
            csrs: Default::default(),
            nodes: Default::default(),
            tokens: Default::default(),
        }
    }

    /// A provider (its own wallet) registered and issued its join token by the real handlers.
    async fn approved_provider(&self) -> Joiner {
        let now = Utc::now();
        let mut p = SimulatedProvider::new(7, now);
        p.provider_id = unique("rc");
        p.registration.provider_id = p.provider_id.clone();
        p.registration.spec.hostname = unique("host");
        let handler = registration_handler::Context {
            store: self.store.clone(),
            bus: validated_sink(),
            replies: self.replies.clone(),
            policy: ValidationPolicy::default(),
            signatures: SignaturePolicy::Required,
        };
        let env = p.envelope("provider:registration", "100-0");
        assert_eq!(
            Outcome::from(registration_handler::handle(&env, &handler, now).await),
            Outcome::Done
        );
        let issuer = join_token_issuer::Context {
            store: self.store.clone(),
            cluster: self.cluster.clone(),
            replies: self.replies.clone(),
            token_ttl: chrono::Duration::minutes(30),
            api_endpoint: None,
            max_pending_per_wallet: 3,
        };
        let msg = ProviderValidated {
            provider_id: p.provider_id.clone(),
            registration_id: "100-0".into(),
            enc_pubkey: p.registration.enc_pubkey.clone(),
        };
        join_token_issuer::handle(&msg, &issuer, now).await.expect("approved");
        let answer = self.replies.answers_for(&p.provider_id).pop().expect("an answer");
        let join = join_from_response(&answer, &p.enc_secret).expect("a sealed join");
        let token_id = join.join_token.split('.').next().unwrap().to_string();
        assert_eq!(
            tokens::owner(self.store.as_ref(), &token_id).await.unwrap().as_deref(),
            Some(p.provider_id.as_str()),
            "the issuer reserved the token id for its provider"
        );
        self.tokens.lock().unwrap().push(token_id);
        let node = answer.node_name.expect("the node name");
        self.nodes.lock().unwrap().push(node.clone());
        Joiner {
            provider_id: p.provider_id,
            node,
            public_ip: p.registration.spec.public_ip,
            token: join.join_token,
        }
    }

    async fn record(&self, provider_id: &str) -> ProviderRecord {
        ProviderRecord::load(self.store.as_ref(), provider_id).await.unwrap().unwrap()
    }

    /// Submits a CSR as `client` (a bearer the API server may take a moment to accept).
    async fn submit(&self, client: kube::Client, signer: &str, request: &str, usages: &[&str]) -> String {
        self.submit_named(&unique("csr"), client, signer, request, usages).await
    }

    async fn submit_named(&self, name: &str, client: kube::Client, signer: &str, request: &str, usages: &[&str]) -> String {
        let name = name.to_string();
        self.csrs.lock().unwrap().push(name.clone());
        until("the CSR is accepted", 15, || async {
            kubelet::submit(client.clone(), &name, signer, request, usages).await.ok()
        })
        .await;
        name
    }

    /// One approver pass, then the CSR's decision.
    async fn decide(&self, csr: &str) -> Decided {
        csr_approver::approve_pending(&self.approver, Utc::now()).await.expect("a pass");
        kubelet::decision(admin().await, csr, 10).await
    }

    async fn clean_up(&self) {
        let client = admin().await;
        let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
        let nodes: Api<Node> = Api::all(client);
        let csr_names = self.csrs.lock().unwrap().clone();
        let node_names = self.nodes.lock().unwrap().clone();
        let token_ids = self.tokens.lock().unwrap().clone();
        for name in csr_names {
            let _ = csrs.delete(&name, &DeleteParams::default()).await;
        }
        for name in node_names {
            let _ = nodes.delete(&name, &DeleteParams::default()).await;
        }
        let admin_cluster = KubeCluster::new(admin().await);
        for id in token_ids {
            let _ = admin_cluster.delete_bootstrap_token(&id).await;
        }
    }
}

fn node_subject(node: &str) -> String {
    format!("/O=system:nodes/CN=system:node:{node}")
}

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
    let csr = broker
        .submit(
            bearer(&p.token).await,
            CLIENT_SIGNER,
            &kubelet::request(&key, &node_subject(&p.node), None),
            CLIENT_USAGES,
        )
        .await;
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

/// The approval is recorded on the provider before it is written to the cluster: when the write
/// fails (or its answer is lost) the next pass recognises its own record and approves the same
/// CSR, and the Node made the first time is found, not made twice.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn an_approval_whose_write_failed_is_written_by_the_next_pass() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let p = broker.approved_provider().await;
    let key = kubelet::key();
    let csr = broker
        .submit(
            bearer(&p.token).await,
            CLIENT_SIGNER,
            &kubelet::request(&key, &node_subject(&p.node), None),
            CLIENT_USAGES,
        )
        .await;
    let failing = csr_approver::Context {
        store: broker.store.clone(),
        cluster: Arc::new(FaultyCluster::new(broker.approver.cluster.clone()).failing_decisions()),
    };
    let report = csr_approver::approve_pending(&failing, Utc::now()).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(kubelet::undecided(admin().await, &csr).await);
    assert_eq!(broker.record(&p.provider_id).await.client_csr.as_deref(), Some(csr.as_str()));
    assert!(broker.decide(&csr).await.approved, "the next pass approves the recorded CSR");
    kubelet::certificate(admin().await, &csr, 30).await;
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

/// In a container the approver follows CSRs with a watch: a request is decided well within its
/// 30 s resync (and within kubeadm's five-minute wait for the TLS bootstrap), with no pass called
/// by the test; it stops on shutdown.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn the_container_approver_decides_a_new_request_through_its_watch() {
    use worldland_runtime::worker::Service;
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = Broker::new().await;
    let p = broker.approved_provider().await;
    let service = csr_approver::CsrApprover {
        ctx: Arc::new(csr_approver::Context {
            store: broker.store.clone(),
            cluster: broker.approver.cluster.clone(),
        }),
    };
    let (stop, rx) = tokio::sync::broadcast::channel(1);
    let running = tokio::spawn(async move { service.run(rx).await });
    let key = kubelet::key();
    let csr = broker
        .submit(
            bearer(&p.token).await,
            CLIENT_SIGNER,
            &kubelet::request(&key, &node_subject(&p.node), None),
            CLIENT_USAGES,
        )
        .await;
    let decided = kubelet::decision(admin().await, &csr, 10).await;
    assert!(decided.approved, "{decided:?}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), running)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    broker.clean_up().await;
}
