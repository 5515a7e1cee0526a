//! `join-token-issuer` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`).

fn main() -> Result<(), lambda_runtime::Error> {
    worldland_runtime::lambda::main(join_token_issuer::worker)
}
