//! `registration-handler` as a container: a RabbitMQ (or SQS) consumer serving health and metrics.

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(registration_handler::worker)
}
