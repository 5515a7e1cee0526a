//! `worldland providers …` (providers as the broker sees them) and `worldland capacity`
//! (per-model GPU totals across the available fleet).

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Subcommand;
use worldland_core::ledger::{Ledger, ModelCounts};
use worldland_core::messages::ProviderState;
use worldland_core::provider::ProviderRecord;
use worldland_core::provider::{nodes, specs};
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
        ProvidersCommand::List { state, json } => list(store.as_ref(), state, json).await,
        ProvidersCommand::Show { id } => show(store.as_ref(), &id).await,
    }
}

/// A provider as `providers list --json` prints it (times in epoch ms; `hb_at` is the broker's
/// receive time of the last heartbeat once joined, `last_heartbeat` the agent's own timestamp of
/// its last unsequenced heartbeat, `hb_seq` the last sequence number recorded).
fn provider_json(r: &ProviderRecord) -> serde_json::Value {
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_millis());
    serde_json::json!({
        "provider_id": r.provider_id, "state": r.state.as_str(), "node_name": r.node_name,
        "gpu_model": r.gpu_model, "gpu_count": r.gpu_count, "price_micros": r.price_micros,
        "hb_at": r.hb_at.timestamp_millis(), "last_heartbeat": ms(r.last_heartbeat), "hb_seq": r.hb_seq,
        "offline_at": ms(r.offline_at), "offline_reason": r.offline_reason, "joined_at": ms(r.joined_at), "active_jobs": r.active_jobs,
        "unschedulable": r.unschedulable, "token_id": r.token_id,
        "client_csr": r.client_csr, "csr_refusal": r.csr_refusal,
    })
}

