//! `worldland`: the operator's binary and the composition root. Each subcommand lives in its own
//! file under `cmd/` with its arguments and its `run`; this file parses and dispatches.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "worldland", about = "Operate the WorldLand provider plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole registration path in one process on the embedded default.
    Demo(cmd::demo::Args),
    /// Every worker in one process against the configured backends.
    Up,
    /// Benchmarks (build with --release).
    Bench(cmd::bench::Args),
    /// Infrastructure.
    Infra(cmd::infra::Args),
    /// Create the broker's signing key file and print its public key (agents pin it).
    Keys(cmd::keys::Args),
    /// Providers as the broker sees them.
    Providers(cmd::providers::Args),
    /// Customers' jobs.
    Jobs(cmd::jobs::Args),
    /// Per-model GPU totals across the available fleet.
    Capacity,
    /// Checks the ledger invariants for every provider and every open job; non-zero exit on any
    /// violation.
    Audit(cmd::audit::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => cmd::demo::run(args).await,
        Command::Up => cmd::up::run().await,
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::Infra(args) => cmd::infra::run(args).await,
        Command::Keys(args) => cmd::keys::run(args),
        Command::Providers(args) => cmd::providers::run(args).await,
        Command::Jobs(args) => cmd::jobs::run(args).await,
        Command::Capacity => cmd::providers::capacity().await,
        Command::Audit(args) => cmd::audit::run(args).await,
    }
}
