//! A store decorator that announces every successful write, so tests await state changes
//! instead of sleeping and polling.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use worldland_core::state::{Cond, Item, ItemStore, Op, PlacementPage, PlacementQuery, StoreResult, Table};

pub struct NotifyingStore {
    inner: Arc<dyn ItemStore>,
    writes: watch::Sender<u64>,
}

impl NotifyingStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Self {
            inner,
            writes: watch::channel(0).0,
        }
    }

    /// Waits (up to `timeout`) until `check` holds, re-checking after every write.
    pub async fn wait_until<F, Fut>(&self, timeout: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut rx = self.writes.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                if check().await {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out after {timeout:?} waiting for: {what}");
    }
}

#[async_trait]
impl ItemStore for NotifyingStore {
    async fn get(&self, table: Table, key: &str) -> StoreResult<Option<Item>> {
        self.inner.get(table, key).await
    }
    async fn update(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<Item>> {
        let out = self.inner.update(table, key, cond, ops).await?;
        if out.is_some() {
            self.writes.send_modify(|n| *n += 1);
        }
        Ok(out)
    }
    async fn update_if(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<bool> {
        Ok(self.update(table, key, cond, ops).await?.is_some())
    }
    async fn query_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<Vec<Item>> {
        self.inner.query_by_state(table, state, hb_before).await
    }
    async fn query_by_state_projected(&self, table: Table, state: &str, hb_before: Option<i64>, attrs: &[&str]) -> StoreResult<Vec<Item>> {
        self.inner.query_by_state_projected(table, state, hb_before, attrs).await
    }
    async fn placement_page(&self, q: &PlacementQuery<'_>) -> StoreResult<PlacementPage> {
        self.inner.placement_page(q).await
    }
    async fn scan(&self, table: Table) -> StoreResult<Vec<Item>> {
        self.inner.scan(table).await
    }
}
