//! The join-token issuer against a strict Kubernetes API mock answering with the real 1.28
//! payloads: the exact Secret, the CA hash of the fixture cluster, sealed answers, retries that
//! never approve without a token, redeliveries that mint no second token, token ids that collide
//! with someone else's (a new id, never a Secret read back), and node names another provider
//! holds (refused before any token exists).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::messages::{ProviderState, ProviderValidated};
use worldland_core::provider::ProviderRecord;
use worldland_core::signature::SignaturePolicy;
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
        max_pending_per_wallet: 3,
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
    let api = ApiServerVerifier::run(handle, vec![get_cluster_info(), create_secret(&s.provider.provider_id, 201)]);
    let ctx = issuer(&s, client, None);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    let seen = api.finish(WAIT).await;
    let (token_id, token_secret) = token_from_secret_body(&seen[1].body);

    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, ProviderState::Approved);
    assert_eq!(rec.token_id.as_deref(), Some(token_id.as_str()));
    assert_eq!(rec.token_created.as_deref(), Some(token_id.as_str()), "the create is recorded");
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
    // The node name is the broker's: reserved for this provider, passed for --node-name.
    assert_eq!(answer.node_name.as_deref(), Some(rec.node_name.as_str()));
    assert_ne!(
        rec.node_name, s.provider.registration.spec.hostname,
        "assigned, not the claimed host name"
    );
    assert_eq!(
        worldland_core::provider::nodes::owner(s.store.as_ref(), &rec.node_name)
            .await
            .unwrap()
            .as_deref(),
        Some(s.provider.provider_id.as_str())
    );
    let join = join_from_response(answer, &s.provider.enc_secret).unwrap();
    assert_eq!(join.join_token, format!("{token_id}.{token_secret}"));
    assert_eq!(
        join.join_command,
        format!(
            "kubeadm join 127.0.0.1:6443 --token {token_id}.{token_secret} --discovery-token-ca-cert-hash {} --node-name {}",
            want_hash.trim(),
            rec.node_name
        )
    );
}

#[tokio::test]
async fn a_redelivered_message_mints_no_second_token() {
    let s = pending_provider(2, true).await;
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![get_cluster_info(), create_secret(&s.provider.provider_id, 201)]);
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
        vec![
            get_cluster_info(),
            Expect::new("POST", SECRETS_PATH, "&fieldManager=worldland", 500, server_error())
                .body(|b| check_bootstrap_secret(b, None).map(|_| ())),
        ],
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
        vec![
            get_cluster_info(),
            Expect::new(
                "POST",
                SECRETS_PATH,
                "&fieldManager=worldland",
                403,
                forbidden.response_body.clone(),
            )
            .body(|b| check_bootstrap_secret(b, None).map(|_| ())),
        ],
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

/// cluster-info is read before any token exists: when it fails, nothing is reserved or created,
/// and the retry creates the one token. An old agent (no `enc_pubkey`) gets the command in the
/// clear, with the operator's endpoint and its assigned node name.
#[tokio::test]
async fn a_retry_after_cluster_info_failed_creates_one_token_and_answers_an_old_agent_in_the_clear() {
    let s = pending_provider(4, false).await;
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![Expect::new("GET", CLUSTER_INFO_PATH, "", 500, server_error())]);
    assert!(matches!(
        Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, None), Utc::now()).await),
        Outcome::Retry(_)
    ));
    api.finish(WAIT).await;
    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rec.state, rec.token_id), (ProviderState::Pending, None));

    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![get_cluster_info(), create_secret(&s.provider.provider_id, 201)]);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, Some("https://api.worldland.example:443")), Utc::now()).await),
        Outcome::Done
    );
    let seen = api.finish(WAIT).await;
    let (token_id, token_secret) = token_from_secret_body(&seen[1].body);
    let rec = ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.state, rec.token_id.as_deref()),
        (ProviderState::Approved, Some(token_id.as_str()))
    );
    let answer = &s.replies.answers_for(&s.provider.provider_id)[0];
    assert_eq!(answer.join_token.as_deref(), Some(format!("{token_id}.{token_secret}").as_str()));
    let command = answer.join_command.as_deref().unwrap();
    assert!(command.starts_with("kubeadm join api.worldland.example:443 --token "), "{command}");
    assert!(command.ends_with(&format!(" --node-name {}", rec.node_name)), "{command}");
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

