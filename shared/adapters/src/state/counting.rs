//! A store decorator that counts what passes through: items read (as DynamoDB bills them: every
//! index item a query or count touches, one per point read) and writes. `worldland bench fleet`
//! reads its figures off it, and tests check that a sweep reads only the stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use worldland_core::state::{Cond, Item, ItemStore, Op, PlacementPage, PlacementQuery, StoreResult, Table};

/// What a [`CountingStore`] has seen since it was made or last [`CountingStore::take`]n.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Items read through an index (the state index's queries and counts, the placement index's
    /// pages: each item touched).
    pub index_items: u64,
    /// Point reads (`get`).
    pub gets: u64,
    /// Conditional writes attempted.
    pub writes: u64,
    /// Items read by scans.
    pub scanned: u64,
}

/// Counts reads and writes on the way to `inner`.
pub struct CountingStore {
    inner: Arc<dyn ItemStore>,
    index_items: AtomicU64,
    gets: AtomicU64,
    writes: AtomicU64,
    scanned: AtomicU64,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Self {
            inner,
            index_items: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            scanned: AtomicU64::new(0),
        }
    }

    /// The counts so far, which start again from zero.
    pub fn take(&self) -> Counts {
        Counts {
            index_items: self.index_items.swap(0, Ordering::Relaxed),
            gets: self.gets.swap(0, Ordering::Relaxed),
            writes: self.writes.swap(0, Ordering::Relaxed),
            scanned: self.scanned.swap(0, Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl ItemStore for CountingStore {
    async fn get(&self, table: Table, key: &str) -> StoreResult<Option<Item>> {
        Self::add(&self.gets, 1);
        self.inner.get(table, key).await
    }
    async fn update(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<Item>> {
        Self::add(&self.writes, 1);
        self.inner.update(table, key, cond, ops).await
    }
    async fn update_if(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<bool> {
        Self::add(&self.writes, 1);
        self.inner.update_if(table, key, cond, ops).await
    }
    async fn query_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<Vec<Item>> {
        let items = self.inner.query_by_state(table, state, hb_before).await?;
        Self::add(&self.index_items, items.len());
        Ok(items)
    }
    async fn query_by_state_projected(&self, table: Table, state: &str, hb_before: Option<i64>, attrs: &[&str]) -> StoreResult<Vec<Item>> {
        let items = self.inner.query_by_state_projected(table, state, hb_before, attrs).await?;
        Self::add(&self.index_items, items.len());
        Ok(items)
    }
    async fn count_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<usize> {
        // DynamoDB bills a COUNT query for every item it reads to count.
        let n = self.inner.count_by_state(table, state, hb_before).await?;
        Self::add(&self.index_items, n);
        Ok(n)
    }
    async fn newest_in_state(&self, table: Table, state: &str) -> StoreResult<Option<i64>> {
        let newest = self.inner.newest_in_state(table, state).await?;
        Self::add(&self.index_items, usize::from(newest.is_some()));
        Ok(newest)
    }
    async fn placement_page(&self, q: &PlacementQuery<'_>) -> StoreResult<PlacementPage> {
        let page = self.inner.placement_page(q).await?;
        Self::add(&self.index_items, page.read);
        Ok(page)
    }
    async fn scan(&self, table: Table) -> StoreResult<Vec<Item>> {
        let items = self.inner.scan(table).await?;
        Self::add(&self.scanned, items.len());
        Ok(items)
    }
}
