//! `worldland bench …`: benchmarks. Build with `--release` for figures worth quoting.

mod allocate;
mod coldstart;
mod heartbeat;

use clap::Subcommand;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Each Lambda binary's init time (process start → first request for an event) and size.
    Coldstart {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Allocate+release pairs: one core, and contention (many allocators, few providers), on
    /// the embedded store and on DynamoDB (dynalite) when an endpoint is given.
    Allocate {
        #[arg(long, default_value_t = 50_000)]
        pairs: usize,
        /// DynamoDB-compatible endpoint (dynalite); without one the DynamoDB rows are skipped.
        #[arg(long, env = "WORLDLAND_DYNAMODB_ENDPOINT")]
        dynamodb_endpoint: Option<String>,
        #[arg(long, default_value_t = 2_000)]
        dynamodb_pairs: usize,
        #[arg(long)]
        json: bool,
    },
    /// The heartbeat path: (a) embedded, one core; (b) through Redis and RabbitMQ.
    Heartbeat {
        /// Simulated providers for (a).
        #[arg(long, default_value_t = 100_000)]
        providers: usize,
        /// Heartbeats for (b).
        #[arg(long, default_value_t = 5_000)]
        through_brokers: usize,
        /// Skip (b), which needs Redis and RabbitMQ.
        #[arg(long)]
        embedded_only: bool,
        /// Skip (a): only the path through Redis and RabbitMQ.
        #[arg(long, conflicts_with = "embedded_only")]
        brokers_only: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Coldstart { runs, json } => {
            let rows = coldstart::coldstart(runs).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                coldstart::print_coldstart(&rows);
            }
        }
        BenchCommand::Allocate {
            pairs,
            dynamodb_endpoint,
            dynamodb_pairs,
            json,
        } => {
            super::init_logging_unless_set("error");
            allocate::rows_for_allocate(pairs, dynamodb_endpoint, dynamodb_pairs, json).await?;
        }
        BenchCommand::Heartbeat {
            providers,
            through_brokers,
            embedded_only,
            brokers_only,
            json,
        } => {
            super::init_logging_unless_set("error");
            heartbeat::run(providers, through_brokers, embedded_only, brokers_only, json).await?;
        }
    }
    Ok(())
}

/// The build the figures come from, for each report's title.
fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "DEBUG build — use --release for real figures"
    } else {
        "release build"
    }
}
