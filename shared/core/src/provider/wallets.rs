//! Pending joins per wallet: a wallet holds at most a few live join tokens at a time.
//!
//! Each join token is a credential that can open a TLS bootstrap, so one wallet registering many
//! machines that never join must not hold as many as it likes. Before the join-token issuer draws
//! a token for a provider it takes one of its wallet's slots on the wallet's own item (key
//! `wallet#<address>` in the providers table): the wallet's pending providers, each with the
//! latest time its token can be live, and a version that every write conditions on, so two
//! registrations of one wallet racing for its last slot cannot both take it (read, prune, write;
//! the loser reads again). A provider already listed keeps its slot — a replay of its
//! registration, or a write whose answer was lost, never counts it twice.
//!
//! A listed provider counts while its entry is unexpired; at the limit, each listed provider's
//! record is read as well and the ones no longer waiting to join (joined, expired, gone, or
//! approved with a dead token) free their slots. Nothing else ever removes an entry, so the
//! recorder and the sweeper need not know about wallets.
//!
//! Like the other reservations the item has no `state` and no `hb_at` (it stays out of the state
//! index), and `#` keeps its key apart from every provider id.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::{ProviderRecord, Transition};
use crate::messages::ProviderState;
use crate::state::{ms, Cond, Item, ItemStore, Op, StoreError, StoreResult, Table, Value};

/// Prefix of a wallet item's key in the providers table.
pub const KEY_PREFIX: &str = "wallet#";

/// Read-prune-write rounds before the issuer gives up and retries the message later.
pub const MAX_ROUNDS: usize = 5;

/// Attribute names of a wallet item.
pub mod attr {
    /// The wallet address (lower-cased), as in the key.
    pub const ADDRESS: &str = "address";
    /// Map provider id → the latest time (epoch ms) that provider's join token can be live.
    pub const PENDING: &str = "pending";
    /// Bumped by every write; each write requires the version it read.
    pub const VERSION: &str = "version";
    /// When the item was last written (epoch ms).
    pub const UPDATED_AT: &str = "updated_at";
}

/// The key of `address`'s wallet item.
pub fn key(address: &str) -> String {
    format!("{KEY_PREFIX}{}", address.to_ascii_lowercase())
}

/// A wallet's pending joins as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// The version read; `None` when the wallet has no item yet.
    pub version: Option<i64>,
    /// Provider id → the latest time (epoch ms) its token can be live.
    pub joins: BTreeMap<String, i64>,
}

impl Pending {
    /// Reads a wallet item (`None`: there is none). Entries that are not numbers are dropped.
    pub fn from_item(item: Option<&Item>) -> Self {
        let Some(item) = item else { return Self::default() };
        let joins = item
            .get(attr::PENDING)
            .and_then(Value::as_map)
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_i64()?))).collect())
            .unwrap_or_default();
        Self {
            version: Some(item.get(attr::VERSION).and_then(Value::as_i64).unwrap_or(0)),
            joins,
        }
    }
}

/// What taking a slot for a provider comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The provider is listed already, live until at least the wanted time: nothing to write.
    Listed,
    /// Write this list (conditioned on the version read): the provider added or its time
    /// extended, expired entries pruned.
    Write(BTreeMap<String, i64>),
    /// The wallet is at its limit: read these listed providers' records and decide again with
    /// those no longer waiting to join.
    Check(Vec<String>),
    /// The wallet holds `limit` live pending joins: no slot for this provider.
    Full,
}

/// Decides a slot for `provider_id`, wanted live until `until_ms`, at `now_ms`, for a wallet
/// allowed `limit` pending joins. `gone`: after a [`Decision::Check`], the listed providers found
/// no longer waiting to join; `None` before any check.
pub fn decide(p: &Pending, provider_id: &str, until_ms: i64, now_ms: i64, limit: usize, gone: Option<&BTreeSet<String>>) -> Decision {
    let mut live: BTreeMap<String, i64> = p
        .joins
        .iter()
        .filter(|(id, exp)| **exp > now_ms && !gone.is_some_and(|g| g.contains(*id)))
        .map(|(id, exp)| (id.clone(), *exp))
        .collect();
    if !live.contains_key(provider_id) && live.len() >= limit {
        return match gone {
            None => Decision::Check(live.into_keys().collect()),
            Some(_) => Decision::Full,
        };
    }
    let exp = live.entry(provider_id.to_string()).or_insert(until_ms);
    *exp = (*exp).max(until_ms);
    if live == p.joins {
        Decision::Listed
    } else {
        Decision::Write(live)
    }
}

/// Whether a listed provider still holds a slot: it is being issued its token (pending), or is
/// approved with a live token and has not joined. Joined, expired, refused and gone ones do not.
pub fn awaits_join(rec: Option<&ProviderRecord>, now: DateTime<Utc>) -> bool {
    match rec {
        Some(r) if r.state == ProviderState::Pending => true,
        Some(r) if r.state == ProviderState::Approved => r.token_expires_at.is_some_and(|exp| exp > now),
        _ => false,
    }
}

/// Writes the wallet's list, only if the item is still at the version read (absent for `None`).
pub fn write(address: &str, joins: &BTreeMap<String, i64>, version: Option<i64>, now: DateTime<Utc>) -> Transition {
    let cond = match version {
        None => Cond::ItemNotExists,
        Some(v) => Cond::eq(attr::VERSION, v),
    };
    let map = joins.iter().map(|(k, v)| (k.clone(), Value::N(*v))).collect();
    Transition::new(
        cond,
        vec![
            Op::set(attr::ADDRESS, address.to_ascii_lowercase()),
            Op::set(attr::PENDING, Value::M(map)),
            Op::set(attr::VERSION, version.unwrap_or(0) + 1),
            Op::set(attr::UPDATED_AT, ms(now)),
        ],
    )
}

/// Whether the provider got a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The provider holds one of its wallet's slots: taken now, or already.
    Ours,
    /// The wallet's slots are all held by other providers waiting to join.
    Full,
}

/// Takes a slot of `address` for `provider_id`, live until `until`, within `limit`: one read and
/// at most one conditional write, plus a read of each listed provider when the wallet is at its
/// limit; on a lost race, again from a fresh read.
pub async fn take_slot(
    store: &dyn ItemStore,
    address: &str,
    provider_id: &str,
    until: DateTime<Utc>,
    limit: usize,
    now: DateTime<Utc>,
) -> StoreResult<Slot> {
    let key = key(address);
    for _ in 0..MAX_ROUNDS {
        let p = Pending::from_item(store.get(Table::Providers, &key).await?.as_ref());
        let mut d = decide(&p, provider_id, ms(until), ms(now), limit, None);
        if let Decision::Check(listed) = &d {
            let mut gone = BTreeSet::new();
            for id in listed {
                if !awaits_join(ProviderRecord::load(store, id).await?.as_ref(), now) {
                    gone.insert(id.clone());
                }
            }
            d = decide(&p, provider_id, ms(until), ms(now), limit, Some(&gone));
        }
        match d {
            Decision::Listed => return Ok(Slot::Ours),
            Decision::Full | Decision::Check(_) => return Ok(Slot::Full),
            Decision::Write(joins) => {
                if write(address, &joins, p.version, now).apply(store, &key).await? {
                    return Ok(Slot::Ours);
                }
            }
        }
    }
    Err(StoreError::Backend(
        format!("{key}: {MAX_ROUNDS} writes in a row lost to concurrent registrations").into(),
    ))
}

#[cfg(test)]
mod tests;
