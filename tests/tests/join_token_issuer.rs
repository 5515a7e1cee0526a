//! The join-token issuer against a strict Kubernetes API mock answering with the real 1.28
//! payloads: the exact Secret, the CA hash of the fixture cluster, sealed answers, retries that
//! never approve without a token, and redeliveries that mint no second token.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::messages::{ProviderState, ProviderValidated};
use worldland_core::signature::SignaturePolicy;
use worldland_core::state::providers::ProviderRecord;
use worldland_core::state::{ItemStore, Table};
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::client::join_from_response;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::validated_sink;
use worldland_tests::Outcome;

use worldland_tests::kube_mock::{
    check_bootstrap_secret, fixture, fixtures_dir, mock_client, ApiServerVerifier, Expect, CLUSTER_INFO_PATH, SECRETS_PATH,
};

const WAIT: Duration = Duration::from_secs(5);

struct Setup {
    provider: SimulatedProvider,
    store: Arc<MemoryStore>,
    replies: Arc<MemoryReplies>,
    msg: ProviderValidated,
}

/// A provider registered (pending) through the real registration handler.
async fn pending_provider(n: usize, sealed: bool) -> Setup {
    let now = Utc::now();
    let mut provider = SimulatedProvider::new(n, now);
    if !sealed {
        provider.registration.enc_pubkey = None;
    }
    let store = Arc::new(MemoryStore::new());
    let replies = Arc::new(MemoryReplies::default());
    let ctx = registration_handler::Context {
        store: store.clone(),
        bus: validated_sink(),
        replies: replies.clone(),
        policy: ValidationPolicy::default(),
        signatures: SignaturePolicy::Required,
    };
    let env = provider.envelope("provider:registration", "100-0");
    assert_eq!(Outcome::from(registration_handler::handle(&env, &ctx, now).await), Outcome::Done);
    let msg = ProviderValidated {
        provider_id: provider.provider_id.clone(),
        registration_id: "100-0".into(),
        enc_pubkey: provider.registration.enc_pubkey.clone(),
    };
    Setup {
        provider,
        store,
        replies,
        msg,
    }
}

fn issuer(s: &Setup, client: kube::Client, api_endpoint: Option<&str>) -> join_token_issuer::Context {
    join_token_issuer::Context {
        store: s.store.clone(),
        cluster: Arc::new(KubeCluster::new(client)),
        replies: s.replies.clone(),
        token_ttl: chrono::Duration::hours(1),
        api_endpoint: api_endpoint.map(str::to_string),
    }
}

fn create_secret(provider_id: &str, status: u16) -> Expect {
    let pid = provider_id.to_string();
    let created = fixture("06-create-bootstrap-token.json").response_body;
    Expect::new("POST", SECRETS_PATH, "&fieldManager=worldland", status, created)
        .body(move |b| check_bootstrap_secret(b, Some(&pid)).map(|_| ()))
}

fn get_cluster_info() -> Expect {
    let fx = fixture("05-get-cluster-info.json");
    Expect::new("GET", CLUSTER_INFO_PATH, "", fx.status, fx.response_body)
}

fn server_error() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})
}

fn token_from_secret_body(body: &Value) -> (String, String) {
    let d = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    (d("token-id"), d("token-secret"))
}

#[tokio::test]
async fn issues_the_exact_bootstrap_secret_and_answers_with_a_sealed_join_command() {
    let s = pending_provider(1, true).await;
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![create_secret(&s.provider.provider_id, 201), get_cluster_info()]);
    let ctx = issuer(&s, client, None);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    let seen = api.finish(WAIT).await;
    let (token_id, token_secret) = token_from_secret_body(&seen[0].body);

    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, ProviderState::Approved);
    assert_eq!(rec.token_id.as_deref(), Some(token_id.as_str()));
    let exp = rec.token_expires_at.unwrap() - Utc::now();
    assert!(exp > chrono::Duration::minutes(59) && exp <= chrono::Duration::hours(1));
    // The token secret is never stored.
    let stored = format!("{:?}", s.store.scan(Table::Providers).await.unwrap());
    assert!(!stored.contains(&token_secret));

    let answers = s.replies.answers_for(&s.provider.provider_id);
    assert_eq!(answers.len(), 1);
    let answer = &answers[0];
    let want_hash = std::fs::read_to_string(format!("{}/ca-hash.txt", fixtures_dir())).unwrap();
    assert_eq!(answer.ca_hash.as_deref(), Some(want_hash.trim()));
    assert_eq!((answer.master_ip.as_deref(), answer.master_port), (Some("127.0.0.1"), Some(6443)));
    assert!(
        answer.join_token.is_none() && answer.join_command.is_none(),
        "the token travels only sealed"
    );
    let plain = serde_json::to_string(answer).unwrap();
    assert!(!plain.contains(&token_secret));
    assert_eq!(answer.labels.as_ref().unwrap()["worldland.io/provider-id"], s.provider.provider_id);
    let join = join_from_response(answer, &s.provider.enc_secret).unwrap();
    assert_eq!(join.join_token, format!("{token_id}.{token_secret}"));
    assert_eq!(
        join.join_command,
        format!(
            "kubeadm join 127.0.0.1:6443 --token {token_id}.{token_secret} --discovery-token-ca-cert-hash {}",
            want_hash.trim()
        )
    );
}

