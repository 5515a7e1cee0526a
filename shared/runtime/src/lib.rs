//! The WorldLand provider plane's process glue: configuration, the backends built once per
//! process, the container consumer loop and the Lambda adapter, health and metrics, telemetry.

pub mod backends;
pub mod config;
pub mod container;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod policy;
pub mod readiness;
pub mod retry;
pub mod telemetry;
pub mod wiring;
pub mod worker;

pub use config::Config;
pub use wiring::Backends;
