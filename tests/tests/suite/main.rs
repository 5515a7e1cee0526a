//! The integration tests, one module per subject, in one test binary: linked once instead of
//! once per file (nextest still runs every test in a process of its own).

mod allocator;
mod allocator_fencing;
mod bad_registrations;
mod bounds;
mod broker_clock;
mod container_health;
mod dynamodb_store;
mod end_to_end;
mod faults;
mod forged_answers;
mod forged_mining_commands;
mod heartbeat_recorder;
mod join_token_issuer;
mod lambda_adapter;
mod lambda_bootstrap;
mod lifecycle;
mod manifests;
mod node_ownership;
mod rabbitmq_bus;
mod rabbitmq_restarts;
mod real_cluster;
mod real_cluster_csr;
mod real_cluster_pinning;
mod real_cluster_rbac;
mod real_cluster_tokens;
mod redis_acl;
mod redis_bridge;
mod sdk_half_open;
mod sdk_heartbeats;
mod sdk_mining;
mod sqs_bus;
mod stall_guard;
mod sweeper_races;
mod timeouts;
mod token_bounds;
