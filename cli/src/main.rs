//! `worldland`: the operator's binary and the composition root.

mod bench;
mod demo;
mod jobs_cmd;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use redis_bridge::{BridgeSettings, RedisBridge};
use worldland_core::bus::{Bus, QueueSpec};
use worldland_core::messages::ProviderState;
use worldland_core::state::providers::ProviderRecord;
use worldland_core::state::{ItemStore, Table};
use worldland_core::worker::Handler;
use worldland_runtime::worker::run_consumer;
use worldland_runtime::{backends, telemetry, Config};

#[derive(Parser)]
#[command(name = "worldland", about = "Operate the WorldLand provider plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole registration path in one process on the embedded default.
    Demo {
        #[arg(long, default_value_t = 50)]
        providers: usize,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// Skip the lifecycle phase (heartbeats, offline, recovery).
        #[arg(long)]
        no_lifecycle: bool,
    },
    /// Every worker in one process against the configured backends.
    Up,
    /// Benchmarks (build with --release).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Infrastructure.
    Infra {
        #[command(subcommand)]
        command: InfraCommand,
    },
    /// Providers as the broker sees them.
    Providers {
        #[command(subcommand)]
        command: ProvidersCommand,
    },
    /// Customers' jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Per-model GPU totals across the available fleet.
    Capacity,
    /// Checks the ledger invariants for every provider and every open job; non-zero exit on any
    /// violation.
    Audit,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Publishes job.allocate and waits for the answer.
    Allocate {
        #[arg(long)]
        job_id: Option<String>,
        #[arg(long, default_value = "cli")]
        customer: String,
        #[arg(long, default_value_t = 1)]
        gpus: u32,
        #[arg(long, default_value_t = 1)]
        cpu: u32,
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        max_price: Option<f64>,
        #[arg(long)]
        duration_s: Option<u64>,
    },
    /// Publishes job.release and waits until it is closed.
    Release {
        id: String,
        #[arg(long, default_value = "released")]
        reason: String,
    },
    List {
        #[arg(long)]
        state: Option<String>,
    },
    Show {
        id: String,
    },
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
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum InfraCommand {
    /// Create DynamoDB tables and indexes, the RabbitMQ exchange, queues and dead-letter queues,
    /// and the bridge's consumer groups. Idempotent.
    Init,
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

/// Every worker's queue, for `infra init` and `up`.
fn worker_queues(cfg: &Config) -> Vec<QueueSpec> {
    cfg.queues()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            providers,
            json,
            timeout_s,
            no_lifecycle,
        } => {
            // Logs go to stderr; by default only warnings (the simulated-cluster notice and each
            // refusal with its reason), so the table stays readable.
            if std::env::var_os("RUST_LOG").is_none() {
                std::env::set_var("RUST_LOG", if json { "error" } else { "warn" });
            }
            telemetry::init(Default::default());
            let summary = demo::run(demo::DemoOptions {
                providers,
                lifecycle: !no_lifecycle,
                show_progress: !json,
                timeout: Duration::from_secs(timeout_s),
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                demo::print_table(&summary);
            }
            if !summary.ok() {
                std::process::exit(1);
            }
        }
        Command::Bench {
            command: BenchCommand::Coldstart { runs, json },
        } => {
            let rows = bench::coldstart(runs).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                bench::print_coldstart(&rows);
            }
        }
        Command::Bench {
            command:
                BenchCommand::Allocate {
                    pairs,
                    dynamodb_endpoint,
                    dynamodb_pairs,
                    json,
                },
        } => {
            if std::env::var_os("RUST_LOG").is_none() {
                std::env::set_var("RUST_LOG", "error");
            }
            telemetry::init(Default::default());
            rows_for_allocate(pairs, dynamodb_endpoint, dynamodb_pairs, json).await?;
        }
        Command::Bench {
            command:
                BenchCommand::Heartbeat {
                    providers,
                    through_brokers,
                    embedded_only,
                    json,
                },
        } => {
            if std::env::var_os("RUST_LOG").is_none() {
                std::env::set_var("RUST_LOG", "error");
            }
            telemetry::init(Default::default());
            let a = bench::embedded(providers).await?;
            let b = if embedded_only {
                None
            } else {
                Some(bench::through_redis_and_rabbitmq(through_brokers).await?)
            };
            if json {
                println!("{}", serde_json::json!({"embedded": a, "through_brokers": b}));
            } else {
                bench::print(&a, b.as_ref());
            }
        }
        Command::Up => {
            let cfg = Config::from_env()?;
            telemetry::init(cfg.log_format);
            up(cfg).await?;
        }
        Command::Infra {
            command: InfraCommand::Init,
        } => {
            let cfg = Config::from_env()?;
            telemetry::init(cfg.log_format);
            let store = backends::dynamo(&cfg).await;
            store.ensure_tables().await.context("creating DynamoDB tables")?;
            println!(
                "DynamoDB tables ready: {}, {} (index {})",
                cfg.providers_table, cfg.jobs_table, cfg.providers_state_index
            );
            let bus: Arc<dyn Bus> = match cfg.bus {
                worldland_runtime::config::BusKind::Rabbitmq => {
                    let bus = backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?;
                    for q in worker_queues(&cfg) {
                        bus.declare(&q).await?;
                        println!("RabbitMQ queue ready: {} (+ {})", q.name, q.dead_letter_name());
                    }
                    Arc::new(bus)
                }
                worldland_runtime::config::BusKind::Sqs => {
                    let bus = backends::sqs(&cfg).await;
                    for q in worker_queues(&cfg) {
                        bus.declare(&q).await?;
                        println!("SQS queue ready: {} (+ {})", q.name, q.dead_letter_name());
                    }
                    Arc::new(bus)
                }
            };
            let conn = backends::redis(&cfg).await?;
            let reader = backends::redis_blocking(&cfg).await?;
            let bridge = RedisBridge::new(conn, reader, bus, BridgeSettings::from_config(&cfg));
            bridge.ensure_groups().await?;
            println!("Redis consumer group ready: {}", cfg.bridge_group);
        }
        Command::Jobs { command } => {
            let cfg = Config::from_env()?;
            telemetry::init(cfg.log_format);
            let store = backends::store(&cfg).await;
            match command {
                JobsCommand::Allocate {
                    job_id,
                    customer,
                    gpus,
                    cpu,
                    memory_mb,
                    model,
                    max_price,
                    duration_s,
                } => {
                    let bus = backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?;
                    let job_id = job_id.unwrap_or_else(|| format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
                    let req = worldland_core::messages::jobs::AllocateRequest {
                        job_id,
                        customer_id: customer,
                        gpu_model: model,
                        gpus,
                        cpu_cores: cpu,
                        memory_mb,
                        max_price_per_gpu_hour: max_price,
                        duration_s,
                    };
                    jobs_cmd::allocate(store.as_ref(), &bus, req).await?;
                }
                JobsCommand::Release { id, reason } => {
                    let bus = backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?;
                    jobs_cmd::release(store.as_ref(), &bus, id, reason).await?;
                }
                JobsCommand::List { state } => jobs_cmd::list(store.as_ref(), state).await?,
                JobsCommand::Show { id } => jobs_cmd::show(store.as_ref(), &id).await?,
            }
        }
        Command::Capacity => {
            let cfg = Config::from_env()?;
            telemetry::init(cfg.log_format);
            jobs_cmd::capacity(backends::store(&cfg).await.as_ref()).await?;
        }
        Command::Audit => {
            let cfg = Config::from_env()?;
            telemetry::init(cfg.log_format);
            if !jobs_cmd::audit(backends::store(&cfg).await.as_ref()).await? {
                std::process::exit(1);
            }
        }
        Command::Providers { command } => {
            let cfg = Config::from_env()?;
            telemetry::init(cfg.log_format);
            let store = backends::store(&cfg).await;
            providers(store.as_ref(), command).await?;
        }
    }
    Ok(())
}

