//! The embedded plane the demo runs on: in-memory store, in-process bus, simulated cluster, and
//! the registration handler and join-token issuer consuming until stopped.

use super::Registrations;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::answers::{BrokerKey, BrokerPublicKey};
use worldland_core::bus::{self, BusResult, QueueSpec, RegistrationReceived};
use worldland_core::messages::{ProviderResponse, ProviderState, StreamEnvelope};
use worldland_core::provider::ProviderRecord;
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::client::join_from_response;
use worldland_provider_sdk::join::JoinPlan;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_provider_sdk::verify;
use worldland_runtime::worker::{run_consumer, Worker};
use worldland_runtime::{Backends, Config};

/// The embedded plane: in-memory store, in-process bus, simulated cluster, with the
/// registration handler and the join-token issuer consuming from the bus until stopped. Answers
/// are signed with an ephemeral broker key, which the simulated agents pin.
pub(super) struct Plane {
    pub(super) store: Arc<MemoryStore>,
    pub(super) bus: Arc<MemoryBus>,
    pub(super) cluster: Arc<SimulatedCluster>,
    pub(super) replies: Arc<MemoryReplies>,
    pub(super) broker: BrokerPublicKey,
    pub(super) stop: broadcast::Sender<()>,
    pub(super) workers: Vec<JoinHandle<BusResult<()>>>,
}

impl Plane {
    /// The two workers built by their own crates' constructors (the default configuration: signed
    /// registrations required, one-hour tokens) on the embedded backends.
    pub(super) async fn start() -> anyhow::Result<Self> {
        let store = Arc::new(MemoryStore::new());
        let bus = Arc::new(MemoryBus::new(5));
        let cluster = Arc::new(SimulatedCluster::new("https://10.0.0.1:6443"));
        let key = BrokerKey::generate();
        let broker = key.public();
        let replies = Arc::new(MemoryReplies::signed(StreamNames::default(), key));
        let b = Backends::new(Config::defaults(), bus.clone())
            .with_store(store.clone())
            .with_cluster(cluster.clone())
            .with_replies(replies.clone());
        let registration = registration_handler::worker(b.clone()).await?;
        let issuer = join_token_issuer::worker(b).await?;
        let (stop, _) = broadcast::channel(1);
        let mut workers = vec![];
        for h in [registration, issuer].iter().filter_map(Worker::handler) {
            let queue = QueueSpec::new(format!("worldland.{}", h.name()), h.bindings());
            bus.declare(&queue);
            workers.push(tokio::spawn(run_consumer(
                bus.clone(),
                queue,
                h,
                16,
                worldland_runtime::readiness::ReadyPart::unobserved(),
                stop.subscribe(),
            )));
        }
        Ok(Self {
            store,
            bus,
            cluster,
            replies,
            broker,
            stop,
            workers,
        })
    }

    /// The first answer to `p` that its SDK would believe — signed by the pinned broker key for
    /// its own stream, fresh — and that approves it.
    pub(super) fn believed_approval(&self, p: &SimulatedProvider) -> Option<ProviderResponse> {
        let stream = StreamNames::default().response(&p.provider_id);
        self.replies.entries_for(&p.provider_id).into_iter().find_map(|w| {
            let entry = verify::Entry {
                id: String::new(),
                data: w.data.into_bytes(),
                timestamp: Some(w.timestamp),
                broker_sig: Some(w.broker_sig),
            };
            verify::check(&entry, &stream, &self.broker, Utc::now()).ok()?;
            serde_json::from_slice::<ProviderResponse>(&entry.data).ok().filter(|a| a.success)
        })
    }

    /// The agents' side: the bridge would forward each stream entry onto the bus like this.
    /// When each provider's registration went out.
    pub(super) async fn publish_registrations(
        &self,
        providers: &[SimulatedProvider],
        streams: &StreamNames,
    ) -> anyhow::Result<BTreeMap<String, DateTime<Utc>>> {
        let mut published_at = BTreeMap::new();
        for (n, p) in providers.iter().enumerate() {
            let env = p.envelope(&streams.registration(), &format!("{}-0", 1_000_000 + n));
            published_at.insert(p.provider_id.clone(), Utc::now());
            let id = env.message_id();
            bus::publish(self.bus.as_ref(), &id, &RegistrationReceived(env)).await?;
        }
        Ok(published_at)
    }

