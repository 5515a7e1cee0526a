//! `worldland infra init`: creates the DynamoDB tables and indexes, the bus's queues and
//! dead-letter queues, the bridge's consumer groups, and the broker's signing key file when the
//! configured one is absent (printing its public key). Idempotent. Then, on a Kubernetes
//! cluster, the check of `worldland infra check`.
//!
//! `worldland infra check`: the cluster's RBAC must not make the CSR approver auto-approve
//! bootstrap CSRs (kubeadm's `kubeadm:node-autoapprove-bootstrap`), and the group the broker's
//! tokens carry must be bound to what `kubeadm join` needs (infra/k8s/base/bootstrap.yaml).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use redis_bridge::{BridgeSettings, RedisBridge};
use worldland_adapters::cluster::rbac_audit::audit_cluster;
use worldland_core::bus::Bus;
use worldland_core::cluster::bootstrap::TOKEN_EXTRA_GROUPS;
use worldland_core::cluster::rbac_audit::Finding;
use worldland_runtime::config::{BusKind, ClusterKind};
use worldland_runtime::{backends, Config};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: InfraCommand,
}

#[derive(Subcommand)]
enum InfraCommand {
    /// Create DynamoDB tables and indexes, the RabbitMQ exchange, queues and dead-letter queues,
    /// the bridge's consumer groups, and the broker key file (WORLDLAND_BROKER_KEY_FILE) when
    /// absent. Idempotent. Then, with WORLDLAND_CLUSTER=kube, what `infra check` checks.
    Init,
    /// Check the Kubernetes cluster's RBAC (WORLDLAND_CLUSTER=kube): no binding may make the CSR
    /// approver auto-approve bootstrap CSRs, and the broker's token group must be bound to what
    /// `kubeadm join` needs. Names each offending binding and its fix; exits non-zero on any.
    Check,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        InfraCommand::Init => init().await,
        InfraCommand::Check => check_kubernetes(&super::config_from_env()?).await,
    }
}

async fn init() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    let store = backends::dynamo(&cfg).await;
    store.ensure_tables().await.context("creating DynamoDB tables")?;
    println!(
        "DynamoDB tables ready: {}, {} (indexes {}, {})",
        cfg.providers_table, cfg.jobs_table, cfg.providers_state_index, cfg.providers_placement_index
    );
    let bus = declare_queues(&cfg).await?;
    let conn = backends::redis(&cfg).await?;
    let reader = backends::redis_blocking(&cfg).await?;
    let bridge = RedisBridge::new(conn, reader, bus, BridgeSettings::from_config(&cfg));
    bridge.ensure_groups().await?;
    println!("Redis consumer group ready: {}", cfg.bridge_group);
    broker_key(&cfg)?;
    check_kubernetes(&cfg).await
}

/// The Kubernetes part of `infra check`; nothing to check on the simulated cluster.
async fn check_kubernetes(cfg: &Config) -> anyhow::Result<()> {
    if matches!(cfg.cluster, ClusterKind::Simulated) {
        println!("WORLDLAND_CLUSTER=simulated: no Kubernetes RBAC to check");
        return Ok(());
    }
    let client = backends::kube_client(cfg).await?;
    let timeout = Duration::from_secs(cfg.kube_read_timeout_s);
    let findings = audit_cluster(&client, TOKEN_EXTRA_GROUPS, timeout)
        .await
        .context("listing the cluster's roles and bindings (needs list on roles, clusterroles, rolebindings, clusterrolebindings)")?;
    report(&findings)
}

/// Prints every finding, auto-approvals first; an error when there is any.
fn report(findings: &[Finding]) -> anyhow::Result<()> {
    if findings.is_empty() {
        println!("Kubernetes RBAC: no binding auto-approves bootstrap CSRs; {TOKEN_EXTRA_GROUPS} is bound to what kubeadm join needs");
        return Ok(());
    }
    let (approvals, missing): (Vec<&Finding>, Vec<&Finding>) = findings.iter().partition(|f| f.is_auto_approval());
    for f in approvals.iter().chain(&missing) {
        eprintln!("Kubernetes RBAC: {f}");
    }
    anyhow::bail!(
        "Kubernetes RBAC: {} binding(s) auto-approve bootstrap CSRs, {} join grant(s) missing for {TOKEN_EXTRA_GROUPS}",
        approvals.len(),
        missing.len()
    )
}

/// Creates the configured broker key file when it is absent; prints the public key agents pin.
fn broker_key(cfg: &Config) -> anyhow::Result<()> {
    let Some(path) = &cfg.broker_key_file else {
        println!("WORLDLAND_BROKER_KEY_FILE unset: the workers that answer providers need one (`worldland keys --file PATH`)");
        return Ok(());
    };
    let (public, made) = if path.exists() {
        (backends::load_broker_key(path)?.public(), "ready")
    } else {
        (super::keys::create_key_file(path)?, "created (mode 0600)")
    };
    println!("broker key {made}: {}", path.display());
    println!("broker public key (agents pin it with --broker-key): {public}");
    Ok(())
}

/// Every worker's queue (and its dead-letter queue) on the configured bus.
async fn declare_queues(cfg: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match cfg.bus {
        BusKind::Rabbitmq => {
            let bus = backends::rabbit(cfg).await.context("connecting to RabbitMQ")?;
            for q in cfg.queues() {
                bus.declare(&q).await?;
                println!("RabbitMQ queue ready: {} (+ {})", q.name, q.dead_letter_name());
            }
            Arc::new(bus)
        }
        BusKind::Sqs => {
            let bus = backends::sqs(cfg).await;
            for q in cfg.queues() {
                bus.declare(&q).await?;
                println!("SQS queue ready: {} (+ {})", q.name, q.dead_letter_name());
            }
            Arc::new(bus)
        }
    })
}
