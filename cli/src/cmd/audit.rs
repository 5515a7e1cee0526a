//! `worldland audit`: checks the ledger invariants for every provider and every open job; exits
//! non-zero on any violation.

use worldland_core::state::ItemStore;
use worldland_runtime::backends;

pub async fn run() -> anyhow::Result<()> {
    let cfg = super::config_from_env()?;
    if !audit(backends::store(&cfg).await?.as_ref()).await? {
        std::process::exit(1);
    }
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
