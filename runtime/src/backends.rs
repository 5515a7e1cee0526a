//! Builds the configured backends once per process (clients outside any handler).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::config::{ClusterKind, Config, StoreKind};
use worldland_adapters::bus::rabbit::{RabbitBus, RabbitSettings};
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::cluster::simulated::SimulatedCluster;
use worldland_adapters::replies::RedisReplies;
use worldland_adapters::state::dynamo::DynamoStore;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::cluster::Cluster;
use worldland_core::state::ItemStore;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("Redis at {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error(transparent)]
    Bus(#[from] worldland_core::bus::BusError),
    #[error("Kubernetes client: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Store(#[from] worldland_core::state::StoreError),
    #[error("health endpoint on {addr}: {source}")]
    Health {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A reconnecting Redis connection for ordinary commands. Commands on one connection are
/// pipelined, so blocking reads must use [`redis_blocking`] instead.
pub async fn redis(cfg: &Config) -> Result<redis::aio::ConnectionManager, BackendError> {
    redis_connection(&cfg.redis_url, false).await
}

/// A connection of its own for blocking reads (XREAD/XREADGROUP BLOCK), without a response
/// timeout: a blocked read must not stall, nor be cut short by, other commands.
pub async fn redis_blocking(cfg: &Config) -> Result<redis::aio::ConnectionManager, BackendError> {
    redis_connection(&cfg.redis_url, true).await
}

pub async fn redis_connection(url: &str, blocking: bool) -> Result<redis::aio::ConnectionManager, BackendError> {
    worldland_adapters::redis_conn::connect(url, blocking)
        .await
        .map_err(|e| BackendError::Redis {
            url: url.to_string(),
            source: e,
        })
}

pub fn rabbit_settings(cfg: &Config) -> RabbitSettings {
    RabbitSettings {
        url: cfg.amqp_url.clone(),
        exchange: cfg.exchange.clone(),
        prefetch: cfg.prefetch,
        delivery_limit: cfg.delivery_limit,
    }
}

pub async fn rabbit(cfg: &Config) -> Result<RabbitBus, BackendError> {
    Ok(RabbitBus::connect(rabbit_settings(cfg)).await?)
}

/// The AWS configuration every client is built from: a local `endpoint` (dynalite, moto,
/// LocalStack) or, without one, real AWS from the environment's credentials.
pub async fn aws_config(endpoint: Option<&str>, region: &str) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(region.to_string()));
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Local servers accept any key; this avoids probing the instance metadata service.
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "local",
                "local",
                None,
                None,
                "worldland-local",
            ));
        }
    }
    loader.load().await
}

pub async fn sqs_client(endpoint: Option<&str>, region: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws_config(endpoint, region).await)
}

pub async fn dynamo_client(endpoint: Option<&str>, region: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&aws_config(endpoint, region).await)
}

pub async fn sqs(cfg: &Config) -> worldland_adapters::bus::sqs::SqsBus {
    worldland_adapters::bus::sqs::SqsBus::new(
        sqs_client(cfg.sqs_endpoint.as_deref(), &cfg.aws_region).await,
        cfg.queues(),
        cfg.delivery_limit,
    )
}

/// The configured bus, for publishing.
pub async fn bus(cfg: &Config) -> Result<std::sync::Arc<dyn worldland_core::bus::Bus>, BackendError> {
    Ok(match cfg.bus {
        crate::config::BusKind::Rabbitmq => std::sync::Arc::new(rabbit(cfg).await?),
        crate::config::BusKind::Sqs => std::sync::Arc::new(sqs(cfg).await),
    })
}

pub async fn dynamo(cfg: &Config) -> DynamoStore {
    DynamoStore::new(
        dynamo_client(cfg.dynamodb_endpoint.as_deref(), &cfg.aws_region).await,
        cfg.table_names(),
    )
}

pub async fn store(cfg: &Config) -> Arc<dyn ItemStore> {
    match cfg.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Dynamodb => Arc::new(dynamo(cfg).await),
    }
}

pub async fn cluster(cfg: &Config) -> Result<Arc<dyn Cluster>, BackendError> {
    Ok(match cfg.cluster {
        ClusterKind::Simulated => Arc::new(SimulatedCluster::new(
            cfg.api_endpoint.clone().unwrap_or_else(|| "https://10.0.0.1:6443".into()),
        )),
        ClusterKind::Kube => {
            let client = kube::Client::try_default().await.map_err(BackendError::Kube)?;
            Arc::new(KubeCluster::new(client))
        }
    })
}

/// Answers to providers; connects to Redis on first use.
pub async fn replies(cfg: &Config) -> Result<Arc<RedisReplies>, BackendError> {
    Ok(Arc::new(RedisReplies::lazy(
        cfg.redis_url.clone(),
        cfg.streams(),
        cfg.response_ttl_s,
    )))
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `WORLDLAND_HEALTH_ADDR` until shutdown.
pub async fn serve_health(cfg: &Config, shutdown: &broadcast::Sender<()>) -> Result<(), BackendError> {
    let listener = tokio::net::TcpListener::bind(&cfg.health_addr)
        .await
        .map_err(|source| BackendError::Health {
            addr: cfg.health_addr.clone(),
            source,
        })?;
    tokio::spawn(crate::metrics::serve(listener, shutdown.subscribe()));
    Ok(())
}

/// A broadcast that fires on SIGTERM or Ctrl-C: every loop stops taking new work and finishes
/// what it holds.
pub fn shutdown_on_signal() -> broadcast::Sender<()> {
    let (tx, _) = broadcast::channel(1);
    let sender = tx.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = sender.send(());
    });
    tx
}
