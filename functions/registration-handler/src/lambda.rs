//! `registration-handler` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`): the same core as the
//! container; only the transport differs.

use std::sync::Arc;

use worldland_runtime::{backends, lambda, telemetry, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let cfg = Config::from_env()?;
    telemetry::init_lambda(cfg.log_format);
    let handler = Arc::new(registration_handler::from_config(&cfg, backends::bus(&cfg).await?).await?);
    lambda::run_sqs_worker(handler).await
}
