//! `worldland audit`: checks the ledger invariants for every provider and every open job; exits
//! non-zero on any violation. `--repair` first gives back orphan allocation entries (a job
//! allocated elsewhere or settled), as the sweeper's reconcile pass does.

use worldland_core::state::{ItemStore, Table, Value, KEY_ATTR};
use worldland_runtime::backends;

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Give back orphan allocation entries before checking.
    #[arg(long)]
    pub repair: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    let store = backends::store(&cfg).await?;
    if args.repair {
        repair(store.as_ref()).await?;
    }
    if !audit(store.as_ref()).await? {
        std::process::exit(1);
    }
    Ok(())
}

/// Gives back every orphan entry, printing each.
async fn repair(store: &dyn ItemStore) -> anyhow::Result<()> {
    let mut n = 0;
    for p in store.scan(Table::Providers).await? {
        if worldland_core::provider::nodes::is_not_a_provider(&p) {
            continue;
        }
        let Some(id) = p.get(KEY_ATTR).and_then(Value::as_str) else {
            continue;
        };
        for job in worldland_core::job::give_back_orphans(store, id).await? {
            println!("REPAIRED: provider {id}: gave back the orphan entry of job {job}");
            n += 1;
        }
    }
    println!("repair: {n} orphan entr{} given back", if n == 1 { "y" } else { "ies" });
    Ok(())
}

/// Prints every violation and the count; true when there are none.
async fn audit(store: &dyn ItemStore) -> anyhow::Result<bool> {
    let violations = worldland_core::job::audit(store).await?;
    for v in &violations {
        println!("VIOLATION: {v}");
    }
    println!("audit: {} violation(s)", violations.len());
    Ok(violations.is_empty())
}
