//! `worldland-provider-sdk`: install (measure, register, join) and status. Each subcommand lives
//! in its own file under `cmd/` with its arguments; this file parses and dispatches.

mod cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use worldland_provider_sdk::local_state::default_dir;

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
    Install(cmd::install::Args),
    /// Send a signed heartbeat every interval until SIGTERM.
    Run(cmd::run::Args),
    /// Remove the systemd unit.
    Uninstall(cmd::uninstall::Args),
    /// Show what the SDK knows.
    Status,
    /// Print the detected spec as JSON and exit.
    Detect(cmd::detect::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worldland_provider_sdk::process::init_logging();
    let cli = Cli::parse();
    let dir = cli.state_dir.unwrap_or_else(default_dir);
    match cli.command {
        Command::Detect(args) => cmd::detect::run(args),
        Command::Status => cmd::status::run(&dir),
        Command::Run(args) => cmd::run::run(&dir, args).await,
        Command::Uninstall(args) => cmd::uninstall::run(args),
        Command::Install(args) => cmd::install::run(&dir, args).await,
    }
}
