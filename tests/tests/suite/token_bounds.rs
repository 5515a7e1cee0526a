//! Join tokens are bounded: one live token per provider (a replacement deletes the old Secret
//! first), each token id reserved for its provider (`token#<id>`) before its Secret exists, and
//! at most three providers of one wallet holding a live token without having joined — under
//! lost answers (a redo never counts twice, a lost create leaves no second Secret) and under
//! concurrency (two registrations racing for a wallet's last slot, on dynalite). The real
//! registration handler, issuer and recorder, on the in-memory store (or dynalite) with the
//! simulated cluster.

use std::sync::Arc;
use worldland_tests::faulty_cluster::FaultyCluster;

use chrono::{DateTime, Duration, Utc};
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::Cluster;
use worldland_core::messages::{ProviderState, ProviderValidated};
use worldland_core::provider::{tokens, wallets, ProviderRecord};
use worldland_core::signature::SignaturePolicy;
use worldland_core::state::{ItemStore, Table};
use worldland_core::validation::ValidationPolicy;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::faulty_store::{Fault, FaultyStore};
use worldland_tests::lifecycle::{heartbeat, node_for, recorder};
use worldland_tests::{validated_sink, Outcome, TestEnv};

const LIMIT: usize = 3;

/// Provider `n`, of `wallet_of`'s wallet when given (else of its own).
pub fn provider(n: usize, wallet_of: Option<&SimulatedProvider>, now: DateTime<Utc>) -> SimulatedProvider {
    let mut p = SimulatedProvider::new(n, now);
    if let Some(w) = wallet_of {
        p.key = w.key.clone();
        p.registration.wallet_addr = w.registration.wallet_addr.clone();
    }
    p
}

/// The broker's registration handler and issuer over one store and cluster.
pub struct Broker {
    pub store: Arc<dyn ItemStore>,
    pub cluster: Arc<dyn Cluster>,
    pub replies: Arc<MemoryReplies>,
}

impl Broker {
    pub fn new(store: Arc<dyn ItemStore>, cluster: Arc<dyn Cluster>) -> Self {
        Self {
            store,
            cluster,
            replies: Arc::new(MemoryReplies::default()),
        }
    }

    pub fn issuer(&self) -> join_token_issuer::Context {
        join_token_issuer::Context {
            store: self.store.clone(),
            cluster: self.cluster.clone(),
            replies: self.replies.clone(),
            token_ttl: Duration::hours(1),
            max_pending_per_wallet: LIMIT,
            api_endpoint: None,
        }
    }

    /// `p`'s registration as stream entry `entry` through the real registration handler.
    pub async fn register(&self, p: &mut SimulatedProvider, entry: &str, now: DateTime<Utc>) -> ProviderValidated {
        p.registration.timestamp = Some(now);
        let ctx = registration_handler::Context {
            store: self.store.clone(),
            bus: validated_sink(),
            replies: self.replies.clone(),
            policy: ValidationPolicy::default(),
            signatures: SignaturePolicy::Required,
        };
        let env = p.envelope("provider:registration", entry);
        assert_eq!(Outcome::from(registration_handler::handle(&env, &ctx, now).await), Outcome::Done);
        ProviderValidated {
            provider_id: p.provider_id.clone(),
            registration_id: entry.into(),
            enc_pubkey: p.registration.enc_pubkey.clone(),
        }
    }

    pub async fn issue(&self, msg: &ProviderValidated, now: DateTime<Utc>) -> Outcome {
        Outcome::from(join_token_issuer::handle(msg, &self.issuer(), now).await)
    }

    /// Registers `p` and issues its token.
    pub async fn register_and_issue(&self, p: &mut SimulatedProvider, entry: &str, now: DateTime<Utc>) -> Outcome {
        let msg = self.register(p, entry, now).await;
        self.issue(&msg, now).await
    }

    pub async fn record(&self, p: &SimulatedProvider) -> ProviderRecord {
        ProviderRecord::load(self.store.as_ref(), &p.provider_id).await.unwrap().unwrap()
    }
}

fn refused_for_the_wallet(out: &Outcome) -> bool {
    matches!(out, Outcome::Rejected(r) if r.reason.code() == "too_many_pending_joins")
}

fn memory_broker() -> (Broker, Arc<SimulatedCluster>) {
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    (Broker::new(Arc::new(MemoryStore::new()), cluster.clone()), cluster)
}

