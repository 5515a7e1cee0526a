//! Builds the configured backends once per process (clients outside any handler).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
#[cfg(feature = "redis")]
use worldland_redis::RedisTimeouts;

use crate::config::{ClusterKind, Config, StoreKind};
use crate::readiness::Readiness;
#[cfg(feature = "rabbit")]
use worldland_adapters::bus::rabbit::{RabbitBus, RabbitSettings};
#[cfg(feature = "kube")]
use worldland_adapters::cluster::kube_api::KubeCluster;
use worldland_adapters::cluster::simulated::SimulatedCluster;
#[cfg(feature = "redis")]
use worldland_adapters::replies::RedisReplies;
#[cfg(feature = "dynamo")]
use worldland_adapters::state::dynamo::DynamoStore;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::answers::BrokerKey;
use worldland_core::cluster::Cluster;
use worldland_core::state::ItemStore;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[cfg(feature = "redis")]
    /// `url` is [`worldland_redis::redacted`]: a password in it never reaches a log line.
    #[error("Redis at {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error(transparent)]
    Bus(#[from] worldland_core::bus::BusError),
    #[cfg(feature = "kube")]
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
    #[error("broker key: {0}")]
    BrokerKey(String),
    /// The configuration asks for a backend this binary was built without (cargo feature).
    #[error("{setting} asks for {what}, but this binary was built without the `{feature}` feature")]
    NotBuilt {
        setting: &'static str,
        what: &'static str,
        feature: &'static str,
    },
}

#[cfg(feature = "redis")]
/// A reconnecting Redis connection for ordinary commands. Commands on one connection are
/// pipelined, so blocking reads must use [`redis_blocking`] instead.
pub async fn redis(cfg: &Config) -> Result<redis::aio::ConnectionManager, BackendError> {
    redis_connection_with(&cfg.redis_url, redis_timeouts(cfg)).await
}

#[cfg(feature = "redis")]
/// A connection of its own for blocking reads (XREAD/XREADGROUP BLOCK `WORLDLAND_BRIDGE_BLOCK_MS`):
/// a blocked read must not stall, nor be cut short by, other commands, so its response timeout is
/// the BLOCK time plus `WORLDLAND_REDIS_RESPONSE_TIMEOUT_MS` — a half-open socket fails the read
/// instead of hanging the bridge.
pub async fn redis_blocking(cfg: &Config) -> Result<redis::aio::ConnectionManager, BackendError> {
    let timeouts = redis_timeouts(cfg).blocking(Duration::from_millis(cfg.bridge_block_ms));
    redis_connection_with(&cfg.redis_url, timeouts).await
}

#[cfg(feature = "redis")]
/// The configured Redis connect and response timeouts.
pub fn redis_timeouts(cfg: &Config) -> RedisTimeouts {
    RedisTimeouts {
        connect: Duration::from_millis(cfg.redis_connect_timeout_ms),
        response: Duration::from_millis(cfg.redis_response_timeout_ms),
    }
}

#[cfg(feature = "redis")]
/// A reconnecting connection to `url` with these timeouts.
pub async fn redis_connection_with(url: &str, timeouts: RedisTimeouts) -> Result<redis::aio::ConnectionManager, BackendError> {
    worldland_redis::connect_with(url, timeouts).await.map_err(|e| BackendError::Redis {
        url: worldland_redis::redacted(url),
        source: e,
    })
}

#[cfg(feature = "rabbit")]
pub fn rabbit_settings(cfg: &Config) -> RabbitSettings {
    RabbitSettings {
        url: cfg.amqp_url.clone(),
        exchange: cfg.exchange.clone(),
        prefetch: cfg.prefetch,
        delivery_limit: cfg.delivery_limit,
        dlq_max_length: cfg.dlq_max_length,
        dlq_ttl: Duration::from_secs(cfg.dlq_ttl_s),
        connect_timeout: Duration::from_millis(cfg.amqp_connect_timeout_ms),
        operation_timeout: Duration::from_millis(cfg.amqp_operation_timeout_ms),
    }
}

