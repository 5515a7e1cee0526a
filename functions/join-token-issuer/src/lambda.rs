//! `join-token-issuer` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`).

fn main() -> Result<(), worldland_runtime::lambda::Error> {
    worldland_runtime::lambda::main(join_token_issuer::worker)
}
