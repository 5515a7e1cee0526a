//! The process's backends, handed to every worker's one constructor: the container entry point,
//! the Lambda entry point, `worldland up` and the demo all build workers from a [`Backends`].
//! A client given up front (the demo's in-memory store, `up`'s shared bus) is used as is; one
//! not given is built from the configuration on first use, once, and shared by every worker of
//! the process — so a worker that never asks for a cluster never builds (nor links) one.

use std::sync::Arc;

use tokio::sync::OnceCell;
use worldland_core::bus::Bus;
use worldland_core::cluster::Cluster;
use worldland_core::replies::ProviderReplies;
use worldland_core::state::ItemStore;

use crate::backends::{self, BackendError};
use crate::config::Config;

/// The clients of one process, cheap to clone (every clone shares them).
#[derive(Clone)]
pub struct Backends(Arc<Inner>);

struct Inner {
    config: Config,
    bus: Arc<dyn Bus>,
    store: OnceCell<Arc<dyn ItemStore>>,
    replies: OnceCell<Arc<dyn ProviderReplies>>,
    cluster: OnceCell<Arc<dyn Cluster>>,
}

impl Backends {
    /// The configuration and the bus (which the entry point has connected already: it consumes from it too).
    pub fn new(config: Config, bus: Arc<dyn Bus>) -> Self {
        Self(Arc::new(Inner {
            config,
            bus,
            store: OnceCell::new(),
            replies: OnceCell::new(),
            cluster: OnceCell::new(),
        }))
    }

    /// With this store instead of the configured one.
    pub fn with_store(self, store: Arc<dyn ItemStore>) -> Self {
        let _ = self.0.store.set(store); // already set: the first one stays, as with a built one
        self
    }

    /// With these replies instead of the configured ones.
    pub fn with_replies(self, replies: Arc<dyn ProviderReplies>) -> Self {
        let _ = self.0.replies.set(replies);
        self
    }

    /// With this cluster instead of the configured one.
    pub fn with_cluster(self, cluster: Arc<dyn Cluster>) -> Self {
        let _ = self.0.cluster.set(cluster);
        self
    }

    /// The process's configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The bus, for publishing.
    pub fn bus(&self) -> Arc<dyn Bus> {
        self.0.bus.clone()
    }

    /// The state store (`WORLDLAND_STORE`).
    pub async fn store(&self) -> Result<Arc<dyn ItemStore>, BackendError> {
        let cfg = &self.0.config;
        self.0.store.get_or_try_init(|| backends::store(cfg)).await.cloned()
    }

    /// Answers to providers, signed with the broker key.
    pub async fn replies(&self) -> Result<Arc<dyn ProviderReplies>, BackendError> {
        let cfg = &self.0.config;
        self.0.replies.get_or_try_init(|| configured_replies(cfg)).await.cloned()
    }

    /// The Kubernetes cluster (`WORLDLAND_CLUSTER`).
    pub async fn cluster(&self) -> Result<Arc<dyn Cluster>, BackendError> {
        let cfg = &self.0.config;
        self.0.cluster.get_or_try_init(|| backends::cluster(cfg)).await.cloned()
    }
}

#[cfg(feature = "redis")]
async fn configured_replies(cfg: &Config) -> Result<Arc<dyn ProviderReplies>, BackendError> {
    Ok(backends::replies(cfg).await?)
}

#[cfg(not(feature = "redis"))]
async fn configured_replies(_cfg: &Config) -> Result<Arc<dyn ProviderReplies>, BackendError> {
    Err(BackendError::NotBuilt {
        setting: "WORLDLAND_REDIS_URL",
        what: "answers to providers on Redis",
        feature: "redis",
    })
}