#[cfg(feature = "rabbit")]
pub async fn rabbit(cfg: &Config) -> Result<RabbitBus, BackendError> {
    Ok(RabbitBus::connect(rabbit_settings(cfg)).await?)
}

/// Timeouts of every AWS SDK call: the whole operation (retries included) and each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    pub operation: Duration,
    pub attempt: Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        let cfg = Config::defaults();
        aws_timeouts(&cfg)
    }
}

/// The configured AWS SDK timeouts.
pub fn aws_timeouts(cfg: &Config) -> AwsTimeouts {
    AwsTimeouts {
        operation: Duration::from_millis(cfg.aws_operation_timeout_ms),
        attempt: Duration::from_millis(cfg.aws_attempt_timeout_ms),
    }
}

#[cfg(any(feature = "sqs", feature = "dynamo"))]
/// The AWS configuration every client is built from: a local `endpoint` (dynalite, moto,
/// LocalStack) or, without one, real AWS from the environment's credentials; with the default
/// timeouts ([`aws_config_with`] takes others).
pub async fn aws_config(endpoint: Option<&str>, region: &str) -> aws_config::SdkConfig {
    aws_config_with(endpoint, region, AwsTimeouts::default()).await
}

#[cfg(any(feature = "sqs", feature = "dynamo"))]
/// [`aws_config`] with these timeouts: no SDK call hangs on a server that never answers.
pub async fn aws_config_with(endpoint: Option<&str>, region: &str, timeouts: AwsTimeouts) -> aws_config::SdkConfig {
    let timeout_config = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeouts.operation)
        .operation_attempt_timeout(timeouts.attempt)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .timeout_config(timeout_config);
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Local servers accept any key; this avoids probing the instance metadata service.
            loader = loader.credentials_provider(Credentials::new("local", "local", None, None, "worldland-local"));
        }
    }
    loader.load().await
}

#[cfg(feature = "dynamo")]
use aws_sdk_dynamodb::config::Credentials;
#[cfg(all(feature = "sqs", not(feature = "dynamo")))]
use aws_sdk_sqs::config::Credentials;

#[cfg(feature = "sqs")]
pub async fn sqs_client(endpoint: Option<&str>, region: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws_config(endpoint, region).await)
}

#[cfg(feature = "dynamo")]
pub async fn dynamo_client(endpoint: Option<&str>, region: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&aws_config(endpoint, region).await)
}

#[cfg(feature = "sqs")]
pub async fn sqs(cfg: &Config) -> worldland_adapters::bus::sqs::SqsBus {
    let sdk = aws_config_with(cfg.sqs_endpoint.as_deref(), &cfg.aws_region, aws_timeouts(cfg)).await;
    worldland_adapters::bus::sqs::SqsBus::new(aws_sdk_sqs::Client::new(&sdk), cfg.queues(), cfg.delivery_limit)
        .with_dead_letter_retention(Duration::from_secs(cfg.dlq_ttl_s))
}

/// The configured bus, for publishing.
pub async fn bus(cfg: &Config) -> Result<std::sync::Arc<dyn worldland_core::bus::Bus>, BackendError> {
    use crate::config::BusKind;
    match cfg.bus {
        #[cfg(feature = "rabbit")]
        BusKind::Rabbitmq => Ok(std::sync::Arc::new(rabbit(cfg).await?)),
        #[cfg(not(feature = "rabbit"))]
        BusKind::Rabbitmq => Err(BackendError::NotBuilt {
            setting: "WORLDLAND_BUS",
            what: "RabbitMQ",
            feature: "rabbit",
        }),
        #[cfg(feature = "sqs")]
        BusKind::Sqs => Ok(std::sync::Arc::new(sqs(cfg).await)),
        #[cfg(not(feature = "sqs"))]
        BusKind::Sqs => Err(BackendError::NotBuilt {
            setting: "WORLDLAND_BUS",
            what: "SQS",
            feature: "sqs",
        }),
    }
}

