//! The spine end to end: a signed registration XADDed to real Redis goes through the bridge,
//! real RabbitMQ, the registration handler and the join-token issuer, with state in dynalite and
//! Kubernetes answered by the strict API mock; the SDK library reads and opens the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis_bridge::{BridgeSettings, RedisBridge};
use tokio::sync::broadcast;
use worldland_adapters::bus::rabbit::RabbitBus;
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::replies::RedisReplies;
use worldland_core::answers::{BrokerKey, BrokerPublicKey};
use worldland_core::bus::{Bus, BusError, BusResult, QueueSpec, Subscription};
use worldland_core::messages::{ProviderResponse, ProviderState};
use worldland_core::provider::ProviderRecord;
use worldland_core::state::{ItemStore, Table};
use worldland_core::streams::AGENT_RESPONSE_GROUP;
use worldland_core::worker::Handler;
use worldland_provider_sdk::client::{join_from_response, publish_registration, wait_for_response};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::worker::run_consumer;
use worldland_tests::kube_mock::{mock_client, RoutingApiServer};
use worldland_tests::notifying_store::NotifyingStore;
use worldland_tests::{Counted, TestEnv};

const WAIT: Duration = Duration::from_secs(30);

struct Plane {
    env: TestEnv,
    redis: ConnectionManager,
    store: Arc<NotifyingStore>,
    bus: Arc<RabbitBus>,
    api: RoutingApiServer,
    cluster: Arc<KubeCluster>,
    handler: Arc<Counted>,
    issuer: Arc<Counted>,
    /// The broker key's public half, which the agents pin.
    broker: BrokerPublicKey,
    stop: broadcast::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Plane {
    /// Every worker of the spine on real backends, without the bridge (tests start theirs).
    async fn start(overrides: &[(&str, &str)]) -> Self {
        let env = TestEnv::new(overrides);
        let redis = env.redis().await;
        let store = Arc::new(NotifyingStore::new(Arc::new(env.dynamo().await)));
        let bus = Arc::new(env.rabbit().await);
        let replies = Arc::new(RedisReplies::new(redis.clone(), env.cfg.streams(), 600, BrokerKey::generate()));
        let broker = replies.public_key();
        let (client, handle) = mock_client();
        let api = RoutingApiServer::default();
        api.spawn(handle);
        let cluster = Arc::new(KubeCluster::new(client));
        let handler = Counted::new(Arc::new(registration_handler::RegistrationHandler(registration_handler::Context {
            store: store.clone(),
            bus: bus.clone(),
            replies: replies.clone(),
            policy: env.cfg.validation_policy(),
            signatures: env.cfg.signature_policy,
        })));
        let issuer = Counted::new(Arc::new(join_token_issuer::JoinTokenIssuer(join_token_issuer::Context {
            store: store.clone(),
            cluster: cluster.clone(),
            replies,
            token_ttl: chrono::Duration::hours(1),
            max_pending_per_wallet: 3,
            api_endpoint: None,
        })));
        let (stop, _) = broadcast::channel(1);
        let mut tasks = vec![];
        for h in [handler.clone() as Arc<dyn Handler>, issuer.clone() as Arc<dyn Handler>] {
            let q = env.queue(h.name(), h.bindings());
            bus.declare(&q).await.unwrap();
            let (bus, rx) = (bus.clone() as Arc<dyn Bus>, stop.subscribe());
            tasks.push(tokio::spawn(async move {
                run_consumer(bus, q, h, 8, worldland_runtime::readiness::ReadyPart::unobserved(), rx)
                    .await
                    .unwrap();
            }));
        }
        Self {
            env,
            redis,
            store,
            bus,
            api,
            cluster,
            handler,
            issuer,
            broker,
            stop,
            tasks,
        }
    }

    async fn bridge(&self, consumer: &str, bus: Arc<dyn Bus>, reclaim_idle_ms: u64) -> RedisBridge {
        let settings = BridgeSettings {
            consumer: consumer.into(),
            reclaim_idle_ms,
            block_ms: 100,
            ..BridgeSettings::from_config(&self.env.cfg)
        };
        RedisBridge::new(self.redis.clone(), self.env.redis_blocking().await, bus, settings)
    }

    async fn run_bridge(&mut self) {
        let bridge = self.bridge("bridge-1", self.bus.clone(), 60_000).await;
        let rx = self.stop.subscribe();
        self.tasks.push(tokio::spawn(async move {
            bridge.run(rx).await.unwrap();
        }));
    }

    async fn wait_state(&self, provider_id: &str, state: ProviderState) {
        let store = self.store.clone();
        let id = provider_id.to_string();
        self.store
            .wait_until(WAIT, &format!("{provider_id} {state}"), || {
                let (store, id) = (store.clone(), id.clone());
                async move {
                    ProviderRecord::load(store.as_ref(), &id)
                        .await
                        .unwrap()
                        .is_some_and(|r| r.state == state)
                }
            })
            .await;
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.api.assert_no_failures();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_registrations_become_sealed_join_commands() {
    let mut plane = Plane::start(&[]).await;
    plane.run_bridge().await;
    let streams = plane.env.cfg.streams();
    let providers: Vec<SimulatedProvider> = (0..4).map(|n| SimulatedProvider::new(n, chrono::Utc::now())).collect();
    let mut waits = vec![];
    for p in &providers {
        let mut conn = plane.redis.clone();
        let entry = publish_registration(&mut conn, &streams, &p.registration, &p.key).await.unwrap();
        let (streams, id) = (streams.clone(), p.provider_id.clone());
        let mut reader = plane.env.redis_blocking().await;
        let broker = plane.broker;
        waits.push(tokio::spawn(async move {
            wait_for_response(&mut reader, &streams, &id, &entry, &broker, WAIT).await.unwrap()
        }));
    }
    for (p, w) in providers.iter().zip(waits) {
        let answer = w.await.unwrap();
        assert!(answer.success, "{answer:?}");
        let join = join_from_response(&answer, &p.enc_secret).unwrap();
        let token_id = join.join_token.split('.').next().unwrap().to_string();
        assert!(
            plane
                .api
                .secrets
                .lock()
                .unwrap()
                .contains_key(&format!("bootstrap-token-{token_id}")),
            "the token exists in the cluster"
        );
        assert!(join.join_command.contains(answer.ca_hash.as_deref().unwrap()));
        plane.wait_state(&p.provider_id, ProviderState::Approved).await;
        let rec = ProviderRecord::load(plane.store.as_ref(), &p.provider_id).await.unwrap().unwrap();
        assert_eq!(rec.token_id.as_deref(), Some(token_id.as_str()));
    }
    assert_eq!(plane.api.token_count(), 4);
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_unsigned_agent_that_makes_its_group_late_still_gets_the_answer() {
    let mut plane = Plane::start(&[("WORLDLAND_SIGNATURE_POLICY", "optional")]).await;
    plane.run_bridge().await;
    let streams = plane.env.cfg.streams();
    let mut p = SimulatedProvider::new(7, chrono::Utc::now());
    p.registration.enc_pubkey = None; // old agents know nothing of sealing
    p.registration.timestamp = None;
    let mut conn = plane.redis.clone();
    // The old agent: XADD data + timestamp, no signature.
    let _: String = redis::cmd("XADD")
        .arg(streams.registration())
        .arg("*")
        .arg("data")
        .arg(serde_json::to_string(&p.registration).unwrap())
        .arg("timestamp")
        .arg("2026-01-01T00:00:00Z")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A fast broker answers before the agent has made its group.
    let response_stream = streams.response(&p.provider_id);
    let mut reader = plane.env.redis_blocking().await;
    let _: redis::Value = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(30_000)
        .arg("STREAMS")
        .arg(&response_stream)
        .arg("0")
        .query_async(&mut reader)
        .await
        .unwrap();
    // Only now does the agent create `sdk-group` at `$` (tolerating BUSYGROUP, as it does) and read.
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&response_stream)
        .arg(AGENT_RESPONSE_GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    if let Err(e) = created {
        assert_eq!(e.code(), Some("BUSYGROUP"), "{e}");
    }
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(AGENT_RESPONSE_GROUP)
        .arg("sdk-1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&response_stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry = &reply.keys.first().expect("the old agent's group delivers the answer").ids[0];
    let answer: ProviderResponse = serde_json::from_str(&entry.get::<String>("data").unwrap()).unwrap();
    assert!(answer.success && answer.status == "approved", "{answer:?}");
    assert!(answer
        .join_command
        .as_deref()
        .unwrap()
        .starts_with("kubeadm join 127.0.0.1:6443 --token "));
    assert!(answer.sealed_join.is_none());
    plane.wait_state(&p.provider_id, ProviderState::Approved).await;
    plane.stop().await;
}

/// A bus that confirms the publish, then "crashes" the bridge before it can XACK.
struct CrashAfterPublish {
    inner: Arc<RabbitBus>,
    crashed: AtomicBool,
}

#[async_trait]
impl Bus for CrashAfterPublish {
    async fn publish(&self, key: &str, id: &str, body: &[u8]) -> BusResult<()> {
        self.inner.publish(key, id, body).await?;
        self.crashed.store(true, Ordering::SeqCst);
        Err(BusError::Connection("bridge process died before XACK".into()))
    }
    async fn subscribe(&self, q: &QueueSpec) -> BusResult<Box<dyn Subscription>> {
        self.inner.subscribe(q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_delivered_twice_still_leaves_one_provider_and_one_token() {
    let plane = Plane::start(&[]).await;
    let streams = plane.env.cfg.streams();
    let p = SimulatedProvider::new(11, chrono::Utc::now());
    let mut conn = plane.redis.clone();
    let entry = publish_registration(&mut conn, &streams, &p.registration, &p.key).await.unwrap();

    // The bridge publishes, then dies before XACK; a second bridge reclaims and publishes again.
    let crashing = Arc::new(CrashAfterPublish {
        inner: plane.bus.clone(),
        crashed: AtomicBool::new(false),
    });
    let first = plane.bridge("bridge-crashes", crashing.clone(), 60_000).await;
    first.ensure_groups().await.unwrap();
    assert_eq!(first.poll_once().await.unwrap().left_pending, 1);
    assert!(crashing.crashed.load(Ordering::SeqCst));
    let rescuer = plane.bridge("bridge-rescues", plane.bus.clone(), 0).await;
    assert_eq!(rescuer.reclaim_once().await.unwrap().forwarded, 1);

    // And a worker dies before its ack: RabbitMQ delivers the same registration once more.
    let env = serde_json::to_vec(&worldland_core::messages::StreamEnvelope {
        stream: streams.registration(),
        entry_id: entry.clone(),
        data: serde_json::to_string(&p.registration).unwrap(),
        signature: Some(worldland_core::signature::sign_personal(
            &p.key,
            serde_json::to_string(&p.registration).unwrap().as_bytes(),
        )),
        timestamp: None,
        received_at_ms: None,
    })
    .unwrap();
    plane
        .bus
        .publish(worldland_core::messages::topics::REGISTRATION_RECEIVED, "redelivered", &env)
        .await
        .unwrap();

    // Three registration deliveries, each passed on once: three validated messages handled.
    plane.handler.wait_for(3, WAIT).await;
    plane.issuer.wait_for(3, WAIT).await;
    let answer = wait_for_response(
        &mut plane.env.redis_blocking().await,
        &streams,
        &p.provider_id,
        &entry,
        &plane.broker,
        WAIT,
    )
    .await
    .unwrap();
    assert!(answer.success);
    plane.wait_state(&p.provider_id, ProviderState::Approved).await;
    let items = plane.store.scan(Table::Providers).await.unwrap();
    use worldland_core::provider::{nodes, specs, tokens, wallets};
    let (others, providers): (Vec<_>, Vec<_>) = items.iter().partition(|i| nodes::is_not_a_provider(i));
    assert_eq!(providers.len(), 1, "one provider");
    assert_eq!(
        others.iter().filter(|i| nodes::is_reservation(i)).count(),
        1,
        "one node name reserved"
    );
    assert_eq!(
        others.iter().filter(|i| tokens::is_reservation(i)).count(),
        1,
        "one token id reserved"
    );
    let wallet_items: Vec<&str> = others
        .iter()
        .filter_map(|i| i.get("id").and_then(|v| v.as_str()))
        .filter(|k| k.starts_with(wallets::KEY_PREFIX))
        .collect();
    assert_eq!(wallet_items, vec![wallets::key(&p.registration.wallet_addr)], "one wallet item");
    let spec_items: Vec<&str> = others
        .iter()
        .filter_map(|i| i.get("id").and_then(|v| v.as_str()))
        .filter(|k| k.starts_with(specs::KEY_PREFIX))
        .collect();
    assert_eq!(spec_items, vec![specs::key(&p.provider_id)], "one registered spec");
    assert_eq!(others.len(), 4, "nothing else beside the provider");
    assert_eq!(plane.api.token_count(), 1, "one token");
    // Every answer carries that one token.
    let all: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(streams.response(&p.provider_id))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let tokens: std::collections::HashSet<String> = all
        .ids
        .iter()
        .map(|e| serde_json::from_str::<ProviderResponse>(&e.get::<String>("data").unwrap()).unwrap())
        .map(|a| join_from_response(&a, &p.enc_secret).unwrap().join_token)
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    plane.stop().await;
}

/// The lifecycle through every real piece: the SDK's heartbeat loop writes to Redis, the bridge
/// forwards over RabbitMQ, the recorder and the sweeper keep state in dynalite, and the API mock
/// holds the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_carry_a_provider_to_available_offline_and_back() {
    use worldland_provider_sdk::heartbeat::{run_heartbeats, HeartbeatSettings, Usage};

    let mut plane = Plane::start(&[]).await;
    let recorder = Counted::new(Arc::new(heartbeat_recorder::HeartbeatRecorder(heartbeat_recorder::Context {
        store: plane.store.clone(),
        cluster: plane.cluster.clone(),
        signatures: worldland_core::signature::SignaturePolicy::Required,
        replay_window: chrono::Duration::minutes(5),
        annotate_interval: chrono::Duration::minutes(5),
        min_heartbeat_interval: chrono::Duration::seconds(10),
        active_jobs_label_interval: chrono::Duration::seconds(60),
        recent: Default::default(),
        node_health: Default::default(),
    })));
    let q = plane.env.queue(recorder.name(), recorder.bindings());
    let (bus, rx) = (plane.bus.clone() as Arc<dyn Bus>, plane.stop.subscribe());
    let h = recorder.clone() as Arc<dyn Handler>;
    plane.tasks.push(tokio::spawn(async move {
        run_consumer(bus, q, h, 8, worldland_runtime::readiness::ReadyPart::unobserved(), rx)
            .await
            .unwrap()
    }));
    let sweeper = Arc::new(worldland_tests::sweeper(
        plane.store.clone(),
        plane.cluster.clone(),
        chrono::Duration::seconds(2),
    ));
    let rx = plane.stop.subscribe();
    plane.tasks.push(tokio::spawn(staleness_sweeper::run(
        sweeper,
        Duration::from_millis(250),
        Arc::new(chrono::Utc::now),
        rx,
    )));
    plane.run_bridge().await;

    let streams = plane.env.cfg.streams();
    let p = worldland_tests::lifecycle::fixture_shaped_provider(21, chrono::Utc::now());
    let mut conn = plane.redis.clone();
    let entry = publish_registration(&mut conn, &streams, &p.registration, &p.key).await.unwrap();
    let answer = wait_for_response(
        &mut plane.env.redis_blocking().await,
        &streams,
        &p.provider_id,
        &entry,
        &plane.broker,
        WAIT,
    )
    .await
    .unwrap();
    let node_name = answer.node_name.clone().unwrap();
    plane.api.add_fixture_node(&node_name);

    let beats = |plane: &Plane| {
        let settings = HeartbeatSettings {
            redis_url: plane.env.cfg.redis_url.clone(),
            streams: streams.clone(),
            provider_id: p.provider_id.clone(),
            node_name: node_name.clone(),
            interval: Duration::from_millis(200),
            timeouts: Default::default(),
            state_dir: None,
        };
        let (stop, rx) = broadcast::channel(1);
        (stop, tokio::spawn(run_heartbeats(settings, p.key.clone(), Usage::default, rx)))
    };
    let (stop_beats, beating) = beats(&plane);
    plane.wait_state(&p.provider_id, ProviderState::Available).await;
    let node = plane.api.node(&node_name).unwrap();
    assert_eq!(node["metadata"]["labels"]["worldland.io/rental-type"], "gpu");
    assert_eq!(plane.api.token_count(), 0, "the bootstrap token is deleted on join");

    // The machine goes quiet: offline, tainted.
    let _ = stop_beats.send(());
    assert!(beating.await.unwrap().sent >= 1);
    plane.wait_state(&p.provider_id, ProviderState::Offline).await;
    // The sweeper writes the store first, then the node: await the node's marks.
    let node = plane
        .api
        .wait_for_node(&node_name, WAIT, "offline marks", |n| {
            n["metadata"]["labels"]["worldland.io/status"] == "offline"
                && n["spec"]["taints"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["key"] == "worldland.io/offline"))
        })
        .await;
    assert!(
        node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready"),
        "other taints kept"
    );

    // And back.
    let (stop_beats, beating) = beats(&plane);
    plane.wait_state(&p.provider_id, ProviderState::Available).await;
    let _ = stop_beats.send(());
    beating.await.unwrap();
    let node = plane.api.node(&node_name).unwrap();
    assert!(node["metadata"]["labels"].get("worldland.io/status").is_none());
    assert!(!node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "worldland.io/offline"));
    plane.stop().await;
}
