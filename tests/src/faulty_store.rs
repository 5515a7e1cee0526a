//! A store decorator that injects one fault on a chosen write: the write applies and then an
//! error is reported (a timeout after DynamoDB applied it), or the error comes before it applies,
//! or the write waits until the test lets it go (a stalled owner), or the write applies, its
//! answer is lost and the SDK's retry sends the same request again (on one chosen write, or on a
//! share of all writes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;
use worldland_core::state::replay;
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
    /// The write applies, its answer is lost, and the SDK's retry sends the same request (the
    /// same token, see `state::replay`) again: the caller gets the replay's answer.
    LostAnswerReplayed,
    /// As `LostAnswerReplayed`, but by the time the retry arrives others have written the item
    /// more times than it remembers write tokens: the retry meets its own write unrecognised.
    LostPastTheRing,
}

/// Writes by others between a lost answer and its retry in [`Fault::LostPastTheRing`]: one
/// more than an item remembers write tokens.
const OTHERS_BEFORE_THE_RETRY: i64 = 4;

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
    /// Writes whose answer is lost and replayed, per thousand, over every write.
    lost_per_mille: AtomicU64,
    /// The state of the deterministic draw of those writes.
    draw: AtomicU64,
    /// Writes whose answer was lost and replayed so far.
    replayed: AtomicU64,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Self {
            inner,
            armed: Mutex::new(vec![]),
            lost_per_mille: AtomicU64::new(0),
            draw: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            replayed: AtomicU64::new(0),
        }
    }

    /// From now on, `per_mille` of all writes (drawn deterministically) apply, lose their answer
    /// and are replayed, as [`Fault::LostAnswerReplayed`].
    pub fn lose_answers(&self, per_mille: u64) {
        self.lost_per_mille.store(per_mille, Ordering::Relaxed);
    }

    /// How many writes lost their answer and were replayed so far.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    fn drawn_lost(&self) -> bool {
        let per_mille = self.lost_per_mille.load(Ordering::Relaxed);
        if per_mille == 0 {
            return false;
        }
        // splitmix64 over a shared counter: reproducible, no extra dependency.
        let mut z = self.draw.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 1000 < per_mille
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

    /// The next `n` writes to `table`/`key` each apply, lose their answer and are replayed.
    pub fn lose_next(&self, table: Table, key: &str, n: usize) {
        for _ in 0..n {
            self.arm(table, key, 0, Fault::LostAnswerReplayed);
        }
    }

    /// Drops every fault still armed.
    pub fn disarm(&self) {
        self.armed.lock().unwrap().clear();
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
        let fault = self
            .take(table, key)
            .or_else(|| (!ops.is_empty() && self.drawn_lost()).then_some(Fault::LostAnswerReplayed));
        match fault {
            None => self.inner.update(table, key, cond, ops).await,
            Some(Fault::LostAnswerReplayed) => {
                // The request is built (and stamped) once; the SDK sends it twice.
                self.replayed.fetch_add(1, Ordering::Relaxed);
                let w = replay::stamp(cond, ops);
                self.inner.update(table, key, &w.cond, &w.ops).await?;
                self.inner.update(table, key, &w.cond, &w.ops).await
            }
            Some(Fault::LostPastTheRing) => {
                self.replayed.fetch_add(1, Ordering::Relaxed);
                let w = replay::stamp(cond, ops);
                self.inner.update(table, key, &w.cond, &w.ops).await?;
                for n in 0..OTHERS_BEFORE_THE_RETRY {
                    self.inner
                        .update(table, key, &Cond::ItemExists, &[Op::set("written_by_others", n)])
                        .await?;
                }
                self.inner.update(table, key, &w.cond, &w.ops).await
            }
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
