//! `allocator` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`): the same core as the
//! container; only the transport differs.

fn main() -> Result<(), lambda_runtime::Error> {
    worldland_runtime::lambda::main(allocator::worker)
}
