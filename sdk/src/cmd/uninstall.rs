//! `uninstall`: remove the systemd unit.

use std::path::PathBuf;

use anyhow::Context;
use worldland_provider_sdk::heartbeat;

use super::has_systemctl;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let unit = args.unit_dir.join(heartbeat::UNIT_NAME);
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
    Ok(())
}
