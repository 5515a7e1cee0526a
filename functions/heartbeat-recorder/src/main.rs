//! `heartbeat-recorder` as a container: a RabbitMQ (or SQS) consumer serving health and metrics.

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(heartbeat_recorder::worker)
}
