//! The WorldLand provider SDK: measures the machine, signs and publishes its registration to
//! Redis, waits for the broker's signed answer (pinned key: see [`verify`]), opens the sealed
//! join token and joins the cluster with a `kubeadm join` it builds itself ([`join`]).

pub mod client;
pub mod detect;
pub mod gpu_runtime;
pub mod heartbeat;
pub mod join;
pub mod local_state;
pub mod mining;
pub mod process;
pub mod sequence;
pub mod simulated;
pub mod verify;
pub mod wallet;

/// The connect and response timeouts of the SDK's Redis connections (see [`worldland_redis`]).
pub use worldland_redis::RedisTimeouts;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no NVIDIA GPU found on this machine (NVML and nvidia-smi both found none); WorldLand providers need at least one GPU")]
    NoGpu,
    #[error("reading the machine: {0}")]
    Detect(String),
    #[error("wallet key {path}: {why}")]
    Wallet { path: String, why: String },
    #[error("local state in {path}: {why}")]
    State { path: String, why: String },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer from the broker within {0} s")]
    Timeout(u64),
    #[error("the broker refused the registration: {0}")]
    Rejected(String),
    #[error("the answer could not be opened: {0}")]
    Sealed(String),
    #[error("kubeadm join failed: {0}")]
    Join(String),
    #[error("refusing to join: {0}")]
    UnsafeJoin(String),
    #[error("broker key: {0}")]
    BrokerKey(String),
}

pub type Result<T> = std::result::Result<T, Error>;
