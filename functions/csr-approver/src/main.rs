//! `csr-approver` as a container: a pass whenever a CSR changes (a watch), serving health and metrics.

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(csr_approver::worker)
}
