//! `allocator` as an AWS Lambda function fed by SQS (`ReportBatchItemFailures`): the same core as the
//! container; only the transport differs.

fn main() -> Result<(), worldland_runtime::lambda::Error> {
    worldland_runtime::lambda::main(allocator::worker)
}
