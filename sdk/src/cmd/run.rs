//! `run`: send a signed heartbeat every interval, and obey the broker's mining commands (those
//! signed by the pinned broker key), until SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::local_state::LocalState;
use worldland_provider_sdk::{detect, heartbeat, mining, wallet};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, env = "WORLDLAND_WALLET_KEY_FILE")]
    wallet_key: PathBuf,
    #[arg(long, env = "WORLDLAND_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Run on `mining.stop` ({gpus}, {model}, {job_id} are filled in; no shell).
    #[arg(long, env = "WORLDLAND_MINING_STOP_CMD")]
    mining_stop_cmd: Option<String>,
    /// Run on `mining.resume`.
    #[arg(long, env = "WORLDLAND_MINING_RESUME_CMD")]
    mining_resume_cmd: Option<String>,
    /// Log the mining commands instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// The broker's public key; the one pinned at install when absent.
    #[arg(long, env = "WORLDLAND_BROKER_PUBKEY")]
    broker_key: Option<String>,
}

pub async fn run(dir: &Path, args: Args) -> anyhow::Result<()> {
    let key = wallet::load_wallet_key(&args.wallet_key)?;
    let state = LocalState::load(dir)?.context("not installed: run `install` first")?;
    let broker = state.broker_key(args.broker_key.as_deref())?;
    let mining = mining::MiningSettings {
        stop_cmd: args.mining_stop_cmd,
        resume_cmd: args.mining_resume_cmd,
        dry_run: args.dry_run,
        // A state from before the count was kept: count the GPUs now.
        machine_gpus: match state.gpu_count {
            0 => detect::detect_gpus().map(|(gpus, _)| gpus.len() as u32).unwrap_or(0),
            n => n,
        },
        ..Default::default()
    };
    let interval = Duration::from_secs(args.interval);
    run_heartbeats_in(Some(dir), &state, key, broker, args.redis_url, interval, mining).await
}

/// Heartbeats and the broker's mining commands, side by side, until SIGTERM. The commands are
/// read on from the cursor saved in `dir` (the state dir), which is kept up to date there.
pub async fn run_heartbeats_in(
    dir: Option<&Path>,
    state: &LocalState,
    key: k256::ecdsa::SigningKey,
    broker: worldland_core::answers::BrokerPublicKey,
    redis_url: String,
    interval: Duration,
    mining: mining::MiningSettings,
) -> anyhow::Result<()> {
    let node_name = state
        .node_name
        .clone()
        .context("no node name yet: the broker has not approved this provider")?;
    let settings = heartbeat::HeartbeatSettings {
        redis_url: redis_url.clone(),
        streams: StreamNames::default(),
        provider_id: state.provider_id.clone(),
        node_name,
        interval,
        timeouts: Default::default(),
        state_dir: dir.map(Path::to_path_buf),
    };
    let shutdown = worldland_redis::shutdown_on_signal();
    let mut probe = heartbeat::UsageProbe::default();
    println!("sending a heartbeat every {} s; stop with SIGTERM", interval.as_secs());
    let commands = tokio::spawn(mining::run_commands_from(
        redis_url,
        StreamNames::default(),
        state.provider_id.clone(),
        key.clone(),
        broker,
        mining,
        mining::CommandCursor::resume(state, dir),
        shutdown.subscribe(),
    ));
    heartbeat::run_heartbeats(settings, key, move || probe.sample(), shutdown.subscribe()).await;
    let obeyed = commands.await.unwrap_or(0);
    tracing::info!(obeyed, "mining commands handled");
    Ok(())
}
