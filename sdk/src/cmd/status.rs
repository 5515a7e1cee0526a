//! `status`: show what the SDK knows.

use std::path::Path;

use worldland_provider_sdk::local_state::LocalState;

pub fn run(dir: &Path) -> anyhow::Result<()> {
    match LocalState::load(dir)? {
        None => println!("not installed (no state in {})", dir.display()),
        Some(s) => {
            println!("provider_id:  {}", s.provider_id);
            println!("wallet:       {}", s.wallet_addr);
            println!("status:       {}", s.status);
            println!("message:      {}", s.message);
            println!("node name:    {}", s.node_name.as_deref().unwrap_or("-"));
            println!("joined:       {}", s.joined);
            println!("broker key:   {}", s.broker_pubkey.as_deref().unwrap_or("- (not pinned)"));
        }
    }
    Ok(())
}
