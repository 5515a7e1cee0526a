//! `staleness-sweeper` as an AWS Lambda function run by a scheduled (EventBridge) event: one
//! sweep per invocation, its report as the result.

use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use staleness_sweeper::{from_config, sweep_once};
use worldland_runtime::{backends, telemetry, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let cfg = Config::from_env()?;
    telemetry::init_lambda(cfg.log_format);
    let ctx = Arc::new(from_config(&cfg, backends::bus(&cfg).await?).await?);
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<EventBridgeEvent>| {
        let ctx = ctx.clone();
        async move {
            let r = sweep_once(&ctx, chrono::Utc::now()).await?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "examined": r.examined, "marked_offline": r.marked_offline, "expired": r.expired, "jobs_closed": r.jobs_closed
            }))
        }
    }))
    .await
}