async fn rows_for_allocate(pairs: usize, dynamodb_endpoint: Option<String>, dynamodb_pairs: usize, json: bool) -> anyhow::Result<()> {
    use worldland_adapters::state::memory::MemoryStore;
    let mut rows = vec![];
    // One core: a runtime of one thread, one allocator.
    let one = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(bench::allocate_pairs(
                Arc::new(MemoryStore::new()),
                "embedded",
                "one core, 1 allocator",
                1,
                20,
                8,
                pairs,
            ))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
    rows.push(one);
    rows.push(
        bench::allocate_pairs(
            Arc::new(MemoryStore::new()),
            "embedded",
            "contention, 2 providers",
            8,
            2,
            2,
            pairs / 8,
        )
        .await?,
    );
    if let Some(ep) = dynamodb_endpoint {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let cfg = Config::from_vars([
            ("WORLDLAND_DYNAMODB_ENDPOINT".to_string(), ep),
            ("WORLDLAND_PROVIDERS_TABLE".into(), format!("bench-{id}-providers")),
            ("WORLDLAND_JOBS_TABLE".into(), format!("bench-{id}-jobs")),
        ])?;
        let dynamo = backends::dynamo(&cfg).await;
        dynamo.ensure_tables().await?;
        let store: Arc<dyn ItemStore> = Arc::new(dynamo.clone());
        rows.push(bench::allocate_pairs(store.clone(), "dynalite", "spread, 20 providers", 8, 20, 8, dynamodb_pairs / 8).await?);
        let dynamo2 = backends::dynamo(&Config::from_vars([
            (
                "WORLDLAND_DYNAMODB_ENDPOINT".to_string(),
                cfg.dynamodb_endpoint.clone().unwrap_or_default(),
            ),
            ("WORLDLAND_PROVIDERS_TABLE".into(), format!("bench-{id}-providers-2")),
            ("WORLDLAND_JOBS_TABLE".into(), format!("bench-{id}-jobs-2")),
        ])?)
        .await;
        dynamo2.ensure_tables().await?;
        rows.push(
            bench::allocate_pairs(
                Arc::new(dynamo2.clone()),
                "dynalite",
                "contention, 2 providers",
                8,
                2,
                2,
                dynamodb_pairs / 8,
            )
            .await?,
        );
        dynamo.delete_tables().await?;
        dynamo2.delete_tables().await?;
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        bench::print_allocate(&rows);
    }
    Ok(())
}