/// An API server where token ids may already be taken by other providers' Secrets: the next
/// `collide` creates meet 409 whatever id they name (that id is someone else's: its Secret, with
/// another provider's secret, is put in place), and a create of a name that exists meets 409
/// too. Reading a Secret back is recorded as a violation (the issuer may create Secrets, never
/// get them) and answered with that Secret's data — for a collided id, another provider's token:
/// exactly what an issuer that reads back would hand out.
#[derive(Clone, Default)]
struct TakenIdsApiServer {
    collide: Arc<std::sync::Mutex<u32>>,
    secrets: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Value>>>,
    /// Bodies of the creates answered 201, in order.
    created: Arc<std::sync::Mutex<Vec<Value>>>,
    /// Token ids whose create met 409 because someone else holds them.
    collided: Arc<std::sync::Mutex<Vec<String>>>,
    /// Token ids whose Secret the issuer deleted (that existed), in order.
    deleted: Arc<std::sync::Mutex<Vec<String>>>,
    violations: Arc<std::sync::Mutex<Vec<String>>>,
}

const OTHER_SECRET: &str = "0therprovider000";

impl TakenIdsApiServer {
    fn with_collisions(n: u32) -> Self {
        let me = Self::default();
        *me.collide.lock().unwrap() = n;
        me
    }

    fn spawn(&self, mut handle: worldland_tests::kube_mock::Handle) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (status, answer) = me.answer(parts.method.as_str(), parts.uri.path(), &body);
                send.send_response(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
            }
        })
    }

    fn violation(&self, why: String) -> (u16, Value) {
        self.violations.lock().unwrap().push(why);
        (500, server_error())
    }

    fn answer(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        match (method, path) {
            ("GET", CLUSTER_INFO_PATH) => {
                let fx = fixture("05-get-cluster-info.json");
                (fx.status, fx.response_body)
            }
            ("POST", SECRETS_PATH) => {
                let id = match check_bootstrap_secret(body, None) {
                    Ok(id) => id,
                    Err(why) => return self.violation(why),
                };
                let name = format!("bootstrap-token-{id}");
                let mut conflict = fixture("07-create-bootstrap-token-again.json").response_body;
                conflict["message"] = json!(format!("secrets \"{name}\" already exists"));
                conflict["details"]["name"] = json!(name);
                {
                    let mut collide = self.collide.lock().unwrap();
                    if *collide > 0 {
                        *collide -= 1;
                        self.collided.lock().unwrap().push(id.clone());
                        let mut theirs = fixture("06-create-bootstrap-token.json").response_body;
                        theirs["metadata"]["name"] = json!(name);
                        theirs["data"] = json!({
                            "token-id": b64(&id), "token-secret": b64(OTHER_SECRET),
                            "expiration": b64("2099-01-01T00:00:00Z"), "description": b64("another provider's join token"),
                            "usage-bootstrap-authentication": b64("true"), "usage-bootstrap-signing": b64("true"),
                            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token"),
                        });
                        self.secrets.lock().unwrap().insert(name, theirs);
                        return (409, conflict);
                    }
                }
                let mut secrets = self.secrets.lock().unwrap();
                if secrets.contains_key(&name) {
                    return (409, conflict);
                }
                let mut created = fixture("06-create-bootstrap-token.json").response_body;
                created["metadata"]["name"] = json!(name);
                created["data"] = body["data"].clone();
                secrets.insert(name, created.clone());
                self.created.lock().unwrap().push(body.clone());
                (201, created)
            }
            ("DELETE", p) if p.starts_with(&format!("{SECRETS_PATH}/bootstrap-token-")) => {
                let name = &p[SECRETS_PATH.len() + 1..];
                let id = name.trim_start_matches("bootstrap-token-").to_string();
                if self.collided.lock().unwrap().contains(&id) {
                    return self.violation(format!("the issuer deleted another provider's Secret {name}"));
                }
                match self.secrets.lock().unwrap().remove(name) {
                    Some(_) => {
                        self.deleted.lock().unwrap().push(id);
                        let mut done = fixture("11-delete-bootstrap-token.json").response_body;
                        done["details"]["name"] = json!(name);
                        (200, done)
                    }
                    None => (404, fixture("12-delete-bootstrap-token-again.json").response_body),
                }
            }
            ("GET", p) if p.starts_with(&format!("{SECRETS_PATH}/")) => {
                let name = &p[SECRETS_PATH.len() + 1..];
                self.violations.lock().unwrap().push(format!("the issuer read Secret {name} back"));
                match self.secrets.lock().unwrap().get(name) {
                    Some(s) => (200, s.clone()),
                    None => (404, fixture("12-delete-bootstrap-token-again.json").response_body),
                }
            }
            _ => self.violation(format!("unexpected call {method} {path}")),
        }
    }

    /// Ids of this broker's bootstrap-token Secrets that exist now (not another provider's).
    fn live_ids(&self) -> Vec<String> {
        let collided = self.collided.lock().unwrap().clone();
        self.secrets
            .lock()
            .unwrap()
            .keys()
            .map(|n| n.trim_start_matches("bootstrap-token-").to_string())
            .filter(|id| !collided.contains(id))
            .collect()
    }

    fn created_ids(&self) -> Vec<(String, String)> {
        self.created.lock().unwrap().iter().map(token_from_secret_body).collect()
    }

    fn assert_no_violations(&self) {
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "API server: {v:#?}");
    }
}

