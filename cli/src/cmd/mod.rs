//! One module per `worldland` subcommand: its clap arguments and its `run`.

pub mod audit;
pub mod bench;
pub mod demo;
pub mod infra;
pub mod jobs;
pub mod keys;
pub mod providers;
pub mod up;

use worldland_core::state::{Item, Value};
use worldland_runtime::{telemetry, Config};

/// The configuration from the environment, with logging set up as it says: what every command
/// that talks to the configured backends starts with.
pub fn config_from_env() -> anyhow::Result<Config> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_format);
    Ok(cfg)
}

/// Logs go to stderr at `level` unless `RUST_LOG` says otherwise; then logging is set up.
pub fn init_logging_unless_set(level: &str) {
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", level);
    }
    telemetry::init(Default::default());
}

/// A string attribute of a stored item, `-` when absent.
pub fn attr_str<'a>(item: &'a Item, a: &str) -> &'a str {
    item.get(a).and_then(Value::as_str).unwrap_or("-")
}

/// A numeric attribute of a stored item.
pub fn attr_i64(item: &Item, a: &str) -> Option<i64> {
    item.get(a).and_then(Value::as_i64)
}
