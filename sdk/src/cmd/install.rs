//! `install`: pin the broker's public key, measure the machine, check that containerd runs the
//! NVIDIA container runtime by default ([`gpu_runtime`]), register, wait for the broker's signed
//! answer, join the cluster with a `kubeadm join` built from its validated fields, then run the
//! heartbeats (in the foreground, or as a systemd unit).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use k256::ecdsa::SigningKey;
use worldland_core::answers::BrokerPublicKey;
use worldland_core::messages::{Capacity, ProviderResponse, Registration, Spec};
use worldland_core::sealed::new_enc_keypair;
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::join::{run_join, JoinPlan};
use worldland_provider_sdk::local_state::LocalState;
use worldland_provider_sdk::{client, detect, gpu_runtime, heartbeat, mining, wallet};

use super::has_systemctl;

#[derive(clap::Args)]
pub struct Args {
    /// File holding the wallet's hex private key (mode 0600).
    #[arg(long, env = "WORLDLAND_WALLET_KEY_FILE")]
    wallet_key: PathBuf,
    #[arg(long, env = "WORLDLAND_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The broker's ed25519 public key (base64, as `worldland keys` prints it), pinned in the
    /// state dir: only answers and commands it signed are believed. Needed on the first install.
    #[arg(long, env = "WORLDLAND_BROKER_PUBKEY")]
    broker_key: Option<String>,
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
}

pub async fn run(dir: &Path, args: Args) -> anyhow::Result<()> {
    let key = wallet::load_wallet_key(&args.wallet_key)?;
    let mut state = LocalState::load(dir)?.unwrap_or_default();
    let broker = state.broker_key(args.broker_key.as_deref())?;
    if state.broker_pubkey.as_deref().is_some_and(|old| old != broker.to_string()) {
        tracing::warn!(%broker, "pinning a new broker key in place of the stored one");
    }
    state.broker_pubkey = Some(broker.to_string());
    let (spec, source) = detect::detect_spec(args.public_ip, &args.disk_dir)?;
    tracing::info!(gpus = spec.total_gpus, ?source, "machine measured");
    // Before registering: a node whose containerd cannot give containers the GPUs would join and
    // advertise none. Refused with what to install and the commands that fix it.
    let runtime = gpu_runtime::assess(&gpu_runtime::SystemProbe)?;
    tracing::info!(runtime = %runtime.runtime, binary = %runtime.binary, from = %runtime.source, "containerd runs the NVIDIA container runtime by default");
    if state.provider_id.is_empty() {
        state.provider_id = uuid::Uuid::new_v4().to_string();
    }
    state.gpu_count = spec.total_gpus;
    let (secret, public) = new_enc_keypair();
    state.enc_secret_key = base64::engine::general_purpose::STANDARD.encode(secret.to_bytes());
    state.wallet_addr = wallet::wallet_address(&key);
    let reg = registration(&state, spec, args.price, public);
    let resp = register(
        dir,
        &mut state,
        &reg,
        &key,
        &broker,
        &args.redis_url,
        Duration::from_secs(args.timeout),
    )
    .await?;
    let join = client::join_from_response(&resp, &secret)?;
    let plan = JoinPlan::from_answer(&resp, &join)?;
    run_join(&plan, args.dry_run).await?;
    println!("{}: {}", resp.status, resp.message);
    if args.dry_run {
        return Ok(());
    }
    state.joined = true;
    state.save(dir)?;
    if args.systemd {
        install_unit(dir, &args.wallet_key, &args.redis_url, &args.unit_dir)
    } else {
        let mining = mining::MiningSettings {
            machine_gpus: state.gpu_count,
            ..Default::default()
        };
        super::run::run_heartbeats_in(Some(dir), &state, key, broker, args.redis_url, Duration::from_secs(30), mining).await
    }
}

/// This machine's registration, offering all its GPUs at `price` and, like the agents, 80% of
/// its CPU and memory (20% kept for the host); join commands are to be sealed to `enc_pubkey`.
fn registration(state: &LocalState, spec: Spec, price: f64, enc_pubkey: String) -> Registration {
    let capacity = Capacity {
        gpu_count: Some(spec.total_gpus),
        cpu_cores: Some((spec.cpu_cores * 4 / 5).max(1)),
        memory_mb: Some(spec.total_memory_mb * 4 / 5),
        gpu_price_per_hour: price,
        cpu_price_per_hour: None,
    };
    Registration {
        provider_id: state.provider_id.clone(),
        wallet_addr: state.wallet_addr.clone(),
        spec,
        capacity,
        mining_config: None,
        agent_version: Some(env!("CARGO_PKG_VERSION").into()),
        timestamp: Some(chrono::Utc::now()),
        enc_pubkey: Some(enc_pubkey),
    }
}

/// Publishes the signed registration and waits (up to `timeout`) for the broker's answer, signed
/// by `broker`, saving the state in `dir` before and after.
async fn register(
    dir: &Path,
    state: &mut LocalState,
    reg: &Registration,
    key: &SigningKey,
    broker: &BrokerPublicKey,
    redis_url: &str,
    timeout: Duration,
) -> anyhow::Result<ProviderResponse> {
    let timeouts = worldland_provider_sdk::RedisTimeouts::default();
    let mut conn = worldland_redis::connect_with(redis_url, timeouts)
        .await
        .context("connecting to Redis")?;
    let streams = StreamNames::default();
    let entry = client::publish_registration(&mut conn, &streams, reg, key).await?;
    state.registration_entry = Some(entry.clone());
    state.status = "pending".into();
    state.save(dir)?;
    println!("registered as {}; waiting for the broker…", state.provider_id);
    let resp = client::wait_for_response_at(redis_url, timeouts, &streams, &state.provider_id, &entry, broker, timeout).await?;
    state.status = resp.status.clone();
    state.message = resp.message.clone();
    state.node_name = resp.node_name.clone();
    state.save(dir)?;
    Ok(resp)
}

/// Writes the systemd unit that runs the heartbeats and, where systemd runs, enables it.
fn install_unit(dir: &Path, wallet_key: &Path, redis_url: &str, unit_dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let exe = std::env::current_exe()?.display().to_string();
    // The URL carries the agent's password: a file only its owner reads, not the unit.
    let env_path = dir.join("sdk.env");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&env_path)
        .and_then(|mut f| f.write_all(heartbeat::environment_file(redis_url).as_bytes()))
        .with_context(|| format!("writing {}", env_path.display()))?;
    let unit = heartbeat::systemd_unit(
        &exe,
        &dir.display().to_string(),
        &std::fs::canonicalize(wallet_key)?.display().to_string(),
        &env_path.display().to_string(),
    );
    std::fs::create_dir_all(unit_dir)?;
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
    Ok(())
}