/// Answers that fail the first `fail` times (Redis down), then land in `inner`.
struct FlakyReplies {
    inner: Arc<MemoryReplies>,
    fail: std::sync::Mutex<u32>,
}

#[async_trait::async_trait]
impl worldland_core::replies::ProviderReplies for FlakyReplies {
    async fn reply(
        &self,
        provider_id: &str,
        response: &worldland_core::messages::ProviderResponse,
    ) -> Result<(), worldland_core::replies::ReplyError> {
        {
            let mut fail = self.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(worldland_core::replies::ReplyError {
                    provider_id: provider_id.into(),
                    source: "Redis is down".into(),
                });
            }
        }
        self.inner.reply(provider_id, response).await
    }

    async fn command(
        &self,
        provider_id: &str,
        command: &worldland_core::messages::jobs::MiningCommand,
    ) -> Result<(), worldland_core::replies::ReplyError> {
        self.inner.command(provider_id, command).await
    }
}

fn flaky_issuer(s: &Setup, client: kube::Client, fail: u32) -> join_token_issuer::Context {
    join_token_issuer::Context {
        replies: Arc::new(FlakyReplies {
            inner: s.replies.clone(),
            fail: std::sync::Mutex::new(fail),
        }),
        ..issuer(s, client, None)
    }
}

async fn record(s: &Setup) -> ProviderRecord {
    ProviderRecord::load(s.store.as_ref(), &s.provider.provider_id)
        .await
        .unwrap()
        .unwrap()
}

/// Point 6 of "zero trust on the wire": the 6-character token id just drawn is already another
/// provider's Secret. The create meets 409; the issuer must not take that for its own token and
/// read it back (handing another provider's token out): it draws a new id, reserves it in place
/// of the old one, creates it, and answers with that.
#[tokio::test]
async fn a_token_id_collision_on_create_draws_a_new_id_and_the_answer_carries_it() {
    let s = pending_provider(7, true).await;
    let api = TakenIdsApiServer::with_collisions(1);
    let (client, handle) = mock_client();
    let served = api.spawn(handle);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, None), Utc::now()).await),
        Outcome::Done
    );
    served.abort();
    api.assert_no_violations();
    let collided = api.collided.lock().unwrap().clone();
    let created = api.created_ids();
    assert_eq!((collided.len(), created.len()), (1, 1), "one collision, then one create");
    let (token_id, token_secret) = &created[0];
    assert_ne!(token_id, &collided[0], "a new id was drawn");

    let answers = s.replies.answers_for(&s.provider.provider_id);
    assert_eq!(answers.len(), 1);
    let join = join_from_response(&answers[0], &s.provider.enc_secret).unwrap();
    assert_eq!(
        join.join_token,
        format!("{token_id}.{token_secret}"),
        "the answer carries the new token"
    );
    assert!(!join.join_token.contains(OTHER_SECRET), "never the other provider's token");
    assert!(api.deleted.lock().unwrap().is_empty(), "another provider's Secret is left alone");
    assert_eq!(api.live_ids(), vec![token_id.clone()]);
    for id in [token_id, &collided[0]] {
        let owner = worldland_core::provider::tokens::owner(s.store.as_ref(), id).await.unwrap();
        assert_eq!(
            owner.as_deref(),
            Some(s.provider.provider_id.as_str()),
            "{id} reserved before its create"
        );
    }
    let rec = record(&s).await;
    assert_eq!(rec.state, ProviderState::Approved);
    assert_eq!(rec.token_id.as_deref(), Some(token_id.as_str()));
    assert_eq!(rec.token_created.as_deref(), Some(token_id.as_str()));
}

