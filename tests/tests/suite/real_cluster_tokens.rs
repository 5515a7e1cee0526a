//! Join tokens are bounded, on the real control plane `scripts/test` starts from
//! `KUBEBUILDER_ASSETS`: the real registration handler and issuer (in-memory store) create and
//! delete real bootstrap-token Secrets, which are listed back as the admin. Both attacks worked
//! before the bound: a provider registering again and again held a live token per registration
//! it could not be re-sent, and one wallet could hold a live token for every machine it
//! registered without joining. Other tests share the control plane, so only the Secrets whose
//! description names this test's providers are counted, and they are deleted at the end.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::messages::ProviderState;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::real_cluster::{admin, bearer, unique, until};
use worldland_tests::Outcome;

use super::token_bounds::{provider, Broker};

/// Provider `n` with a fresh id of its own (of `wallet_of`'s wallet when given).
fn fresh(n: usize, wallet_of: Option<&SimulatedProvider>) -> SimulatedProvider {
    let mut p = provider(n, wallet_of, chrono::Utc::now());
    p.provider_id = unique("tokens");
    p.registration.provider_id = p.provider_id.clone();
    p
}

async fn real_broker() -> Broker {
    Broker::new(Arc::new(MemoryStore::new()), Arc::new(KubeCluster::new(admin().await)))
}

/// The ids of the bootstrap-token Secrets in kube-system whose description names `provider_id`
/// (the issuer's "WorldLand join token for provider <id>"), as the admin lists them.
async fn live_tokens_of(provider_id: &str) -> Vec<String> {
    let secrets: Api<Secret> = Api::namespaced(admin().await, "kube-system");
    let listed = secrets
        .list(&ListParams::default().fields("type=bootstrap.kubernetes.io/token"))
        .await
        .unwrap();
    let field = |s: &Secret, k: &str| {
        let v = s.data.as_ref()?.get(k)?;
        String::from_utf8(v.0.clone()).ok()
    };
    let names = format!("provider {provider_id}");
    listed
        .items
        .iter()
        .filter(|s| field(s, "description").is_some_and(|d| d.ends_with(&names)))
        .filter_map(|s| field(s, "token-id"))
        .collect()
}

async fn delete_all(broker: &Broker, providers: &[&SimulatedProvider]) {
    for p in providers {
        for id in live_tokens_of(&p.provider_id).await {
            broker.cluster.delete_bootstrap_token(&id).await.unwrap();
        }
    }
}

/// Attack 1: one provider registers again and again — the same key, an old agent's registration
/// without `enc_pubkey`, a new key — and holds exactly one live bootstrap-token Secret after
/// each, the one its record names; a replaced token is refused by the API server.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_provider_registering_again_and_again_holds_one_live_token_on_a_real_cluster() {
    let broker = real_broker().await;
    let mut p = fresh(1, None);
    let now = chrono::Utc::now();
    let mut first_token = None;
    for round in 1..=7 {
        match round % 3 {
            0 => p.registration.enc_pubkey = None,
            1 => {}
            _ => {
                let (secret, public) = worldland_core::sealed::new_enc_keypair();
                p.enc_secret = secret;
                p.registration.enc_pubkey = Some(public);
            }
        }
        let out = broker.register_and_issue(&mut p, &format!("{round}-0"), now).await;
        assert_eq!(out, Outcome::Done, "round {round}");
        let rec = broker.record(&p).await;
        assert_eq!(rec.state, ProviderState::Approved);
        let live = live_tokens_of(&p.provider_id).await;
        assert_eq!(
            live,
            vec![rec.token_id.clone().unwrap()],
            "round {round}: one live token, the recorded one"
        );
        if round == 1 {
            let answer = broker.replies.answers_for(&p.provider_id).pop().unwrap();
            let join = worldland_provider_sdk::client::join_from_response(&answer, &p.enc_secret).unwrap();
            // A credential the API server takes (it learns of a new Secret a moment later).
            let reviews: Api<SelfSubjectReview> = Api::all(bearer(&join.join_token).await);
            until("the first token authenticates", 10, || async {
                reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await.ok()
            })
            .await;
            first_token = Some((live[0].clone(), reviews));
        }
    }
    // The first token, replaced since, no longer opens a TLS bootstrap (once the API server's
    // 10 s cache of its last success has run out).
    let (first_id, reviews) = first_token.unwrap();
    assert!(!live_tokens_of(&p.provider_id).await.contains(&first_id));
    until("the replaced token is refused", 30, || async {
        let refused = reviews.create(&PostParams::default(), &SelfSubjectReview::default()).await;
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 401).then_some(())
    })
    .await;
    delete_all(&broker, &[&p]).await;
}

/// Attack 2: one wallet registers four machines that never join. Three get a token; the fourth
/// is refused with `too_many_pending_joins`, and no Secret exists for it.
#[tokio::test]
#[ignore = "needs a real control plane: scripts/test starts one from KUBEBUILDER_ASSETS and runs these"]
async fn a_wallets_fourth_unjoined_provider_gets_no_token_on_a_real_cluster() {
    let broker = real_broker().await;
    let now = chrono::Utc::now();
    let owner = fresh(10, None);
    let mut ps: Vec<_> = (10..14).map(|n| fresh(n, Some(&owner))).collect();
    for (i, p) in ps.iter_mut().take(3).enumerate() {
        assert_eq!(broker.register_and_issue(p, &format!("{}-0", i + 1), now).await, Outcome::Done);
    }
    let out = broker.register_and_issue(&mut ps[3], "4-0", now).await;
    assert!(
        matches!(&out, Outcome::Rejected(r) if r.reason.code() == "too_many_pending_joins"),
        "{out:?}"
    );
    let answer = broker.replies.answers_for(&ps[3].provider_id).pop().unwrap();
    assert!(
        !answer.success && answer.message.starts_with("too_many_pending_joins"),
        "{answer:?}"
    );
    assert!(live_tokens_of(&ps[3].provider_id).await.is_empty(), "no Secret for the fourth");
    for p in &ps[..3] {
        assert_eq!(live_tokens_of(&p.provider_id).await.len(), 1, "{}", p.provider_id);
    }
    // Registering again and again changes nothing.
    for round in 5..8 {
        let out = broker.register_and_issue(&mut ps[3], &format!("{round}-0"), now).await;
        assert!(matches!(&out, Outcome::Rejected(_)), "{out:?}");
    }
    assert!(live_tokens_of(&ps[3].provider_id).await.is_empty());
    delete_all(&broker, &ps.iter().collect::<Vec<_>>()).await;
}