/// A wallet's fourth unjoined provider is refused with the reason — answered, no token created,
/// left pending — until one of the three joins; then, once the others' tokens have run out, the
/// wallet has room again without any sweep.
#[tokio::test]
async fn a_wallets_fourth_pending_join_is_refused_until_one_joins_or_expires() {
    let now = Utc::now();
    let (broker, cluster) = memory_broker();
    let first = provider(100, None, now);
    let mut ps: Vec<_> = (100..105).map(|n| provider(n, Some(&first), now)).collect();
    for (i, p) in ps.iter_mut().take(3).enumerate() {
        assert_eq!(broker.register_and_issue(p, &format!("{}-0", i + 1), now).await, Outcome::Done);
    }
    assert_eq!(cluster.token_count(), 3);

    let out = broker.register_and_issue(&mut ps[3], "4-0", now).await;
    assert!(refused_for_the_wallet(&out), "{out:?}");
    assert_eq!(cluster.token_count(), 3, "no token for the fourth");
    let rec = broker.record(&ps[3]).await;
    assert_eq!((rec.state, rec.token_id), (ProviderState::Pending, None));
    let answer = &broker.replies.answers_for(&ps[3].provider_id)[0];
    assert!(
        !answer.success && answer.message.starts_with("too_many_pending_joins"),
        "{answer:?}"
    );
    assert!(!answer.message.contains(&ps[0].provider_id), "the others are not named");

    // The first one joins (its first heartbeat from its Ready node): its slot is free.
    cluster.add_node(node_for(&ps[0], true));
    let joined = heartbeat_recorder::handle(&heartbeat(&ps[0], now, 0), &recorder(broker.store.clone(), cluster.clone()), now).await;
    assert_eq!(Outcome::from(joined), Outcome::Done);
    assert_eq!(broker.record(&ps[0]).await.state, ProviderState::Available);
    assert_eq!(broker.register_and_issue(&mut ps[3], "5-0", now).await, Outcome::Done);
    assert_eq!(broker.record(&ps[3]).await.state, ProviderState::Approved);
    let out = broker.register_and_issue(&mut ps[4], "6-0", now).await;
    assert!(refused_for_the_wallet(&out), "full again: {out:?}");

    // An hour later every unjoined token has run out: room again, with no sweep in between.
    let later = now + Duration::minutes(61);
    assert_eq!(broker.register_and_issue(&mut ps[4], "7-0", later).await, Outcome::Done);
    let other_wallet = &mut provider(200, None, now);
    assert_eq!(
        broker.register_and_issue(other_wallet, "8-0", now).await,
        Outcome::Done,
        "other wallets are not held back"
    );
}

/// The wallet write applied but its answer was lost: the redelivery finds the provider listed
/// and goes on — at a full wallet too — so it is never counted twice.
#[tokio::test]
async fn a_redelivery_after_a_lost_wallet_write_counts_the_provider_once() {
    let now = Utc::now();
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let broker = Broker::new(store.clone(), cluster.clone());
    let first = provider(300, None, now);
    let mut ps: Vec<_> = (300..304).map(|n| provider(n, Some(&first), now)).collect();
    for (i, p) in ps.iter_mut().take(2).enumerate() {
        assert_eq!(broker.register_and_issue(p, &format!("{}-0", i + 1), now).await, Outcome::Done);
    }
    let msg = broker.register(&mut ps[2], "3-0", now).await;
    store.arm(
        Table::Providers,
        &wallets::key(&ps[2].registration.wallet_addr),
        0,
        Fault::ApplyThenFail,
    );
    assert!(matches!(broker.issue(&msg, now).await, Outcome::Retry(_)));
    assert!(store.all_fired());
    assert_eq!(cluster.token_count(), 2, "nothing created after the lost write");
    assert_eq!(
        broker.issue(&msg, now).await,
        Outcome::Done,
        "the redo is not refused at its own slot"
    );
    assert_eq!(cluster.token_count(), 3);
    let item = store
        .get(Table::Providers, &wallets::key(&ps[2].registration.wallet_addr))
        .await
        .unwrap();
    let listed = wallets::Pending::from_item(item.as_ref()).joins;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let out = broker.register_and_issue(&mut ps[3], "4-0", now).await;
    assert!(refused_for_the_wallet(&out), "{out:?}");
}

/// The create's answer was lost: the redelivery's create of the same reserved id meets 409 on
/// an id reserved for this provider — our own Secret, whose secret nobody was sent — so it
/// deletes it and draws a new id. One live token, and every id it drew reserved for it.
#[tokio::test]
async fn a_create_whose_answer_was_lost_is_deleted_before_a_new_id_is_drawn() {
    let now = Utc::now();
    let sim = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let cluster = Arc::new(FaultyCluster::new(sim.clone()).losing_token_creates(1));
    let broker = Broker::new(Arc::new(MemoryStore::new()), cluster);
    let mut p = provider(400, None, now);
    let msg = broker.register(&mut p, "1-0", now).await;
    assert!(matches!(broker.issue(&msg, now).await, Outcome::Retry(_)));
    let lost = broker.record(&p).await.token_id.unwrap();
    assert!(
        sim.get_bootstrap_token(&lost).await.unwrap().is_some(),
        "the lost create made its Secret"
    );
    assert_eq!(broker.issue(&msg, now).await, Outcome::Done);
    let rec = broker.record(&p).await;
    let live = rec.token_id.clone().unwrap();
    assert_ne!(live, lost, "a new id");
    assert_eq!(sim.token_count(), 1, "the lost one was deleted");
    assert!(sim.get_bootstrap_token(&live).await.unwrap().is_some());
    for id in [&lost, &live] {
        let owner = tokens::owner(broker.store.as_ref(), id).await.unwrap();
        assert_eq!(owner.as_deref(), Some(p.provider_id.as_str()), "{id}");
    }
}

