//! `worldland bench …`: benchmarks. Build with `--release` for figures worth quoting.

mod allocate;
mod coldstart;
mod cost;
mod fleet;
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
    /// A large fleet on the embedded store: memory per provider, one sweep with a share stale
    /// (and the index items it reads), one placement over the fleet, and the DynamoDB bill.
    Fleet {
        #[arg(long, default_value_t = 1_000_000)]
        providers: usize,
        /// Share of the fleet stale at each sweep.
        #[arg(long, default_value_t = 0.01)]
        stale_share: f64,
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
        BenchCommand::Fleet {
            providers,
            stale_share,
            json,
        } => {
            super::init_logging_unless_set("error");
            let figures = fleet::fleet(providers, stale_share).await?;
            if json {
                println!("{}", serde_json::to_string(&figures)?);
            } else {
                fleet::print_fleet(&figures);
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