#[cfg(feature = "dynamo")]
pub async fn dynamo(cfg: &Config) -> DynamoStore {
    let sdk = aws_config_with(cfg.dynamodb_endpoint.as_deref(), &cfg.aws_region, aws_timeouts(cfg)).await;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), cfg.table_names())
}

pub async fn store(cfg: &Config) -> Result<Arc<dyn ItemStore>, BackendError> {
    Ok(match cfg.store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        #[cfg(feature = "dynamo")]
        StoreKind::Dynamodb => Arc::new(dynamo(cfg).await),
        #[cfg(not(feature = "dynamo"))]
        StoreKind::Dynamodb => {
            return Err(BackendError::NotBuilt {
                setting: "WORLDLAND_STORE",
                what: "DynamoDB",
                feature: "dynamo",
            })
        }
    })
}

pub async fn cluster(cfg: &Config) -> Result<Arc<dyn Cluster>, BackendError> {
    Ok(match cfg.cluster {
        ClusterKind::Simulated => Arc::new(SimulatedCluster::new(
            cfg.api_endpoint.clone().unwrap_or_else(|| "https://10.0.0.1:6443".into()),
        )),
        #[cfg(not(feature = "kube"))]
        ClusterKind::Kube => {
            return Err(BackendError::NotBuilt {
                setting: "WORLDLAND_CLUSTER",
                what: "Kubernetes",
                feature: "kube",
            })
        }
        #[cfg(feature = "kube")]
        ClusterKind::Kube => {
            let mut config = kube::Config::infer()
                .await
                .map_err(|e| BackendError::Kube(kube::Error::InferConfig(e)))?;
            set_kube_timeouts(&mut config, cfg);
            let client = kube::Client::try_from(config).map_err(BackendError::Kube)?;
            Arc::new(KubeCluster::new(client))
        }
    })
}

/// A Kubernetes client as the workers make one (kubeconfig or in-cluster, with the configured
/// timeouts), for callers that need more than the [`Cluster`] port (`worldland infra check`).
#[cfg(feature = "kube")]
pub async fn kube_client(cfg: &Config) -> Result<kube::Client, BackendError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| BackendError::Kube(kube::Error::InferConfig(e)))?;
    set_kube_timeouts(&mut config, cfg);
    kube::Client::try_from(config).map_err(BackendError::Kube)
}

/// The configured Kubernetes API timeouts: connecting, and reading an answer (a watch is not
/// used, so no request legitimately waits longer).
#[cfg(feature = "kube")]
pub fn set_kube_timeouts(config: &mut kube::Config, cfg: &Config) {
    config.connect_timeout = Some(Duration::from_secs(cfg.kube_connect_timeout_s));
    config.read_timeout = Some(Duration::from_secs(cfg.kube_read_timeout_s));
    config.write_timeout = Some(Duration::from_secs(cfg.kube_read_timeout_s));
}

/// Reads the broker's signing key from its file (`worldland keys` writes it, mode 0600).
pub fn load_broker_key(path: &std::path::Path) -> Result<BrokerKey, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BackendError::BrokerKey(format!(
            "cannot read WORLDLAND_BROKER_KEY_FILE {}: {e} (create one with `worldland keys --file {}`)",
            path.display(),
            path.display()
        ))
    })?;
    BrokerKey::from_file_text(&text).map_err(|e| BackendError::BrokerKey(format!("WORLDLAND_BROKER_KEY_FILE {}: {e}", path.display())))
}

