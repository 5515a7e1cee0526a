//! Which worker consumes which routing keys: one table for the RabbitMQ bindings, the SQS bus's
//! routing, `infra init` and the workers themselves. A worker's bindings are the keys of its
//! inbound enum, so adding a message to a worker is a variant here and an arm in its handler.

use crate::inbound;
use crate::messages::jobs::{AllocateRequest, ReleaseRequest};
use crate::messages::{topics, ProviderValidated};

use super::{HeartbeatReceived, Inbound, RegistrationReceived};

/// A queue: its name (before the configured prefix) and the routing keys bound to it.
pub type Route = (&'static str, &'static [&'static str]);

inbound! {
    /// What the registration handler takes: registrations forwarded by the bridge.
    pub enum ToRegistrationHandler for "registration-handler" {
        /// `provider.registration.received`.
        Received(RegistrationReceived),
    }
}

inbound! {
    /// What the join-token issuer takes: registrations validated and stored as `pending`.
    pub enum ToJoinTokenIssuer for "join-token-issuer" {
        /// `provider.validated`.
        Validated(ProviderValidated),
    }
}

inbound! {
    /// What the heartbeat recorder takes: heartbeats forwarded by the bridge.
    pub enum ToHeartbeatRecorder for "heartbeat-recorder" {
        /// `provider.heartbeat.received`.
        Received(HeartbeatReceived),
    }
}

inbound! {
    /// What the allocator takes: customers' `job.allocate` and `job.release`.
    pub enum ToAllocator for "allocator" {
        /// `job.allocate`.
        Allocate(AllocateRequest),
        /// `job.release`.
        Release(ReleaseRequest),
    }
}

const fn route<I: Inbound>() -> Route {
    (I::QUEUE, I::KEYS)
}

/// The registration handler's queue.
pub const REGISTRATION_HANDLER: Route = route::<ToRegistrationHandler>();
/// The join-token issuer's queue.
pub const JOIN_TOKEN_ISSUER: Route = route::<ToJoinTokenIssuer>();
/// The heartbeat recorder's queue.
pub const HEARTBEAT_RECORDER: Route = route::<ToHeartbeatRecorder>();
/// The allocator's queue.
pub const ALLOCATOR: Route = route::<ToAllocator>();
/// Not a worker: the answers customers and billing read.
pub const JOB_EVENTS: Route = (topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS);

/// Every queue `worldland infra init` declares: the workers' and `job-events`.
pub const ALL: [Route; 5] = [REGISTRATION_HANDLER, JOIN_TOKEN_ISSUER, HEARTBEAT_RECORDER, ALLOCATOR, JOB_EVENTS];

/// Every queue, each named by `name_of` (the configured prefix + the worker's name).
pub fn queues(name_of: impl Fn(&str) -> String) -> Vec<super::QueueSpec> {
    ALL.iter()
        .map(|(name, bindings)| super::QueueSpec::new(name_of(name), bindings))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_the_keys_it_had() {
        assert_eq!(ALLOCATOR, ("allocator", &[topics::JOB_ALLOCATE, topics::JOB_RELEASE][..]));
        assert_eq!(REGISTRATION_HANDLER.1, [topics::REGISTRATION_RECEIVED]);
        assert_eq!(JOIN_TOKEN_ISSUER.1, [topics::PROVIDER_VALIDATED]);
        assert_eq!(HEARTBEAT_RECORDER.1, [topics::HEARTBEAT_RECEIVED]);
    }

    #[test]
    fn an_inbound_enum_decodes_by_key_and_refuses_the_rest() {
        let body = br#"{"job_id":"j","reason":"done"}"#;
        assert!(matches!(ToAllocator::decode(topics::JOB_RELEASE, body), Ok(ToAllocator::Release(r)) if r.reason == "done"));
        let code = |r: Result<ToAllocator, crate::refusal::Rejection>| r.err().map(|r| r.reason.code());
        assert_eq!(code(ToAllocator::decode(topics::PROVIDER_VALIDATED, body)), Some("invalid_request"));
        assert_eq!(code(ToAllocator::decode(topics::JOB_ALLOCATE, body)), Some("malformed_json"));
    }
}
