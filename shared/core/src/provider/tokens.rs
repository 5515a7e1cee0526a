//! Token-id reservations: a bootstrap token belongs to the provider it was issued for.
//!
//! Before the join-token issuer creates a token's Secret it records the id's owner on the id's
//! own item (key `token#<id>` in the providers table, created only if absent). The API server
//! names a bootstrap token's bearer `system:bootstrap:<id>`, so the CSR approver learns from
//! this item alone which provider (and so which reserved node name) a certificate request comes
//! from; an id with no item was never issued by this broker. A 409 on the Secret's create for an
//! id reserved here is ours (an earlier create whose success was lost), never a stranger's.
//!
//! Like node reservations the item has no `state` and no `hb_at` (it stays out of the state
//! index), and `#` keeps its key apart from every provider id.

use chrono::{DateTime, Utc};

use super::Transition;
use crate::state::ms;
use crate::state::{Cond, Item, ItemStore, Op, StoreResult, Table, Value, KEY_ATTR};

/// Prefix of a token reservation's key in the providers table.
pub const KEY_PREFIX: &str = "token#";

/// Attribute names of a token reservation item.
pub mod attr {
    /// The provider the token was issued for.
    pub const OWNER: &str = "owner";
    /// The token id, as it appears in the key.
    pub const TOKEN_ID: &str = "token_id";
    /// When the id was reserved (epoch ms).
    pub const RESERVED_AT: &str = "reserved_at";
}

/// The key of `token_id`'s reservation item.
pub fn key(token_id: &str) -> String {
    format!("{KEY_PREFIX}{token_id}")
}

/// Whether a providers-table item is a token reservation.
pub fn is_reservation(item: &Item) -> bool {
    item.get(KEY_ATTR)
        .and_then(Value::as_str)
        .is_some_and(|k| k.starts_with(KEY_PREFIX))
}

/// Reserves `token_id` for `provider_id` if nobody holds it; a replay by the same owner finds
/// the item and is told so by [`claim`].
pub fn reserve(token_id: &str, provider_id: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::ItemNotExists,
        vec![
            Op::set(attr::OWNER, provider_id),
            Op::set(attr::TOKEN_ID, token_id),
            Op::set(attr::RESERVED_AT, ms(now)),
        ],
    )
}

/// Who holds a token id after [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdClaim {
    /// Reserved for the provider by this very call: no Secret of this id was ever created by
    /// this broker, so one that exists (409) is not ours.
    Reserved,
    /// Reserved for the provider earlier (a replay, or an earlier attempt): a Secret of this id
    /// that exists is ours — a create whose success was lost.
    Ours,
    /// Another provider holds it.
    Others,
}

/// Reserves `token_id` for `provider_id`, or finds it theirs already, or another's: one
/// conditional create, and one read only when it fails.
pub async fn claim(store: &dyn ItemStore, token_id: &str, provider_id: &str, now: DateTime<Utc>) -> StoreResult<IdClaim> {
    if reserve(token_id, provider_id, now).apply(store, &key(token_id)).await? {
        return Ok(IdClaim::Reserved);
    }
    Ok(match owner(store, token_id).await?.as_deref() == Some(provider_id) {
        true => IdClaim::Ours,
        false => IdClaim::Others,
    })
}

/// The provider `token_id` was issued for; `None` when this broker never reserved it.
pub async fn owner(store: &dyn ItemStore, token_id: &str) -> StoreResult<Option<String>> {
    Ok(store
        .get(Table::Providers, &key(token_id))
        .await?
        .as_ref()
        .and_then(|i| i.get(attr::OWNER))
        .and_then(Value::as_str)
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::expr::{apply, eval};

    #[test]
    fn an_id_is_reserved_once_and_stays_out_of_the_state_index() {
        let now = Utc::now();
        let t = reserve("abcdef", "p1", now);
        assert!(eval(&t.cond, None));
        let item = apply(None, KEY_ATTR, &key("abcdef"), &t.ops).unwrap();
        assert!(is_reservation(&item));
        assert!(!item.contains_key(crate::state::INDEX_STATE_ATTR) && !item.contains_key(crate::state::INDEX_SORT_ATTR));
        assert!(!eval(&reserve("abcdef", "p2", now).cond, Some(&item)));
        assert!(
            crate::validation::check_provider_id(&key("abcdef")).is_err(),
            "never a provider's key"
        );
    }
}
