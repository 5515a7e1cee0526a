//! The WorldLand provider plane's IO adapters: each implements one of `worldland-core`'s ports.
//!
//! - [`state`]: the DynamoDB store (production) and the in-memory store (the embedded default),
//!   which pass one contract suite ([`state::contract`], feature `test-support`).
//! - [`bus`]: RabbitMQ (lapin), SQS (aws-sdk-sqs) and in-process buses.
//! - [`cluster`]: the kube-rs cluster and a simulated in-process one.
//! - [`replies`]: answers to providers on Redis, or kept in memory.
//! - [`redis_conn`]: reconnecting Redis connections with their timeouts.

pub mod bus;
pub mod cluster;
#[cfg(feature = "redis")]
pub mod redis_conn;
pub mod replies;
pub mod state;
