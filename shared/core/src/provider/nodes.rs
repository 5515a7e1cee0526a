//! Node-name reservations: a node belongs to one provider.
//!
//! The broker assigns each provider its node name ([`crate::validation::node_name`]) and, before
//! it approves the provider (and again before the recorder joins it), reserves that name by a
//! conditional write on the name's own item: key `node#<name>` in the providers table, created
//! only if absent, never moved to another owner. A second provider whose name is already taken
//! is refused (`node_name_taken`) instead of being approved onto someone else's node.
//!
//! The item has no `state` and no `hb_at`, so it never appears in the providers' state index
//! (a sparse index, in DynamoDB and in memory alike); `#` cannot appear in a canonical provider
//! id, so no provider's key is ever a reservation's. A reservation is kept when its provider
//! registers again from another host (its new name is reserved beside it): names are derived
//! from the provider id, so nobody else could use the old one anyway.

use chrono::{DateTime, Utc};

use super::Transition;
use crate::state::ms;
use crate::state::{Cond, Item, ItemStore, Op, StoreResult, Table, Value, KEY_ATTR};

/// Prefix of a reservation's key in the providers table.
pub const KEY_PREFIX: &str = "node#";

/// Attribute names of a reservation item.
pub mod attr {
    /// The provider id that owns the node name.
    pub const OWNER: &str = "owner";
    /// The node name, as it appears in the key.
    pub const NODE_NAME: &str = "node_name";
    /// When the name was reserved (epoch ms).
    pub const RESERVED_AT: &str = "reserved_at";
}

/// The key of `node_name`'s reservation item.
pub fn key(node_name: &str) -> String {
    format!("{KEY_PREFIX}{node_name}")
}

/// Whether a providers-table item is a node-name reservation rather than a provider.
pub fn is_reservation(item: &Item) -> bool {
    item.get(KEY_ATTR)
        .and_then(Value::as_str)
        .is_some_and(|k| k.starts_with(KEY_PREFIX))
}

/// Whether a providers-table item is any reservation (a node name's, a token id's) rather than a
/// provider: every reservation key holds a `#`, which no provider id does.
pub fn is_not_a_provider(item: &Item) -> bool {
    item.get(KEY_ATTR).and_then(Value::as_str).is_some_and(|k| k.contains('#'))
}

/// The provider that owns a reservation item, if it is one.
pub fn owner_in(item: &Item) -> Option<&str> {
    item.get(attr::OWNER).and_then(Value::as_str)
}

/// Creates the reservation of `node_name` for `provider_id`, only if nobody holds it. No `state`
/// or `hb_at`: the item stays out of the state index.
pub fn reserve(node_name: &str, provider_id: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::ItemNotExists,
        vec![
            Op::set(attr::OWNER, provider_id),
            Op::set(attr::NODE_NAME, node_name),
            Op::set(attr::RESERVED_AT, ms(now)),
        ],
    )
}

/// Who holds a node name after [`claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is this provider's: reserved just now, or already.
    Ours,
    /// Another provider holds it (its id).
    TakenBy(String),
}

/// Reserves `node_name` for `provider_id`, or finds it already theirs, or held by another:
/// one conditional create; only when it fails, one read to learn the owner. Idempotent, so a
/// redelivery claims again at no harm.
pub async fn claim(store: &dyn ItemStore, node_name: &str, provider_id: &str, now: DateTime<Utc>) -> StoreResult<Claim> {
    let key = key(node_name);
    // Reservations are never deleted, so after a failed create the item is there to read; the
    // loop only guards against a store that says otherwise.
    for _ in 0..3 {
        if reserve(node_name, provider_id, now).apply(store, &key).await? {
            return Ok(Claim::Ours);
        }
        if let Some(item) = store.get(Table::Providers, &key).await? {
            return Ok(match owner_in(&item) {
                Some(owner) if owner == provider_id => Claim::Ours,
                Some(owner) => Claim::TakenBy(owner.to_string()),
                None => Claim::TakenBy(String::new()),
            });
        }
    }
    Err(crate::state::StoreError::Backend(
        format!("reservation {key} neither created nor readable").into(),
    ))
}

/// The provider that holds `node_name`, if anyone does.
pub async fn owner(store: &dyn ItemStore, node_name: &str) -> StoreResult<Option<String>> {
    Ok(store
        .get(Table::Providers, &key(node_name))
        .await?
        .as_ref()
        .and_then(owner_in)
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::expr::{apply, eval};

    #[test]
    fn a_name_is_reserved_once_and_stays_out_of_the_state_index() {
        let now = Utc::now();
        let t = reserve("gpu-01-0123456789abcdef", "p1", now);
        assert!(eval(&t.cond, None));
        let item = apply(None, KEY_ATTR, &key("gpu-01-0123456789abcdef"), &t.ops).unwrap();
        assert!(is_reservation(&item));
        assert_eq!(owner_in(&item), Some("p1"));
        assert!(!item.contains_key(crate::state::INDEX_STATE_ATTR) && !item.contains_key(crate::state::INDEX_SORT_ATTR));
        // Nobody takes it over, not even its owner by a second create.
        assert!(!eval(&reserve("gpu-01-0123456789abcdef", "p2", now).cond, Some(&item)));
        assert!(!eval(&reserve("gpu-01-0123456789abcdef", "p1", now).cond, Some(&item)));
        assert!(!key("x").trim_start_matches(KEY_PREFIX).contains('#'));
        assert!(crate::validation::check_provider_id(&key("x")).is_err(), "never a provider's key");
    }
}