/// The providers among `items` (node-name reservations share the table) as JSON rows.
fn json_rows(items: &[worldland_core::state::Item]) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows = items
        .iter()
        .filter(|i| !nodes::is_not_a_provider(i))
        .map(|i| ProviderRecord::from_item(i).map(|r| provider_json(&r)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

async fn list(store: &dyn ItemStore, state: Option<String>, json: bool) -> anyhow::Result<()> {
    let items = match &state {
        Some(s) => {
            let st = ProviderState::parse(s).with_context(|| format!("unknown state {s}"))?;
            store.query_by_state(Table::Providers, st.as_str(), None).await?
        }
        None => store.scan(Table::Providers).await?,
    };
    if json {
        println!("{}", serde_json::Value::Array(json_rows(&items)?));
        return Ok(());
    }
    let now = chrono::Utc::now();
    println!(
        "{:<38} {:<10} {:>8} {:<24} {:>5} {:<16}",
        "provider", "state", "hb age", "node", "gpus", "model"
    );
    // Node-name reservations share the table (never the state index): not providers.
    for item in items.iter().filter(|i| !nodes::is_not_a_provider(i)) {
        let r = ProviderRecord::from_item(item)?;
        let age = r
            .last_received()
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
    for line in describe(store, id, chrono::Utc::now()).await? {
        println!("{line}");
    }
    Ok(())
}

/// Who owns the provider's node name: this provider, another (the name is taken), or nobody yet.
fn node_owner_line(r: &ProviderRecord, owner: Option<&str>) -> String {
    match owner {
        Some(o) if o == r.provider_id => "this provider (reserved)".into(),
        Some(o) => format!("provider {o} (the name is taken: this provider cannot be approved or joined on it)"),
        None => "nobody yet (reserved when the provider is approved)".into(),
    }
}

/// Why the provider's join was refused, if it was: its node name is another's, or the recorder
/// refused its node (recorded while it stays approved).
fn join_refused_line(r: &ProviderRecord, owner: Option<&str>) -> String {
    match (owner, &r.unschedulable) {
        (Some(o), _) if o != r.provider_id => format!("node_name_taken: node name {} is reserved by provider {o}", r.node_name),
        (_, Some(why)) if r.state == ProviderState::Approved => why.clone(),
        _ => "-".into(),
    }
}

/// `worldland providers show`, line by line: the provider, the node it owns, and why a join was
/// refused.
async fn describe(store: &dyn ItemStore, id: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<Vec<String>> {
    let Some(r) = ProviderRecord::load(store, id).await? else {
        anyhow::bail!("no provider {id}")
    };
    let owner = nodes::owner(store, &r.node_name).await?;
    // The spec as registered when its item holds this registration's, else the working copy.
    let spec = match specs::load_registered(store, id).await? {
        Some((json, reg)) if reg == r.registration_id => json,
        _ => r.spec_json.clone(),
    };
    let opt = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
    let age = r
        .last_received()
        .map(|t| format!(" ({} s ago)", (now - t).num_seconds()))
        .unwrap_or_default();
    let seq = r.hb_seq.map(|n| format!(", seq {n}")).unwrap_or_default();
    let unschedulable = match (&r.unschedulable, r.state) {
        (Some(why), ProviderState::Approved) => format!("yes: join refused ({why})"),
        (Some(why), _) => format!("yes: {why}"),
        (None, _) => "no".into(),
    };
    Ok(vec![
        format!("provider:        {}", r.provider_id),
        format!("wallet:          {}", r.wallet),
        format!("state:           {}", r.state),
        format!("node name:       {}", r.node_name),
        format!("node owner:      {}", node_owner_line(&r, owner.as_deref())),
        format!("join refused:    {}", join_refused_line(&r, owner.as_deref())),
        format!("gpus:            {} × {}", r.gpu_count, r.gpu_model),
        format!("price/GPU-hour:  {:.6}", r.price_micros as f64 / 1e6),
        format!("registered:      {}", r.registered_at.to_rfc3339()),
        format!("approved:        {}", opt(r.approved_at)),
        format!("joined:          {}", opt(r.joined_at)),
        format!("last heartbeat:  {}{age}{seq}", opt(r.last_received())),
        format!(
            "agent says:      {} ({} active jobs)",
            r.heartbeat_status.as_deref().unwrap_or("-"),
            r.active_jobs
        ),
        format!("offline since:   {}", opt(r.offline_at)),
        format!("offline because: {}", r.offline_reason.as_deref().unwrap_or("-")),
        format!("unschedulable:   {unschedulable}"),
        format!("token id:        {}", r.token_id.as_deref().unwrap_or("-")),
        format!(
            "token created:   {}",
            if r.token_created.is_some() && r.token_created == r.token_id {
                "yes"
            } else {
                "no"
            }
        ),
        format!("token expires:   {}", opt(r.token_expires_at)),
        format!(
            "kubelet cert:    {}",
            r.client_csr
                .as_deref()
                .map(|c| format!("approved (CSR {c})"))
                .unwrap_or_else(|| "none".into())
        ),
        format!("CSR denied:      {}", r.csr_refusal.as_deref().unwrap_or("-")),
        format!("spec:            {spec}"),
        format!("capacity:        {}", r.capacity_json),
    ])
}

/// `worldland capacity`.
pub async fn capacity() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    print_capacity(backends::store(&cfg).await?.as_ref()).await
}

/// Per-model totals across every provider with a ledger, and how many of those are available.
async fn print_capacity(store: &dyn ItemStore) -> anyhow::Result<()> {
    let mut per_model: BTreeMap<String, ModelCounts> = BTreeMap::new();
    let (mut cpu, mut mem) = ((0, 0), (0, 0));
    for item in store.scan(Table::Providers).await?.iter().filter(|i| !nodes::is_not_a_provider(i)) {
        if super::attr_str(item, worldland_core::provider::attr::STATE) != worldland_core::messages::ProviderState::Available.as_str() {
            continue;
        }
        let Some(l) = Ledger::from_item(item) else { continue };
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

#[cfg(test)]
mod tests {
    use super::*;
    use worldland_adapters::state::memory::MemoryStore;
    use worldland_core::provider::{approve, refuse_join, register_pending, reserve_token};
    use worldland_provider_sdk::simulated::SimulatedProvider;

    fn line<'a>(lines: &'a [String], key: &str) -> &'a str {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
    }

    #[tokio::test]
    async fn show_says_which_node_a_provider_owns_and_why_a_join_was_refused() {
        let now = chrono::Utc::now();
        let store = MemoryStore::new();
        let p = SimulatedProvider::new(1, now);
        let id = p.provider_id.as_str();
        register_pending(&p.registration, "1-0", now).apply(&store, id).await.unwrap();
        let node = ProviderRecord::load(&store, id).await.unwrap().unwrap().node_name;
        let lines = describe(&store, id, now).await.unwrap();
        assert_eq!(line(&lines, "node name:"), node);
        assert!(line(&lines, "node owner:").starts_with("nobody yet"));
        assert_eq!(line(&lines, "join refused:"), "-");

        // Reserved for it, approved, then the recorder refuses its node.
        assert_eq!(nodes::claim(&store, &node, id, now).await.unwrap(), nodes::Claim::Ours);
        let exp = now + chrono::Duration::hours(1);
        reserve_token("abcdef", exp, now).apply(&store, id).await.unwrap();
        approve("abcdef", "1-0", exp, now).apply(&store, id).await.unwrap();
        let why = format!("node_owned_by_another_provider: node {node} carries provider \"p2\" as its worldland.io/provider-id");
        refuse_join(&node, &why, now).apply(&store, id).await.unwrap();
        let lines = describe(&store, id, now).await.unwrap();
        assert_eq!(line(&lines, "node owner:"), "this provider (reserved)");
        assert_eq!(line(&lines, "join refused:"), why);
        assert!(line(&lines, "unschedulable:").starts_with("yes: join refused (node_owned_by_another_provider"));

        // A provider whose node name another holds: the name is taken, and said so.
        let q = SimulatedProvider::new(2, now);
        register_pending(&q.registration, "2-0", now)
            .apply(&store, &q.provider_id)
            .await
            .unwrap();
        let node2 = ProviderRecord::load(&store, &q.provider_id).await.unwrap().unwrap().node_name;
        // Another provider holds this provider's node name.
        assert_eq!(
            nodes::claim(&store, &node2, "sim-provider-00009", now).await.unwrap(),
            nodes::Claim::Ours
        );
        assert_eq!(
            nodes::claim(&store, &node2, &q.provider_id, now).await.unwrap(),
            nodes::Claim::TakenBy("sim-provider-00009".into())
        );
        let lines = describe(&store, &q.provider_id, now).await.unwrap();
        assert!(line(&lines, "node owner:").starts_with("provider sim-provider-00009"));
        assert!(line(&lines, "join refused:").starts_with("node_name_taken"));
        // Listing skips the reservations that share the table, as a table and as JSON.
        list(&store, None, false).await.unwrap();
        let rows = json_rows(&store.scan(Table::Providers).await.unwrap()).unwrap();
        let mut ids: Vec<&str> = rows.iter().map(|r| r["provider_id"].as_str().unwrap()).collect();
        ids.sort();
        let mut want = vec![p.provider_id.as_str(), q.provider_id.as_str()];
        want.sort();
        assert_eq!(ids, want, "{rows:?}");
        assert!(rows
            .iter()
            .all(|r| r["state"].as_str().is_some() && r["node_name"].as_str().is_some_and(|n| !n.is_empty()) && r["hb_at"].is_i64()));
    }
}
