//! `worldland jobs …`: customers' jobs, through the bus and the store.

use std::time::Duration;
use worldland_core::job::JobState;

use anyhow::Context as _;
use clap::Subcommand;
use worldland_core::bus::{self, Bus};
use worldland_core::job;
use worldland_core::messages::jobs::{AllocateRequest, ReleaseRequest};
use worldland_core::state::{Item, ItemStore, Table, Value};
use worldland_runtime::backends;

use super::{attr_i64 as n, attr_str as s};

mod workload;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Publishes job.allocate and waits for the answer.
    Allocate {
        #[arg(long)]
        job_id: Option<String>,
        #[arg(long, default_value = "cli")]
        customer: String,
        #[arg(long, default_value_t = 1)]
        gpus: u32,
        #[arg(long, default_value_t = 1)]
        cpu: u32,
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        max_price: Option<f64>,
        #[arg(long)]
        duration_s: Option<u64>,
        /// The OCI image the rental runs, e.g. docker.io/library/python:3.12-slim (a digest allowed).
        #[arg(long)]
        image: String,
        /// The container's entrypoint, one item per flag (`--command python --command -u`); the image's own when absent.
        #[arg(long = "command", allow_hyphen_values = true)]
        command: Vec<String>,
        /// An argument to it, one per flag (`--arg train.py --arg --epochs --arg 3`).
        #[arg(long = "arg", allow_hyphen_values = true)]
        args: Vec<String>,
        /// An environment variable, NAME=VALUE; repeat for more.
        #[arg(long = "env")]
        env: Vec<String>,
        /// A file holding the one OpenSSH public key (ed25519, ECDSA, or RSA of 3072+ bits) let into the rental.
        #[arg(long)]
        ssh_key_file: Option<std::path::PathBuf>,
    },
    /// Publishes job.release and waits until it is closed.
    Release {
        id: String,
        #[arg(long, default_value = "released")]
        reason: String,
    },
    List {
        #[arg(long)]
        state: Option<String>,
        /// One JSON array instead of the table, for scripts.
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    let store = backends::store(&cfg).await?;
    match args.command {
        JobsCommand::Allocate {
            job_id,
            customer,
            gpus,
            cpu,
            memory_mb,
            model,
            max_price,
            duration_s,
            image,
            command,
            args,
            env,
            ssh_key_file,
        } => {
            // Checked before connecting: a bad flag, or a private key, never reaches the bus.
            let workload = workload::from_flags(image, command, args, &env, ssh_key_file.as_deref())?;
            let bus = backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?;
            let job_id = job_id.unwrap_or_else(|| format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
            let req = AllocateRequest {
                job_id,
                customer_id: customer,
                gpu_model: model,
                gpus,
                cpu_cores: cpu,
                memory_mb,
                max_price_per_gpu_hour: max_price,
                duration_s,
                workload,
            };
            allocate(store.as_ref(), &bus, req).await
        }
        JobsCommand::Release { id, reason } => {
            let bus = backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?;
            release(store.as_ref(), &bus, id, reason).await
        }
        JobsCommand::List { state, json } => list(store.as_ref(), state, json).await,
        JobsCommand::Show { id } => show(store.as_ref(), &id).await,
    }
}

/// Waits (bounded) until the job item leaves `pending` (or appears at all).
async fn wait_settled(store: &dyn ItemStore, job_id: &str, done: &[&str]) -> anyhow::Result<Item> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(item) = store.get(Table::Jobs, job_id).await? {
            if done.contains(&s(&item, job::attr::STATE)) {
                return Ok(item);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no answer for {job_id} within 30 s: is the allocator running?"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn allocate(store: &dyn ItemStore, bus: &dyn Bus, req: AllocateRequest) -> anyhow::Result<()> {
    bus::publish(bus, &format!("cli/{}", req.job_id), &req).await?;
    let item = wait_settled(
        store,
        &req.job_id,
        &[JobState::Allocated, JobState::Rejected, JobState::Released, JobState::Cancelled].map(JobState::as_str),
    )
    .await?;
    show_item(&item);
    Ok(())
}

async fn release(store: &dyn ItemStore, bus: &dyn Bus, job_id: String, reason: String) -> anyhow::Result<()> {
    let req = ReleaseRequest {
        job_id: job_id.clone(),
        reason,
    };
    bus::publish(bus, &format!("cli/release/{job_id}"), &req).await?;
    let item = wait_settled(
        store,
        &job_id,
        &[JobState::Released, JobState::Cancelled, JobState::Rejected].map(JobState::as_str),
    )
    .await?;
    show_item(&item);
    Ok(())
}

/// A job as `jobs list --json` prints it (times in epoch ms, cost in micro-units).
fn job_json(item: &Item) -> serde_json::Value {
    let gpus = serde_json::from_str::<serde_json::Value>(s(item, job::attr::ALLOCATION))
        .ok()
        .and_then(|v| v["gpus"].as_u64());
    let text = |a: &str| item.get(a).and_then(worldland_core::state::Value::as_str);
    serde_json::json!({
        "job_id": s(item, "id"), "state": s(item, job::attr::STATE), "provider": text(job::attr::PROVIDER),
        "gpus": gpus, "created_at": n(item, job::attr::CREATED_AT), "allocated_at": n(item, job::attr::ALLOCATED_AT),
        "ended_at": n(item, job::attr::ENDED_AT), "end_reason": text(job::attr::END_REASON),
        "duration_ms": n(item, job::attr::DURATION_MS), "cost_micros": n(item, job::attr::COST_MICROS),
        "rejection": text(job::attr::REJECTION),
        "image": job::workload(s(item, "id"), item).ok().flatten().map(|w| w.image),
    })
}

async fn list(store: &dyn ItemStore, state: Option<String>, json: bool) -> anyhow::Result<()> {
    let keep = |item: &Item| state.as_deref().is_none_or(|st| st == s(item, job::attr::STATE));
    if json {
        let rows: Vec<_> = store.scan(Table::Jobs).await?.iter().filter(|i| keep(i)).map(job_json).collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:<24} {:>5} {:>12} {:>14}",
        "job", "state", "provider", "gpus", "minutes", "cost"
    );
    for item in store.scan(Table::Jobs).await? {
        if state.as_deref().is_some_and(|st| st != s(&item, job::attr::STATE)) {
            continue;
        }
        let gpus = s(&item, job::attr::ALLOCATION);
        let gpus = serde_json::from_str::<serde_json::Value>(gpus)
            .ok()
            .and_then(|v| v["gpus"].as_u64())
            .map(|g| g.to_string())
            .unwrap_or("-".into());
        let minutes = n(&item, job::attr::DURATION_MS)
            .map(|d| format!("{:.1}", d as f64 / 60_000.0))
            .unwrap_or("-".into());
        let cost = n(&item, job::attr::COST_MICROS)
            .map(|c| format!("{:.6}", c as f64 / 1e6))
            .unwrap_or("-".into());
        println!(
            "{:<24} {:<10} {:<24} {:>5} {:>12} {:>14}",
            s(&item, "id"),
            s(&item, job::attr::STATE),
            s(&item, job::attr::PROVIDER),
            gpus,
            minutes,
            cost
        );
    }
    Ok(())
}

/// The request as stored, less its workload (printed apart by [`workload::describe`]: env
/// values may be secrets).
fn request_without_workload(item: &Item) -> String {
    let mut v: serde_json::Value = serde_json::from_str(s(item, job::attr::REQUEST)).unwrap_or_default();
    if let Some(fields) = v.as_object_mut() {
        for k in ["image", "command", "args", "env", "ssh_public_key"] {
            fields.remove(k);
        }
    }
    v.to_string()
}

fn show_item(item: &Item) {
    for (k, v) in item {
        if k == job::attr::REQUEST {
            println!("{k:<18} {}", request_without_workload(item));
            for (field, line) in workload::describe(s(item, "id"), item) {
                println!("{field:<18} {line}");
            }
            continue;
        }
        let shown = match v {
            Value::S(s) => s.clone(),
            Value::N(n) => n.to_string(),
            Value::B(b) => b.to_string(),
            Value::M(m) => format!("{m:?}"),
        };
        println!("{k:<18} {shown}");
    }
}

async fn show(store: &dyn ItemStore, job_id: &str) -> anyhow::Result<()> {
    let item = store.get(Table::Jobs, job_id).await?.with_context(|| format!("no job {job_id}"))?;
    show_item(&item);
    Ok(())
}