/// Several ids in a row taken: each 409 draws again, within the bound.
#[tokio::test]
async fn repeated_token_id_collisions_each_draw_a_new_id() {
    let s = pending_provider(10, false).await;
    let api = TakenIdsApiServer::with_collisions(3);
    let (client, handle) = mock_client();
    let served = api.spawn(handle);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, None), Utc::now()).await),
        Outcome::Done
    );
    served.abort();
    api.assert_no_violations();
    let created = api.created_ids();
    assert_eq!((api.collided.lock().unwrap().len(), created.len()), (3, 1));
    let answer = &s.replies.answers_for(&s.provider.provider_id)[0];
    assert_eq!(
        answer.join_token.as_deref(),
        Some(format!("{}.{}", created[0].0, created[0].1).as_str())
    );
}

/// The issuer created the token, then could not answer (Redis down): the redelivery answers
/// with that same token — from the sealed join it recorded — with no second create and no
/// Secret read back.
#[tokio::test]
async fn a_redelivery_after_the_token_was_created_reuses_it_without_reading_a_secret() {
    let s = pending_provider(8, true).await;
    let api = TakenIdsApiServer::default();
    let (client, handle) = mock_client();
    let served = api.spawn(handle);
    let ctx = flaky_issuer(&s, client, 1);
    assert!(matches!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Retry(_)
    ));
    let rec = record(&s).await;
    assert_eq!(rec.state, ProviderState::Pending, "not approved before it is answered");
    let created = api.created_ids();
    assert_eq!(created.len(), 1);
    let (token_id, token_secret) = &created[0];
    assert_eq!(rec.token_created.as_deref(), Some(token_id.as_str()));
    let stored = format!("{:?}", s.store.scan(Table::Providers).await.unwrap());
    assert!(
        !stored.contains(token_secret.as_str()),
        "only the sealed join is stored, never the token"
    );

    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    served.abort();
    api.assert_no_violations();
    assert_eq!(api.created_ids().len(), 1, "no second token");
    let answers = s.replies.answers_for(&s.provider.provider_id);
    assert_eq!(answers.len(), 1);
    let join = join_from_response(&answers[0], &s.provider.enc_secret).unwrap();
    assert_eq!(join.join_token, format!("{token_id}.{token_secret}"), "the same token");
    let rec = record(&s).await;
    assert_eq!(
        (rec.state, rec.token_id.as_deref()),
        (ProviderState::Approved, Some(token_id.as_str()))
    );
}

/// The same for an old agent (no `enc_pubkey`): the broker never stores a token in the clear,
/// so it cannot send the first one again; it replaces it with a new one (the first was never
/// sent to anyone) rather than reading it back.
#[tokio::test]
async fn an_old_agent_redelivered_after_its_token_was_created_gets_a_new_token_never_one_read_back() {
    let s = pending_provider(11, false).await;
    let api = TakenIdsApiServer::default();
    let (client, handle) = mock_client();
    let served = api.spawn(handle);
    let ctx = flaky_issuer(&s, client, 1);
    assert!(matches!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Retry(_)
    ));
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    served.abort();
    api.assert_no_violations();
    let created = api.created_ids();
    assert_eq!(created.len(), 2);
    assert_ne!(created[0].0, created[1].0);
    let answers = s.replies.answers_for(&s.provider.provider_id);
    assert_eq!(answers.len(), 1, "answered once: the first answer never left");
    assert_eq!(
        answers[0].join_token.as_deref(),
        Some(format!("{}.{}", created[1].0, created[1].1).as_str())
    );
    assert_eq!(record(&s).await.token_id.as_deref(), Some(created[1].0.as_str()));
}

