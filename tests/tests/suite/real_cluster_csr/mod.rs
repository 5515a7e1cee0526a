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
//!
//! What each submodule proves:
//! - [`honest`]: a provider's kubelet gets a client certificate for its own node, finds its Node
//!   tainted, and gets a serving certificate for its own name and address; nothing more.
//! - [`attacks`]: another wallet's token, a token the broker did not issue, and a token in
//!   kubeadm's group (why the broker's tokens left it).
//! - [`faults`]: an approval whose write to the cluster failed is written by the next pass.
//! - [`container`]: the approver's service decides a new request through its watch.
//!
//! This module holds the harness: the [`Broker`] (the real handlers and the approver on one
//! store), the [`Joiner`] it approves, and the lock that keeps these tests one at a time.

use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::certificates::CLIENT_SIGNER;
use worldland_core::cluster::Cluster;
use worldland_core::messages::ProviderValidated;
use worldland_core::provider::{tokens, ProviderRecord};
use worldland_core::signature::SignaturePolicy;
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::client::join_from_response;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::kubelet::{self, Decided};
use worldland_tests::real_cluster::{admin, as_worker, bearer, unique, until};
use worldland_tests::{validated_sink, Outcome};

mod attacks;
mod container;
mod faults;
mod honest;

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
    /// The CSR an honest kubelet of `p` makes with its join token: its own node name, `key`.
    async fn submit_own(&self, p: &Joiner, key: &str) -> String {
        let request = kubelet::request(key, &node_subject(&p.node), None);
        self.submit(bearer(&p.token).await, CLIENT_SIGNER, &request, CLIENT_USAGES).await
    }

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