/// One provider registering again and again — the same key, no key (an old agent), a new key —
/// holds one live token after each, the old one deleted before its replacement exists; each
/// token's id is reserved for it.
#[tokio::test]
async fn a_provider_registering_again_and_again_holds_one_live_token() {
    let now = Utc::now();
    let (broker, cluster) = memory_broker();
    let mut p = provider(500, None, now);
    let mut ids = vec![];
    for round in 1..=6 {
        match round % 3 {
            0 => p.registration.enc_pubkey = None,
            1 => {}
            _ => {
                let (secret, public) = worldland_core::sealed::new_enc_keypair();
                p.enc_secret = secret;
                p.registration.enc_pubkey = Some(public);
            }
        }
        assert_eq!(
            broker.register_and_issue(&mut p, &format!("{round}-0"), now).await,
            Outcome::Done,
            "round {round}"
        );
        assert_eq!(cluster.token_count(), 1, "round {round}");
        let rec = broker.record(&p).await;
        assert_eq!(rec.state, ProviderState::Approved);
        let id = rec.token_id.unwrap();
        assert!(
            cluster.get_bootstrap_token(&id).await.unwrap().is_some(),
            "round {round}: the live one is the recorded one"
        );
        let owner = tokens::owner(broker.store.as_ref(), &id).await.unwrap();
        assert_eq!(owner.as_deref(), Some(p.provider_id.as_str()));
        ids.push(id);
    }
    ids.dedup();
    assert!(ids.len() >= 4, "new keys and old agents got new tokens: {ids:?}");
}

/// Two registrations of one wallet race for its last slot on dynalite: the first reads the
/// wallet, then stalls before its write; the second takes the slot; the first's write fails its
/// version condition, it reads again, finds the wallet full and is refused. Then five wallets
/// each race two registrations for their last slot freely: exactly one wins each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_registrations_racing_for_a_wallets_last_slot_cannot_both_take_it() {
    let env = TestEnv::new(&[]);
    let dynamo: Arc<dyn ItemStore> = Arc::new(env.dynamo().await);
    let store = Arc::new(FaultyStore::new(dynamo));
    let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
    let broker = Arc::new(Broker::new(store.clone(), cluster.clone()));
    let now = Utc::now();
    let first = provider(600, None, now);
    let mut ps: Vec<_> = (600..604).map(|n| provider(n, Some(&first), now)).collect();
    for (i, p) in ps.iter_mut().take(2).enumerate() {
        assert_eq!(broker.register_and_issue(p, &format!("{}-0", i + 1), now).await, Outcome::Done);
    }
    let slow = broker.register(&mut ps[2], "3-0", now).await;
    let fast = broker.register(&mut ps[3], "4-0", now).await;
    let (fault, reached, resume) = FaultyStore::pause();
    store.arm(Table::Providers, &wallets::key(&first.registration.wallet_addr), 0, fault);
    let slow_run = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.issue(&slow, now).await })
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), reached.notified())
        .await
        .expect("the first registration writes its wallet's item");
    assert_eq!(broker.issue(&fast, now).await, Outcome::Done);
    resume.notify_one();
    let out = slow_run.await.unwrap();
    assert!(refused_for_the_wallet(&out), "{out:?}");
    assert_eq!(cluster.token_count(), 3);

    for w in 0..5 {
        let base = 700 + 10 * w;
        let owner = provider(base, None, now);
        let mut ps: Vec<_> = (base..base + 4).map(|n| provider(n, Some(&owner), now)).collect();
        for (i, p) in ps.iter_mut().take(2).enumerate() {
            assert_eq!(broker.register_and_issue(p, &format!("{}-0", i + 1), now).await, Outcome::Done);
        }
        let a = broker.register(&mut ps[2], "3-0", now).await;
        let b = broker.register(&mut ps[3], "4-0", now).await;
        let (ra, rb) = tokio::join!(broker.issue(&a, now), broker.issue(&b, now));
        let won = [&ra, &rb].iter().filter(|o| ***o == Outcome::Done).count();
        let refused = [&ra, &rb].iter().filter(|o| refused_for_the_wallet(o)).count();
        assert_eq!((won, refused), (1, 1), "wallet {w}: {ra:?} {rb:?}");
    }
    assert_eq!(cluster.token_count(), 3 + 5 * 3);
}
