//! Shared state. Workers never hold state of their own: every change is one conditional write on
//! one item, so many workers (and redeliveries) can race without harm. Two stores pass one
//! contract suite: DynamoDB (production) and in-memory (the embedded default).

pub mod expr;
pub mod replay;
mod transition;
pub mod units;

use async_trait::async_trait;

pub use expr::{Cond, Item, Op, Value};
pub use replay::WRITE_TOKEN_ATTR;
pub use transition::{from_ms, ms, JobsTable, ProvidersTable, TableOf, Transition};

/// Key attribute of every table.
pub const KEY_ATTR: &str = "id";
/// The providers' index: partition on state, sort on the last heartbeat (epoch ms). The staleness
/// sweeper reads only stale providers through it, never the whole table.
pub const INDEX_STATE_ATTR: &str = "state";
/// The state indexes' sort attribute, in epoch ms: for providers the last heartbeat (see `provider::attr::HB_AT`), for jobs the due time.
pub const INDEX_SORT_ATTR: &str = "hb_at";

/// The providers' placement index: partition on one GPU model (the provider's offered GPUs all
/// of that model, see `placement::placement_partition`), sort on the price per GPU-hour. Placement
/// reads the cheapest providers of the model it needs, never the whole fleet.
pub const PLACEMENT_MODEL_ATTR: &str = "place_model";
/// The placement index's sort attribute: the price per GPU-hour in micro-units.
pub const PLACEMENT_SORT_ATTR: &str = "price_micros";

/// Where a read of the placement index stopped: the last index item's price and key. Every item
/// not read yet costs at least this much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementCursor {
    /// Price of the last item read.
    pub price_micros: i64,
    /// Key of the last item read.
    pub key: String,
}

/// One read of the placement index.
#[derive(Debug, Clone)]
pub struct PlacementQuery<'a> {
    /// The partition: a model key, or `placement::MIXED_MODELS`.
    pub model: &'a str,
    /// Only items in this state come back (the others are read and dropped).
    pub state: &'a str,
    /// Only items priced at most this.
    pub max_price_micros: Option<i64>,
    /// Go on after this item.
    pub after: Option<&'a PlacementCursor>,
    /// At most this many index items are read.
    pub limit: usize,
    /// The attributes wanted (the key always comes back).
    pub attrs: &'a [&'a str],
}

/// One page of the placement index.
#[derive(Debug, Default)]
pub struct PlacementPage {
    /// The items in the wanted state, cheapest first.
    pub items: Vec<Item>,
    /// Index items read (as billed), the dropped ones included.
    pub read: usize,
    /// Where to go on; `None` when the partition (under the price cap) is read to its end.
    pub next: Option<PlacementCursor>,
}

/// The tables of the state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Providers, keyed by provider id.
    Providers,
    /// Jobs, keyed by job id.
    Jobs,
}

/// Why a state store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (network, throttling, server error): worth retrying.
    #[error("state store backend: {0}")]
    Backend(#[source] crate::BoxError),
    /// An update whose paths overlap or go through a value that is not a map.
    #[error(transparent)]
    Path(#[from] expr::PathError),
    /// A stored item that cannot be read as what it should be: retrying will not mend it.
    #[error("stored item {key} is malformed: {why}")]
    Corrupt {
        /// Key of the malformed item.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Result of a state store operation.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// The state store port: DynamoDB in production, in memory for the embedded default; one contract suite checks both.
#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// The item with `key`, or `None` when there is none.
    async fn get(&self, table: Table, key: &str) -> StoreResult<Option<Item>>;
    /// Applies `ops` to the item (creating it if absent) only if `cond` holds on the item as
    /// stored at write time. Returns the new item, or `None` when the condition failed. Every
    /// store stamps the write with a token (see [`replay`]): a replay of a write that applied
    /// (its answer lost, the call sent again) answers the item as stored, never `None`.
    async fn update(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<Item>>;
    /// The same write when the caller needs only to know whether it applied.
    async fn update_if(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<bool> {
        Ok(self.update(table, key, cond, ops).await?.is_some())
    }
    /// Items in `state`, optionally only those whose `hb_at` is below `hb_before`, through the
    /// state index (never a scan).
    async fn query_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<Vec<Item>>;
    /// Like [`ItemStore::query_by_state`], but only `attrs` (and the key) of each item: placement
    /// reads ledgers, not specs.
    async fn query_by_state_projected(&self, table: Table, state: &str, hb_before: Option<i64>, attrs: &[&str]) -> StoreResult<Vec<Item>> {
        let items = self.query_by_state(table, state, hb_before).await?;
        Ok(items
            .into_iter()
            .map(|i| {
                i.into_iter()
                    .filter(|(k, _)| k == KEY_ATTR || attrs.contains(&k.as_str()))
                    .collect()
            })
            .collect())
    }
    /// How many items are in `state` (only those whose `hb_at` is below `hb_before`, when given),
    /// counted through the state index without bringing the items back.
    async fn count_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<usize> {
        Ok(self.query_by_state_projected(table, state, hb_before, &[]).await?.len())
    }
    /// The highest `hb_at` among the items in `state` (the index read backwards, one item), or
    /// `None` when no item is in that state.
    async fn newest_in_state(&self, table: Table, state: &str) -> StoreResult<Option<i64>> {
        let items = self.query_by_state_projected(table, state, None, &[INDEX_SORT_ATTR]).await?;
        Ok(items.iter().filter_map(|i| i.get(INDEX_SORT_ATTR).and_then(Value::as_i64)).max())
    }
    /// One page of the providers' placement index (see [`PlacementQuery`]), cheapest first.
    async fn placement_page(&self, q: &PlacementQuery<'_>) -> StoreResult<PlacementPage>;
    /// Every item; for operators' listings, never on a worker's hot path.
    async fn scan(&self, table: Table) -> StoreResult<Vec<Item>>;
}

/// Table and index names, from config.
#[derive(Debug, Clone)]
pub struct TableNames {
    /// Name of the providers table.
    pub providers: String,
    /// Name of the providers' index on `state` + `hb_at`.
    pub providers_state_index: String,
    /// Name of the providers' index on `place_model` + `price_micros`.
    pub providers_placement_index: String,
    /// Name of the jobs table.
    pub jobs: String,
    /// Name of the jobs' index on `state` + `hb_at` (a job's due time).
    pub jobs_state_index: String,
}

impl TableNames {
    /// The configured name of `table`.
    pub fn of(&self, table: Table) -> &str {
        match table {
            Table::Providers => &self.providers,
            Table::Jobs => &self.jobs,
        }
    }

    /// Each table's index on `state` + the sort attribute (a provider's last heartbeat; a job's
    /// due time).
    pub fn index_of(&self, table: Table) -> &str {
        match table {
            Table::Providers => &self.providers_state_index,
            Table::Jobs => &self.jobs_state_index,
        }
    }
}
