//! The WorldLand provider plane's common crate.
//!
//! Pure modules (no IO): `messages`, `validation`, `labels`, `signature`, `sealed`,
//! `state::expr`, `state::providers`, `cluster::bootstrap`. IO sits behind small traits:
//! `state::ItemStore`, `bus::Bus`, `cluster::Cluster`, `replies::ProviderReplies`.

pub mod backends;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod jobs;
pub mod labels;
pub mod lambda;
pub mod ledger;
pub mod messages;
pub mod metrics;
pub mod replies;
pub mod sealed;
pub mod signature;
pub mod state;
pub mod streams;
pub mod telemetry;
pub mod validation;
pub mod worker;

pub use config::Config;