/// A node belongs to one provider: when the node name assigned to this provider is already
/// reserved by another, the issuer refuses before any token exists (no Kubernetes call at all),
/// tells the provider why, and approves nothing.
#[tokio::test]
async fn a_provider_whose_node_name_another_provider_holds_is_refused_before_any_token() {
    let s = pending_provider(9, true).await;
    let node = record(&s).await.node_name;
    assert!(worldland_core::provider::nodes::reserve(&node, "another-provider", Utc::now())
        .apply(s.store.as_ref(), &worldland_core::provider::nodes::key(&node))
        .await
        .unwrap());
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![]);
    let out = Outcome::from(join_token_issuer::handle(&s.msg, &issuer(&s, client, None), Utc::now()).await);
    assert!(
        matches!(&out, Outcome::Rejected(r) if r.reason.code() == "node_name_taken"),
        "{out:?}"
    );
    api.finish(WAIT).await;
    let rec = record(&s).await;
    assert_eq!((rec.state, rec.token_id), (ProviderState::Pending, None));
    let answers = s.replies.answers_for(&s.provider.provider_id);
    assert_eq!(answers.len(), 1);
    assert!(!answers[0].success && answers[0].message.starts_with("node_name_taken"));
    assert!(!answers[0].message.contains("another-provider"), "the holder is not named");
    assert_eq!(
        worldland_core::provider::nodes::owner(s.store.as_ref(), &node)
            .await
            .unwrap()
            .as_deref(),
        Some("another-provider"),
        "the reservation is not taken over"
    );
}

/// An approved provider whose agent restarts before joining registers again: with the same key
/// it gets its one token again (the recorded sealed join: no create, no read); with another key
/// (or none) a new token replaces the old one, the provider stays approved and the index follows
/// the new expiry. Never a Secret read back.
#[tokio::test]
async fn an_approved_provider_registering_again_gets_a_token_without_a_secret_read() {
    let s = pending_provider(12, true).await;
    let api = TakenIdsApiServer::default();
    let (client, handle) = mock_client();
    let served = api.spawn(handle);
    let ctx = issuer(&s, client, None);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    let first = api.created_ids()[0].clone();

    let again = ProviderValidated {
        registration_id: "200-0".into(),
        ..s.msg.clone()
    };
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&again, &ctx, Utc::now()).await),
        Outcome::Done
    );
    assert_eq!(api.created_ids().len(), 1, "the same key: the same token");
    let answers = s.replies.answers_for(&s.provider.provider_id);
    let join = join_from_response(&answers[1], &s.provider.enc_secret).unwrap();
    assert_eq!(join.join_token, format!("{}.{}", first.0, first.1));

    let old_agent = ProviderValidated {
        registration_id: "300-0".into(),
        enc_pubkey: None,
        ..s.msg.clone()
    };
    let later = Utc::now() + chrono::Duration::minutes(10);
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&old_agent, &ctx, later).await),
        Outcome::Done
    );
    served.abort();
    api.assert_no_violations();
    let created = api.created_ids();
    assert_eq!(created.len(), 2);
    let answers = s.replies.answers_for(&s.provider.provider_id);
    assert_eq!(
        answers[2].join_token.as_deref(),
        Some(format!("{}.{}", created[1].0, created[1].1).as_str())
    );
    assert_eq!(
        *api.deleted.lock().unwrap(),
        vec![first.0.clone()],
        "the old token's Secret was deleted first"
    );
    assert_eq!(api.live_ids(), vec![created[1].0.clone()], "one live token");
    let rec = record(&s).await;
    assert_eq!(rec.state, ProviderState::Approved);
    assert_eq!(rec.token_id.as_deref(), Some(created[1].0.as_str()));
    assert_eq!(
        Some(rec.hb_at),
        rec.token_expires_at,
        "while approved the index holds the token's expiry"
    );
}

/// Every store write of the issue applies, loses its answer and is replayed by the SDK: the
/// issuer still reserves one token id, creates one Secret, approves the provider and answers
/// once (before, a replayed reservation read as someone else's, and the issue was retried or
/// refused).
#[tokio::test]
async fn every_store_answer_lost_still_issues_one_token() {
    let s = pending_provider(9, true).await;
    let faulty = Arc::new(worldland_tests::faulty_store::FaultyStore::new(s.store.clone()));
    faulty.lose_answers(1000);
    let (client, handle) = mock_client();
    let api = ApiServerVerifier::run(handle, vec![get_cluster_info(), create_secret(&s.provider.provider_id, 201)]);
    let mut ctx = issuer(&s, client, None);
    ctx.store = faulty.clone();
    assert_eq!(
        Outcome::from(join_token_issuer::handle(&s.msg, &ctx, Utc::now()).await),
        Outcome::Done
    );
    api.finish(WAIT).await;
    assert!(faulty.replayed() > 0);
    assert_eq!(record(&s).await.state, ProviderState::Approved);
    assert_eq!(s.replies.answers_for(&s.provider.provider_id).len(), 1);
}