/// The key the broker signs its answers with: the configured file's. Unset, it is an error —
/// agents pin the broker's public key and would ignore every answer — except on the simulated
/// cluster (the embedded default, tests), where a fresh ephemeral key is made and logged.
pub fn broker_key(cfg: &Config) -> Result<BrokerKey, BackendError> {
    match (&cfg.broker_key_file, cfg.cluster) {
        (Some(path), _) => load_broker_key(path),
        (None, ClusterKind::Simulated) => {
            let key = BrokerKey::generate();
            tracing::warn!(
                public_key = %key.public(),
                "WORLDLAND_BROKER_KEY_FILE unset: signing answers with an ephemeral key (simulated cluster only); agents pinned to another key ignore them"
            );
            Ok(key)
        }
        (None, ClusterKind::Kube) => Err(BackendError::BrokerKey(
            "WORLDLAND_BROKER_KEY_FILE is required: every answer to providers is signed with the broker key, which agents pin (create one with `worldland keys --file PATH` or `worldland infra init`)".into(),
        )),
    }
}

/// Answers to providers, each signed with the broker key ([`broker_key`]); connects to Redis on
/// first use.
#[cfg(feature = "redis")]
pub async fn replies(cfg: &Config) -> Result<Arc<RedisReplies>, BackendError> {
    Ok(Arc::new(
        RedisReplies::lazy(cfg.redis_url.clone(), cfg.streams(), cfg.response_ttl_s, broker_key(cfg)?)
            .with_max_len(cfg.response_stream_maxlen)
            .with_timeouts(redis_timeouts(cfg)),
    ))
}

/// Serves `/healthz`, `/readyz` (for `readiness`) and `/metrics` on `WORLDLAND_HEALTH_ADDR` until
/// shutdown.
pub async fn serve_health(cfg: &Config, readiness: Readiness, shutdown: &broadcast::Sender<()>) -> Result<(), BackendError> {
    let listener = tokio::net::TcpListener::bind(&cfg.health_addr)
        .await
        .map_err(|source| BackendError::Health {
            addr: cfg.health_addr.clone(),
            source,
        })?;
    tokio::spawn(crate::metrics::serve(listener, readiness, shutdown.subscribe()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    /// A Redis URL carries its password (`redis://user:password@host`): a connection error,
    /// which ends up in a log line, names the server without it.
    #[tokio::test]
    async fn a_redis_error_never_shows_the_password_of_its_url() {
        let timeouts = RedisTimeouts {
            connect: Duration::from_millis(500),
            response: Duration::from_millis(500),
        };
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let err = redis_connection_with("redis://broker:s3cret-pw@127.0.0.1:1", timeouts)
            .await
            .expect_err("nothing listens on port 1");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
    }

    #[test]
    fn the_broker_key_comes_from_its_file_and_is_required_on_a_real_cluster() {
        let dir = std::env::temp_dir().join(format!("wl-broker-key-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broker.key");
        let key = BrokerKey::generate();
        std::fs::write(&path, key.to_file_text()).unwrap();
        let file = path.to_str().unwrap();

        let loaded = broker_key(&cfg(&[("WORLDLAND_BROKER_KEY_FILE", file)])).unwrap();
        assert_eq!(loaded.public(), key.public());
        // A real cluster without a key file: a clear startup error naming the variable.
        let err = broker_key(&cfg(&[("WORLDLAND_CLUSTER", "kube")])).unwrap_err().to_string();
        assert!(err.contains("WORLDLAND_BROKER_KEY_FILE is required"), "{err}");
        // The simulated cluster makes an ephemeral key.
        assert!(broker_key(&cfg(&[("WORLDLAND_CLUSTER", "simulated")])).is_ok());
        // A configured file that is missing or holds no key is an error, whatever the cluster.
        let missing = dir.join("absent.key");
        let err = broker_key(&cfg(&[
            ("WORLDLAND_CLUSTER", "simulated"),
            ("WORLDLAND_BROKER_KEY_FILE", missing.to_str().unwrap()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot read") && err.contains("absent.key"), "{err}");
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(broker_key(&cfg(&[("WORLDLAND_BROKER_KEY_FILE", file)])).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
