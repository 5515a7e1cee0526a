//! A plane of providers seeded `available` over a [`FaultyStore`], with the allocator's and
//! the sweeper's contexts, the job events as they are answered, and the checks every ledger
//! test ends with (nothing pending, the audit clean, each answer once).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use worldland_adapters::bus::memory::MemoryBus;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec, Subscription};
use worldland_core::job::{audit, JobState};
use worldland_core::ledger::Ledger;
use worldland_core::messages::{topics, MiningConfig};
use worldland_core::state::{ItemStore, Table};
use worldland_provider_sdk::simulated::SimulatedProvider;

use crate::faulty_store::FaultyStore;
use crate::{event_sink, seed_available};

/// Provider `n` with `gpus` RTX 4090s, `mining` of them mining, at `price` per GPU-hour.
pub fn provider(n: usize, gpus: u32, mining: u32, price: f64, t0: DateTime<Utc>) -> SimulatedProvider {
    let mut p = SimulatedProvider::new(n, t0);
    let g = p.registration.spec.gpus[0].clone();
    p.registration.spec.gpus = (0..gpus)
        .map(|i| worldland_core::messages::Gpu {
            index: Some(i),
            name: "NVIDIA GeForce RTX 4090".into(),
            ..g.clone()
        })
        .collect();
    p.registration.spec.total_gpus = gpus;
    p.registration.capacity.gpu_count = Some(gpus);
    p.registration.capacity.gpu_price_per_hour = price;
    p.registration.mining_config = (mining > 0).then(|| MiningConfig {
        image: Some("miner".into()),
        gpu_count: mining,
        cpu_cores: None,
        memory_mb: None,
        wallet_address: None,
    });
    p
}

pub struct Fx {
    pub faulty: Arc<FaultyStore>,
    pub store: Arc<dyn ItemStore>,
    pub bus: Arc<MemoryBus>,
    pub replies: Arc<MemoryReplies>,
    events: Box<dyn Subscription>,
    /// Provider ids, cheapest first.
    pub providers: Vec<String>,
}

impl Fx {
    /// `(gpus, mining)` per provider, the first the cheapest.
    pub async fn new(providers: &[(u32, u32)], t0: DateTime<Utc>) -> Self {
        Self::on(Arc::new(MemoryStore::new()), providers, t0).await
    }

    /// The same over `inner`.
    pub async fn on(inner: Arc<dyn ItemStore>, providers: &[(u32, u32)], t0: DateTime<Utc>) -> Self {
        let faulty = Arc::new(FaultyStore::new(inner));
        let store: Arc<dyn ItemStore> = faulty.clone();
        let mut ids = vec![];
        for (i, (gpus, mining)) in providers.iter().enumerate() {
            let p = provider(i + 1, *gpus, *mining, 0.5 + i as f64 * 0.25, t0);
            seed_available(store.as_ref(), &p.registration, t0).await;
            ids.push(p.provider_id);
        }
        let bus = event_sink();
        let events = bus
            .subscribe(&QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS))
            .await
            .unwrap();
        Self {
            faulty,
            store,
            bus,
            replies: Arc::new(MemoryReplies::default()),
            events,
            providers: ids,
        }
    }

    pub fn ctx(&self) -> allocator::Context {
        allocator::Context::new(self.store.clone(), self.bus.clone(), self.replies.clone())
    }

    pub fn sweeper(&self) -> staleness_sweeper::Context {
        staleness_sweeper::Context {
            store: self.store.clone(),
            cluster: Arc::new(worldland_adapters::cluster::simulated::SimulatedCluster::new("https://x:6443")),
            bus: self.bus.clone(),
            replies: self.replies.clone(),
            stale_after: Duration::seconds(120),
            guard: staleness_sweeper::StallGuard::default(),
            fleet: Default::default(),
            node_health: Default::default(),
        }
    }

    /// (routing key, job id) of every job event so far.
    pub async fn drain(&mut self) -> Vec<(String, String)> {
        let mut out = vec![];
        while let Ok(Some(d)) = tokio::time::timeout(std::time::Duration::from_millis(20), self.events.next()).await {
            let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
            out.push((d.routing_key.clone(), body["job_id"].as_str().unwrap().to_string()));
            d.ack().await.unwrap();
        }
        out
    }

    pub async fn job(&self, job: &str) -> worldland_core::state::Item {
        self.store.get(Table::Jobs, job).await.unwrap().unwrap()
    }

    pub async fn state(&self, job: &str) -> Option<JobState> {
        JobState::of(&self.job(job).await)
    }

    pub async fn ledger(&self, provider: &str) -> Ledger {
        Ledger::from_item(&self.store.get(Table::Providers, provider).await.unwrap().unwrap()).unwrap()
    }

    pub async fn used(&self, provider: &str) -> i64 {
        self.ledger(provider).await.models.values().map(|c| c.used).sum()
    }

    pub async fn audit_clean(&self) {
        let violations = audit(self.store.as_ref()).await.unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
    }

    /// Each (event, job) exactly once, as `expected`.
    pub async fn answered(&mut self, expected: &[(&str, &str)]) {
        let events = self.drain().await;
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for e in &events {
            *seen.entry(e.clone()).or_default() += 1;
        }
        let want: BTreeMap<(String, String), usize> = expected.iter().map(|(k, j)| ((k.to_string(), j.to_string()), 1)).collect();
        assert_eq!(seen, want, "events: {events:?}");
    }

    /// No job pending, the audit clean, each (event, job) at most once.
    pub async fn settled(&mut self) -> Vec<(String, String)> {
        for j in self.store.scan(Table::Jobs).await.unwrap() {
            assert_ne!(JobState::of(&j), Some(JobState::Pending), "a job left pending: {j:?}");
        }
        let violations = audit(self.store.as_ref()).await.unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
        let events = self.drain().await;
        let mut seen: BTreeMap<&(String, String), usize> = BTreeMap::new();
        for e in &events {
            *seen.entry(e).or_default() += 1;
        }
        assert!(seen.values().all(|n| *n == 1), "answered twice: {events:?}");
        events
    }
}
