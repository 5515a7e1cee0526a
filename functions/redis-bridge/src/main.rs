//! `redis-bridge` as a container: the long-running Redis-to-bus bridge, serving health and metrics.

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(redis_bridge::worker)
}
