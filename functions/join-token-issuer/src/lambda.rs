//! `join-token-issuer` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`): the same core as the
//! container; only the transport differs.

use std::sync::Arc;

use worldland_runtime::{lambda, telemetry, Config};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let cfg = Config::from_env()?;
    telemetry::init_lambda(cfg.log_format);
    let handler = Arc::new(join_token_issuer::from_config(&cfg).await?);
    lambda::run_sqs_worker(handler).await
}
