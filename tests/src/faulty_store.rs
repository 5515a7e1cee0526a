//! A store decorator that injects one fault on a chosen write: the write applies and then an
//! error is reported (a timeout after DynamoDB applied it), or the error comes before it applies,
//! or the write waits until the test lets it go (a stalled owner).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;
use worldland_core::state::{Cond, Item, ItemStore, Op, PlacementPage, PlacementQuery, StoreError, StoreResult, Table};

/// What happens to the chosen write.
#[derive(Clone)]
pub enum Fault {
    /// The write applies, then the call reports a backend error.
    ApplyThenFail,
    /// The call reports a backend error; nothing is written.
    FailBeforeApply,
    /// The call signals `reached`, waits for `resume`, then writes.
    Pause { reached: Arc<Notify>, resume: Arc<Notify> },
}

struct Armed {
    table: Table,
    key: String,
    /// Matching writes to let through before the fault.
    skip: usize,
    fault: Fault,
}

pub struct FaultyStore {
    inner: Arc<dyn ItemStore>,
    armed: Mutex<Vec<Armed>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Self {
            inner,
            armed: Mutex::new(vec![]),
        }
    }

    /// Injects `fault` once, on the write to `table`/`key` after `skip` matching writes.
    pub fn arm(&self, table: Table, key: &str, skip: usize, fault: Fault) {
        self.armed.lock().unwrap().push(Armed {
            table,
            key: key.to_string(),
            skip,
            fault,
        });
    }

    /// A pause fault and its two handles: (fault, reached, resume).
    pub fn pause() -> (Fault, Arc<Notify>, Arc<Notify>) {
        let (reached, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        (
            Fault::Pause {
                reached: reached.clone(),
                resume: resume.clone(),
            },
            reached,
            resume,
        )
    }

    /// Whether every armed fault has fired.
    pub fn all_fired(&self) -> bool {
        self.armed.lock().unwrap().is_empty()
    }

    fn take(&self, table: Table, key: &str) -> Option<Fault> {
        let mut armed = self.armed.lock().unwrap();
        let i = armed.iter().position(|a| a.table == table && a.key == key)?;
        if armed[i].skip > 0 {
            armed[i].skip -= 1;
            return None;
        }
        Some(armed.remove(i).fault)
    }
}

fn injected() -> StoreError {
    StoreError::Backend("injected fault: request timed out".into())
}

#[async_trait]
impl ItemStore for FaultyStore {
    async fn get(&self, table: Table, key: &str) -> StoreResult<Option<Item>> {
        self.inner.get(table, key).await
    }
    async fn update(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<Item>> {
        match self.take(table, key) {
            None => self.inner.update(table, key, cond, ops).await,
            Some(Fault::ApplyThenFail) => {
                self.inner.update(table, key, cond, ops).await?;
                Err(injected())
            }
            Some(Fault::FailBeforeApply) => Err(injected()),
            Some(Fault::Pause { reached, resume }) => {
                reached.notify_one();
                resume.notified().await;
                self.inner.update(table, key, cond, ops).await
            }
        }
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
