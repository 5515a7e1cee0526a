//! `registration-handler` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`).

fn main() -> Result<(), lambda_runtime::Error> {
    worldland_runtime::lambda::main(registration_handler::worker)
}