    /// Every good provider answered (so stored) before the bad ones go out: the wallet thief must
    /// meet an existing provider. Answers and dead letters are awaited as they happen, for at
    /// most `timeout` in all (what is missing then shows as unanswered).
    pub(super) async fn await_answers(
        &self,
        providers: &[SimulatedProvider],
        bad: &[(StreamEnvelope, &'static str)],
        progress: Option<&ProgressBar>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let expected_rejections = bad.len();
        let mut answers = self.replies.watch();
        let mut parked = self.bus.watch_dead_letters();
        let show = |answered: usize, rejected: usize| {
            if let Some(bar) = progress {
                bar.set_position((answered + rejected.min(expected_rejections)) as u64);
                bar.set_message(format!("{rejected} rejected"));
            }
        };
        let answered = || {
            providers
                .iter()
                .filter(|p| !self.replies.answers_for(&p.provider_id).is_empty())
                .count()
        };
        let waited = tokio::time::timeout(timeout, async {
            while answered() < providers.len() {
                show(answered(), 0);
                if answers.changed().await.is_err() {
                    break;
                }
            }
            for (env, _) in bad {
                bus::publish(self.bus.as_ref(), &env.message_id(), &RegistrationReceived(env.clone())).await?;
            }
            while self.bus.dead_letters().len() < expected_rejections {
                show(answered(), self.bus.dead_letters().len());
                if parked.changed().await.is_err() {
                    break;
                }
            }
            show(answered(), self.bus.dead_letters().len());
            Ok::<_, anyhow::Error>(())
        })
        .await;
        if let Ok(result) = waited {
            result?;
        }
        Ok(())
    }

    /// Stops the workers and waits for them.
    pub(super) async fn stop_workers(&mut self) {
        let _ = self.stop.send(());
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
    }

    /// What became of each good provider's registration, from the store and the answers.
    pub(super) async fn registration_results(
        &self,
        providers: &[SimulatedProvider],
        published_at: &BTreeMap<String, DateTime<Utc>>,
    ) -> anyhow::Result<Registrations> {
        let mut r = Registrations::default();
        for p in providers {
            let rec = ProviderRecord::load(self.store.as_ref(), &p.provider_id).await?;
            let state = rec.as_ref().map(|r| r.state.to_string()).unwrap_or_else(|| "missing".into());
            *r.per_state.entry(state).or_insert(0) += 1;
            let answer = self.believed_approval(p);
            match (&rec, answer) {
                (Some(rec), Some(answer)) if rec.state == ProviderState::Approved => {
                    // What the SDK would do: open the sealed token, build kubeadm's argv from the
                    // validated fields.
                    if join_from_response(&answer, &p.enc_secret)
                        .and_then(|join| JoinPlan::from_answer(&answer, &join))
                        .is_ok()
                    {
                        r.opened += 1;
                    }
                    let published = published_at[&p.provider_id];
                    r.to_pending
                        .push((rec.registered_at - published).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    if let Some(approved) = rec.approved_at {
                        r.to_approved
                            .push((approved - rec.registered_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    }
                }
                _ => r.unanswered.push(p.provider_id.clone()),
            }
        }
        Ok(r)
    }

    /// Dead letters per reason; each bad registration whose reason is missing is unanswered.
    pub(super) fn rejections(&self, bad: &[(StreamEnvelope, &'static str)], unanswered: &mut Vec<String>) -> BTreeMap<String, usize> {
        let mut per_reason = BTreeMap::new();
        for d in self.bus.dead_letters() {
            *per_reason.entry(d.reason).or_insert(0) += 1;
        }
        for (env, reason) in bad {
            if !self.bus.dead_letters().iter().any(|d| d.reason == *reason) {
                unanswered.push(format!("{} (expected {reason})", env.entry_id));
            }
        }
        per_reason
    }
}