async fn up(cfg: Config) -> anyhow::Result<()> {
    let bus = Arc::new(backends::rabbit(&cfg).await.context("connecting to RabbitMQ")?);
    let store = backends::store(&cfg).await;
    let replies = backends::replies(&cfg).await?;
    let cluster = backends::cluster(&cfg).await?;
    let shutdown = backends::shutdown_on_signal();
    backends::serve_health(&cfg, &shutdown).await?;
    let handlers: Vec<Arc<dyn Handler>> = vec![
        Arc::new(registration_handler::RegistrationHandler(registration_handler::Context {
            store: store.clone(),
            bus: bus.clone(),
            replies: replies.clone(),
            policy: cfg.validation_policy(),
            signatures: cfg.signature_policy,
        })),
        Arc::new(join_token_issuer::JoinTokenIssuer(join_token_issuer::Context {
            store: store.clone(),
            cluster: cluster.clone(),
            replies: replies.clone(),
            token_ttl: chrono::Duration::seconds(cfg.token_ttl_s),
            api_endpoint: cfg.api_endpoint.clone(),
        })),
        Arc::new(heartbeat_recorder::HeartbeatRecorder(heartbeat_recorder::Context::from_config(
            &cfg,
            store.clone(),
            cluster.clone(),
        ))),
        Arc::new(allocator::Allocator(allocator::Context::new(
            store.clone(),
            bus.clone(),
            replies.clone(),
        ))),
    ];
    let mut tasks = vec![];
    for h in handlers {
        let queue = QueueSpec::new(cfg.queue(h.name()), h.bindings());
        let bus: Arc<dyn Bus> = bus.clone();
        tasks.push(tokio::spawn(run_consumer(
            bus,
            queue,
            h,
            cfg.prefetch as usize,
            shutdown.subscribe(),
        )));
    }
    let sweeper = Arc::new(staleness_sweeper::Context {
        store: store.clone(),
        cluster,
        bus: bus.clone(),
        replies: replies.clone(),
        stale_after: chrono::Duration::seconds(cfg.stale_after_s),
    });
    let sweeping = tokio::spawn(staleness_sweeper::run(
        sweeper,
        Duration::from_secs(cfg.sweep_interval_s),
        Arc::new(chrono::Utc::now),
        shutdown.subscribe(),
    ));
    let bridge = RedisBridge::new(
        backends::redis(&cfg).await?,
        backends::redis_blocking(&cfg).await?,
        bus.clone(),
        BridgeSettings::from_config(&cfg),
    );
    let rx = shutdown.subscribe();
    let bridge_task = tokio::spawn(async move { bridge.run(rx).await });
    for t in tasks {
        t.await??;
    }
    bridge_task.await??;
    sweeping.await?;
    Ok(())
}

async fn providers(store: &dyn ItemStore, command: ProvidersCommand) -> anyhow::Result<()> {
    match command {
        ProvidersCommand::List { state } => {
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
        }
        ProvidersCommand::Show { id } => match ProviderRecord::load(store, &id).await? {
            None => anyhow::bail!("no provider {id}"),
            Some(r) => {
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
            }
        },
    }
    Ok(())
}