#[tokio::test]
async fn a_redelivered_message_mints_no_second_token() {
    let s = pending_provider(2, true).await;
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![create_secret(&s.provider.provider_id, 201), get_cluster_info()]);
    let ctx = issuer(&s, client, None);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    let before = s.store.scan(Table::Providers).await.unwrap();
    // Delivered again: no Kubernetes call at all (the verifier would flag one), nothing changes.
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    api.finish(WAIT).await;
    assert_eq!(s.store.scan(Table::Providers).await.unwrap(), before);
    assert_eq!(s.replies.answers_for(&s.provider.provider_id).len(), 1);
}

#[tokio::test]
async fn a_kubernetes_failure_is_retried_and_never_approves_without_a_token() {
    let s = pending_provider(3, true).await;
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(
        handle,
        vec![Expect::new("POST", SECRETS_PATH, "&fieldManager=worldland", 500, server_error())
            .body(|b| check_bootstrap_secret(b, None).map(|_| ()))],
    );
    let ctx = issuer(&s, client, None);
    assert!(matches!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Retry(_)
    ));
    api.finish(WAIT).await;
    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, ProviderState::Pending);
    assert!(s.replies.answers_for(&s.provider.provider_id).is_empty());
}

/// A 403 from the API server (the recorded RBAC refusal) is refused with its own reason at once,
/// not retried until the queue's delivery limit: retrying cannot grant a permission.
#[tokio::test]
async fn a_forbidden_kubernetes_call_is_refused_not_retried() {
    let s = pending_provider(6, false).await;
    let forbidden = fixture("10-list-nodes-as-bootstrap-token-forbidden.json");
    assert_eq!(forbidden.status, 403);
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(
        handle,
        vec![Expect::new(
            "POST",
            SECRETS_PATH,
            "&fieldManager=worldland",
            403,
            forbidden.response_body.clone(),
        )
        .body(|b| check_bootstrap_secret(b, None).map(|_| ()))],
    );
    let out = Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, None), Utc::now()).await);
    assert!(
        matches!(&out, Outcome::Rejected(r) if r.reason.code() == "cluster_forbidden"),
        "{out:?}"
    );
    api.finish(WAIT).await;
    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, ProviderState::Pending, "nothing approved without a token");
}

#[tokio::test]
async fn a_retry_after_the_secret_was_created_reuses_that_token() {
    let s = pending_provider(4, false).await;
    // First delivery: the Secret is created, then cluster-info fails (the worker gives up).
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(
        handle,
        vec![
            create_secret(&s.provider.provider_id, 201),
            Expect::new("GET", CLUSTER_INFO_PATH, "", 500, server_error()),
        ],
    );
    assert!(matches!(
        Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, None), Utc::now()).await),
        Outcome::Retry(_)
    ));
    let first = api.finish(WAIT).await;
    let (token_id, token_secret) = token_from_secret_body(&first[0].body);
    assert_eq!(
        ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ProviderState::Pending
    );

    // Redelivery: the same token id is created again (409), read back, and used.
    let same_id = token_id.clone();
    let mut existing = fixture("06-create-bootstrap-token.json").response_body;
    existing["metadata"]["name"] = json!(format!("bootstrap-token-{token_id}"));
    existing["data"] = first[0].body["data"].clone();
    let mut conflict = fixture("07-create-bootstrap-token-again.json").response_body;
    conflict["details"]["name"] = json!(format!("bootstrap-token-{token_id}"));
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(
        handle,
        vec![
            Expect::new("POST", SECRETS_PATH, "&fieldManager=worldland", 409, conflict).body(move |b| {
                let id = check_bootstrap_secret(b, None)?;
                (id == same_id).then_some(()).ok_or(format!("a second token id {id}"))
            }),
            Expect::new("GET", format!("{SECRETS_PATH}/bootstrap-token-{token_id}"), "", 200, existing),
            get_cluster_info(),
        ],
    );
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, Some("https://api.worldland.example:443")), Utc::now()).await),
        Outcome::Done
    );
    api.finish(WAIT).await;
    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.state, rec.token_id.as_deref()),
        (ProviderState::Approved, Some(token_id.as_str()))
    );
    // An old agent (no enc_pubkey) gets the command in the clear, with the operator's endpoint.
    let answer = &s.replies.answers_for(&s.provider.provider_id)[0];
    assert_eq!(answer.join_token.as_deref(), Some(format!("{token_id}.{token_secret}").as_str()));
    assert!(answer
        .join_command
        .as_deref()
        .unwrap()
        .starts_with("kubeadm join api.worldland.example:443 --token "));
}

#[tokio::test]
async fn an_unknown_provider_is_refused_without_a_kubernetes_call() {
    let s = pending_provider(5, true).await;
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![]);
    let msg = ProviderValidated {
        provider_id: "nobody".into(),
        registration_id: "1-0".into(),
        enc_pubkey: None,
    };
    assert!(
        matches!(Outcome::from(join_token_issuer::handle(&msg, &issuer(&s, client, None), Utc::now()).await), Outcome::Rejected(r) if r.reason.code() == "unknown_provider")
    );
    api.finish(WAIT).await;
}
