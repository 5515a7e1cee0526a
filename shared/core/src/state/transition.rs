//! One conditional write, typed by the table it writes: a provider's transition cannot be run
//! on the jobs table, nor a job's on the providers'.

use std::marker::PhantomData;

use chrono::{DateTime, TimeZone, Utc};

use super::{Cond, Item, ItemStore, Op, StoreResult, Table};

/// A table's marker type: [`Transition`]s name the table they write through it.
pub trait TableOf: Send + Sync + 'static {
    /// The table.
    const TABLE: Table;
}

/// The providers table (providers, and node-name reservations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvidersTable;

impl TableOf for ProvidersTable {
    const TABLE: Table = Table::Providers;
}

/// The jobs table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsTable;

impl TableOf for JobsTable {
    const TABLE: Table = Table::Jobs;
}

/// One conditional write on table `T`: apply `ops` only if `cond` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition<T> {
    /// What the item as stored must satisfy at write time.
    pub cond: Cond,
    /// The updates applied when it does, all or none.
    pub ops: Vec<Op>,
    table: PhantomData<T>,
}

impl<T: TableOf> Transition<T> {
    /// The write of `ops` under `cond`.
    pub fn new(cond: Cond, ops: Vec<Op>) -> Self {
        Self {
            cond,
            ops,
            table: PhantomData,
        }
    }

    /// Runs on the item `key`; the written item as stored, or `None` when the condition failed.
    pub async fn run_raw(&self, store: &dyn ItemStore, key: &str) -> StoreResult<Option<Item>> {
        store.update(T::TABLE, key, &self.cond, &self.ops).await
    }

    /// Runs on the item `key`; whether the condition held and the write applied.
    pub async fn apply(&self, store: &dyn ItemStore, key: &str) -> StoreResult<bool> {
        store.update_if(T::TABLE, key, &self.cond, &self.ops).await
    }
}

/// Epoch milliseconds of `t`: how every time is stored.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The time stored as epoch milliseconds `v` (the epoch itself for one out of range).
pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}
