//! The WorldLand provider plane's pure core: what the workers, the SDK and the CLI agree on, and
//! the ports they reach the world through. No IO crate is in this crate's dependency tree (no
//! tokio, redis, lapin, aws-*, kube, lambda_runtime); `scripts/test` checks it.
//!
//! - Wire and bus: [`messages`], [`streams`], [`refusal`], [`validation`], [`workload`] (what a
//!   rental runs, and its rules), [`signature`], [`sealed`].
//! - Decisions, one concept a module: [`provider`] (the provider item's schema, record and
//!   transitions), [`ledger`] (capacity: what a provider offers, has free and has allocated),
//!   [`placement`] (which provider a job goes to, and the placement index), [`job`] (states,
//!   transitions, claims, closing), [`labels`], [`cluster::bootstrap`], [`cluster::node`] and [`certificates`] (which
//!   kubelet certificate requests the broker approves), [`rental`] (a job run as a pod: its names,
//!   and what its pod's life means for the job).
//! - Ports: [`state::ItemStore`] (with the conditional-write language [`state::expr`] and the
//!   table-typed [`state::Transition`]),
//!   [`bus::Bus`], [`cluster::Cluster`], [`replies::ProviderReplies`], [`worker::Handler`] and
//!   [`clock::Clock`].

#![deny(missing_docs)]

/// A boxed error from an adapter, kept as the `#[source]` of the core's error types so nothing is
/// flattened into a string.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub mod answers;
pub mod bus;
pub mod certificates;
pub mod clock;
pub mod cluster;
pub mod job;
pub mod labels;
pub mod ledger;
pub mod messages;
pub mod placement;
pub mod provider;
pub mod refusal;
pub mod rental;
pub mod replies;
pub mod sealed;
pub mod signature;
pub mod state;
pub mod streams;
pub mod validation;
pub mod worker;
pub mod workload;
