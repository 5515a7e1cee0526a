//! `worldland-provider-sdk`: install (measure, register, join) and status.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::{Parser, Subcommand};
use worldland_core::messages::{Capacity, Registration};
use worldland_core::sealed::new_enc_keypair;
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::local_state::{default_dir, LocalState};
use worldland_provider_sdk::{client, detect, heartbeat, mining, wallet};

#[derive(Parser)]
#[command(name = "worldland-provider-sdk", about = "Join this GPU machine to the WorldLand network")]
struct Cli {
    /// Where the SDK keeps its state.
    #[arg(long, global = true, env = "WORLDLAND_SDK_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the machine, register, and join the cluster.
    Install {
        /// File holding the wallet's hex private key (mode 0600).
        #[arg(long, env = "WORLDLAND_WALLET_KEY_FILE")]
        wallet_key: PathBuf,
        #[arg(long, env = "WORLDLAND_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// This machine's public IP (detected when absent).
        #[arg(long)]
        public_ip: Option<String>,
        /// Price per GPU-hour, in WL.
        #[arg(long, default_value_t = 0.5)]
        price: f64,
        /// Print the join command instead of running it.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for the broker's answer.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Directory whose disk is offered.
        #[arg(long, default_value = "/")]
        disk_dir: String,
        /// After joining, install a systemd unit that runs the heartbeats (instead of running
        /// them in the foreground).
        #[arg(long)]
        systemd: bool,
        /// Where the unit goes.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Send a signed heartbeat every interval until SIGTERM.
    Run {
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
    },
    /// Remove the systemd unit.
    Uninstall {
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
    /// Show what the SDK knows.
    Status,
    /// Print the detected spec as JSON and exit.
    Detect {
        #[arg(long)]
        public_ip: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worldland_provider_sdk::process::init_logging();
    let cli = Cli::parse();
    let dir = cli.state_dir.unwrap_or_else(default_dir);
    match cli.command {
        Command::Detect { public_ip } => {
            let (spec, source) = detect::detect_spec(public_ip, "/")?;
            eprintln!("GPUs found through {source:?}");
            println!("{}", serde_json::to_string_pretty(&spec)?);
        }
        Command::Status => match LocalState::load(&dir)? {
            None => println!("not installed (no state in {})", dir.display()),
            Some(s) => {
                println!("provider_id:  {}", s.provider_id);
                println!("wallet:       {}", s.wallet_addr);
                println!("status:       {}", s.status);
                println!("message:      {}", s.message);
                println!("node name:    {}", s.node_name.as_deref().unwrap_or("-"));
                println!("joined:       {}", s.joined);
            }
        },
        Command::Run {
            wallet_key,
            redis_url,
            interval,
            mining_stop_cmd,
            mining_resume_cmd,
            dry_run,
        } => {
            let key = wallet::load_wallet_key(&wallet_key)?;
            let state = LocalState::load(&dir)?.context("not installed: run `install` first")?;
            let mining = mining::MiningSettings {
                stop_cmd: mining_stop_cmd,
                resume_cmd: mining_resume_cmd,
                dry_run,
            };
            run_heartbeats(&state, key, redis_url, Duration::from_secs(interval), mining).await?;
        }
        Command::Uninstall { unit_dir } => {
            let unit = unit_dir.join(heartbeat::UNIT_NAME);
            if has_systemctl() {
                let _ = std::process::Command::new("systemctl")
                    .args(["disable", "--now", heartbeat::UNIT_NAME])
                    .status();
            }
            match std::fs::remove_file(&unit) {
                Ok(()) => println!("removed {}", unit.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("no unit at {}", unit.display())
                }
                Err(e) => return Err(e).with_context(|| format!("removing {}", unit.display())),
            }
            if has_systemctl() {
                let _ = std::process::Command::new("systemctl").arg("daemon-reload").status();
            }
        }
        Command::Install {
            wallet_key,
            redis_url,
            public_ip,
            price,
            dry_run,
            timeout,
            disk_dir,
            systemd,
            unit_dir,
        } => {
            let key = wallet::load_wallet_key(&wallet_key)?;
            let (spec, source) = detect::detect_spec(public_ip, &disk_dir)?;
            tracing::info!(gpus = spec.total_gpus, ?source, "machine measured");
            let mut state = LocalState::load(&dir)?.unwrap_or_default();
            if state.provider_id.is_empty() {
                state.provider_id = uuid::Uuid::new_v4().to_string();
            }
            let (secret, public) = new_enc_keypair();
            state.enc_secret_key = base64::engine::general_purpose::STANDARD.encode(secret.to_bytes());
            state.wallet_addr = wallet::wallet_address(&key);
            // Like the agents: keep 20% of CPU and memory for the host.
            let capacity = Capacity {
                gpu_count: Some(spec.total_gpus),
                cpu_cores: Some((spec.cpu_cores * 4 / 5).max(1)),
                memory_mb: Some(spec.total_memory_mb * 4 / 5),
                gpu_price_per_hour: price,
                cpu_price_per_hour: None,
            };
            let reg = Registration {
                provider_id: state.provider_id.clone(),
                wallet_addr: state.wallet_addr.clone(),
                spec,
                capacity,
                mining_config: None,
                agent_version: Some(env!("CARGO_PKG_VERSION").into()),
                timestamp: Some(chrono::Utc::now()),
                enc_pubkey: Some(public),
            };
            let mut conn = worldland_provider_sdk::redis_conn::connect(&redis_url, false)
                .await
                .context("connecting to Redis")?;
            let mut reader = worldland_provider_sdk::redis_conn::connect(&redis_url, true)
                .await
                .context("connecting to Redis")?;
            let streams = StreamNames::default();
            let entry = client::publish_registration(&mut conn, &streams, &reg, &key).await?;
            state.registration_entry = Some(entry.clone());
            state.status = "pending".into();
            state.save(&dir)?;
            println!("registered as {}; waiting for the broker…", state.provider_id);
            let resp = client::wait_for_response(&mut reader, &streams, &state.provider_id, &entry, Duration::from_secs(timeout)).await?;
            state.status = resp.status.clone();
            state.message = resp.message.clone();
            state.node_name = resp.node_name.clone();
            state.save(&dir)?;
            let join = client::join_from_response(&resp, &secret)?;
            client::run_join(&join, dry_run).await?;
            println!("{}: {}", resp.status, resp.message);
            if dry_run {
                return Ok(());
            }
            state.joined = true;
            state.save(&dir)?;
            if systemd {
                let exe = std::env::current_exe()?.display().to_string();
                let unit = heartbeat::systemd_unit(
                    &exe,
                    &dir.display().to_string(),
                    &std::fs::canonicalize(&wallet_key)?.display().to_string(),
                    &redis_url,
                );
                std::fs::create_dir_all(&unit_dir)?;
                let path = unit_dir.join(heartbeat::UNIT_NAME);
                std::fs::write(&path, unit).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
                if has_systemctl() {
                    let ok = std::process::Command::new("systemctl").arg("daemon-reload").status()?.success()
                        && std::process::Command::new("systemctl")
                            .args(["enable", "--now", heartbeat::UNIT_NAME])
                            .status()?
                            .success();
                    anyhow::ensure!(ok, "systemctl could not enable {}", heartbeat::UNIT_NAME);
                    println!("enabled {}", heartbeat::UNIT_NAME);
                }
            } else {
                run_heartbeats(&state, key, redis_url, Duration::from_secs(30), mining::MiningSettings::default()).await?;
            }
        }
    }
    Ok(())
}

fn has_systemctl() -> bool {
    std::process::Command::new("systemctl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Heartbeats and the broker's mining commands, side by side, until SIGTERM.
async fn run_heartbeats(
    state: &LocalState,
    key: k256::ecdsa::SigningKey,
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
    };
    let shutdown = worldland_provider_sdk::process::shutdown_on_signal();
    let mut probe = heartbeat::UsageProbe::default();
    println!("sending a heartbeat every {} s; stop with SIGTERM", interval.as_secs());
    let commands = tokio::spawn(mining::run_commands(
        redis_url,
        StreamNames::default(),
        state.provider_id.clone(),
        key.clone(),
        mining,
        shutdown.subscribe(),
    ));
    heartbeat::run_heartbeats(settings, key, move || probe.sample(), shutdown.subscribe()).await;
    let obeyed = commands.await.unwrap_or(0);
    tracing::info!(obeyed, "mining commands handled");
    Ok(())
}
