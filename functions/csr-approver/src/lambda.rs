//! `csr-approver` as an AWS Lambda function run by a scheduled (EventBridge) event: one pass per
//! invocation, its report as the result.

fn main() -> Result<(), worldland_runtime::lambda::Error> {
    worldland_runtime::lambda::main(csr_approver::worker)
}
