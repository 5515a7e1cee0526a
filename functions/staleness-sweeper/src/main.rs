//! `staleness-sweeper` as a container: a sweep every `WORLDLAND_SWEEP_INTERVAL_S`, serving health and metrics.

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(staleness_sweeper::worker)
}
