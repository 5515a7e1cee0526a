//! `join-token-issuer` as a container: a RabbitMQ (or SQS) consumer serving health and metrics.

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(join_token_issuer::worker)
}
