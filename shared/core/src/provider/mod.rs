//! A provider: the schema of its item ([`attr`]), the record read from it ([`ProviderRecord`]),
//! its state transitions (each a pure function returning one conditional write on the providers
//! table), the node-name reservations that keep a node to one provider ([`nodes`]), and the token-id
//! reservations that tie a bootstrap token to its provider ([`tokens`]), and the per-wallet bound on
//! providers holding a live join token ([`wallets`]), and the spec as registered, kept apart from
//! the item every heartbeat rewrites ([`specs`]).

pub mod attr;
pub mod certs;
pub mod node_health;
pub mod nodes;
mod record;
pub mod specs;
pub mod tokens;
mod transitions;
pub mod wallets;

pub use node_health::{forgetting_node_trouble, interrupted_at, interrupted_at_for, mark_offline_for_node};
pub use record::*;
pub use transitions::*;

/// A conditional write on the providers table.
pub type Transition = crate::state::Transition<crate::state::ProvidersTable>;

impl From<crate::messages::ProviderState> for crate::state::Value {
    fn from(s: crate::messages::ProviderState) -> Self {
        crate::state::Value::from(s.as_str())
    }
}
