//! `worldland providers …` (providers as the broker sees them) and `worldland capacity`
//! (per-model GPU totals across the available fleet).

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Subcommand;
use worldland_core::ledger::{Ledger, ModelCounts};
use worldland_core::messages::ProviderState;
use worldland_core::state::providers::ProviderRecord;
use worldland_core::state::{ItemStore, Table};
use worldland_runtime::backends;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ProvidersCommand,
}

#[derive(Subcommand)]
enum ProvidersCommand {
    List {
        #[arg(long)]
        state: Option<String>,
    },
    Show {
        id: String,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    let store = backends::store(&cfg).await;
    match args.command {
        ProvidersCommand::List { state } => list(store.as_ref(), state).await,
        ProvidersCommand::Show { id } => show(store.as_ref(), &id).await,
    }
}

async fn list(store: &dyn ItemStore, state: Option<String>) -> anyhow::Result<()> {
    let items = match &state {
        Some(s) => {
            let st = ProviderState::parse(s).with_context(|| format!("unknown state {s}"))?;
            store.query_by_state(Table::Providers, st.as_str(), None).await?
        }
        None => store.scan(Table::Providers).await?,
    };
    let now = chrono::Utc::now();
    println!(
        "{:<38} {:<10} {:>8} {:<24} {:>5} {:<16}",
        "provider", "state", "hb age", "node", "gpus", "model"
    );
    for item in items {
        let r = ProviderRecord::from_item(&item)?;
        let age = r
            .last_heartbeat
            .map(|t| format!("{}s", (now - t).num_seconds()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<38} {:<10} {:>8} {:<24} {:>5} {:<16}",
            r.provider_id, r.state, age, r.node_name, r.gpu_count, r.gpu_model
        );
    }
    Ok(())
}

async fn show(store: &dyn ItemStore, id: &str) -> anyhow::Result<()> {
    let Some(r) = ProviderRecord::load(store, id).await? else {
        anyhow::bail!("no provider {id}")
    };
    println!("provider:        {}", r.provider_id);
    println!("wallet:          {}", r.wallet);
    println!("state:           {}", r.state);
    println!("node name:       {}", r.node_name);
    println!("gpus:            {} × {}", r.gpu_count, r.gpu_model);
    println!("price/GPU-hour:  {:.6}", r.price_micros as f64 / 1e6);
    println!("registered:      {}", r.registered_at.to_rfc3339());
    println!(
        "approved:        {}",
        r.approved_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    );
    let opt = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
    println!("joined:          {}", opt(r.joined_at));
    println!("last heartbeat:  {}", opt(r.last_heartbeat));
    println!(
        "agent says:      {} ({} active jobs)",
        r.heartbeat_status.as_deref().unwrap_or("-"),
        r.active_jobs
    );
    println!("offline since:   {}", opt(r.offline_at));
    println!("unschedulable:   {}", r.unschedulable.as_deref().unwrap_or("no"));
    println!("token id:        {}", r.token_id.as_deref().unwrap_or("-"));
    println!(
        "token expires:   {}",
        r.token_expires_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    );
    println!("spec:            {}", r.spec_json);
    println!("capacity:        {}", r.capacity_json);
    Ok(())
}

/// `worldland capacity`.
pub async fn capacity() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    print_capacity(backends::store(&cfg).await.as_ref()).await
}

/// Per-model totals across every provider with a ledger, and how many of those are available.
async fn print_capacity(store: &dyn ItemStore) -> anyhow::Result<()> {
    let mut per_model: BTreeMap<String, ModelCounts> = BTreeMap::new();
    let (mut cpu, mut mem) = ((0, 0), (0, 0));
    for item in store.scan(Table::Providers).await? {
        if super::attr_str(&item, "state") != "available" {
            continue;
        }
        let Some(l) = Ledger::from_item(&item) else { continue };
        for (m, c) in l.models {
            let e = per_model.entry(m).or_default();
            e.total += c.total;
            e.free += c.free;
            e.used += c.used;
            e.mining += c.mining;
        }
        cpu = (cpu.0 + l.cpu_total, cpu.1 + l.cpu_free);
        mem = (mem.0 + l.mem_total, mem.1 + l.mem_free);
    }
    println!("available providers' capacity");
    println!("{:<28} {:>7} {:>7} {:>7} {:>7}", "GPU model", "total", "free", "in use", "mining");
    for (m, c) in &per_model {
        println!("{m:<28} {:>7} {:>7} {:>7} {:>7}", c.total, c.free, c.used, c.mining);
    }
    println!("CPU cores free {} of {}; memory free {} MiB of {}", cpu.1, cpu.0, mem.1, mem.0);
    Ok(())
}
