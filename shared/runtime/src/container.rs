//! The container entry point every worker's `main.rs` calls: configuration, logging, the health
//! and metrics endpoint (always served), the configured bus (`WORLDLAND_BUS`), the worker, and a
//! graceful stop on SIGTERM or Ctrl-C.

use std::future::Future;
use std::process::ExitCode;

use worldland_core::BoxError;

use crate::backends::{self, BackendError};
use crate::config::{Config, ConfigError};
use crate::policy::report;
use crate::readiness::Readiness;
use crate::wiring::Backends;
use crate::worker::{run_worker, Worker};

/// Why a worker process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{worker} stopped: {source}")]
    Worker {
        worker: &'static str,
        #[source]
        source: BoxError,
    },
}

/// Runs the worker that `factory` builds from the process's backends until SIGTERM; the
/// process's exit code.
pub fn main<F, Fut>(factory: F) -> ExitCode
where
    F: FnOnce(Backends) -> Fut,
    Fut: Future<Output = Result<Worker, BackendError>>,
{
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(EntryError::Runtime)
        .and_then(|rt| rt.block_on(run(factory)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %report(&e), "worker failed");
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// [`main`] inside a runtime.
pub async fn run<F, Fut>(factory: F) -> Result<(), EntryError>
where
    F: FnOnce(Backends) -> Fut,
    Fut: Future<Output = Result<Worker, BackendError>>,
{
    let cfg = Config::from_env()?;
    crate::telemetry::init(cfg.log_format);
    let shutdown = worldland_redis::shutdown_on_signal();
    // Liveness answers from the start; readiness once the worker consumes.
    let readiness = Readiness::default();
    let ready = readiness.part();
    backends::serve_health(&cfg, readiness, &shutdown).await?;
    let bus = backends::bus(&cfg).await?;
    let worker: Worker = factory(Backends::new(cfg.clone(), bus.clone())).await?;
    let name = worker.name();
    tracing::info!(worker = name, bus = ?cfg.bus, "starting");
    run_worker(worker, bus, &cfg, ready, shutdown.subscribe())
        .await
        .map_err(|source| EntryError::Worker { worker: name, source })
}
