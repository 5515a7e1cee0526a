//! The embedded store: items in memory, the same conditional-write semantics as DynamoDB
//! (evaluated by `expr`), and a sorted state index so index queries never walk the whole table.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use worldland_core::state::expr::{apply_in_place, eval};
use worldland_core::state::replay;
use worldland_core::state::{
    Cond, Item, ItemStore, Op, PlacementCursor, PlacementPage, PlacementQuery, StoreResult, Table, Value, INDEX_SORT_ATTR,
    INDEX_STATE_ATTR, KEY_ATTR, PLACEMENT_MODEL_ATTR, PLACEMENT_SORT_ATTR,
};

#[derive(Default)]
struct MemTable {
    items: HashMap<String, Item>,
    /// (state, hb_at, key) for items that carry both, like a DynamoDB sparse GSI.
    index: BTreeSet<(String, i64, String)>,
    /// (place_model, price_micros, key) for items that carry both: the placement index.
    placement: BTreeSet<(String, i64, String)>,
}

/// An item's entry in a sparse index on (`partition`, `sort`), if it carries both.
fn entry_on(item: &Item, partition: &str, sort: &str) -> Option<(String, i64, String)> {
    Some((
        item.get(partition)?.as_str()?.to_string(),
        item.get(sort)?.as_i64()?,
        item.get(KEY_ATTR)?.as_str()?.to_string(),
    ))
}

fn index_entry(item: &Item) -> Option<(String, i64, String)> {
    entry_on(item, INDEX_STATE_ATTR, INDEX_SORT_ATTR)
}

fn placement_entry(item: &Item) -> Option<(String, i64, String)> {
    entry_on(item, PLACEMENT_MODEL_ATTR, PLACEMENT_SORT_ATTR)
}

/// Moves `key`'s entry in `index` from `before` to `after` when it changed.
fn move_entry(index: &mut BTreeSet<(String, i64, String)>, before: Option<(String, i64, String)>, after: Option<(String, i64, String)>) {
    if before != after {
        if let Some(old) = before {
            index.remove(&old);
        }
        if let Some(new) = after {
            index.insert(new);
        }
    }
}

/// Only the key and `attrs` of `item`: each wanted attribute looked up (a dozen lookups), not
/// every attribute of the item compared with every wanted name.
fn projected(item: &Item, attrs: &[&str]) -> Item {
    std::iter::once(KEY_ATTR)
        .chain(attrs.iter().copied())
        .filter_map(|a| item.get_key_value(a))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<Table, MemTable>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The conditional write itself, in place; the written item, or `None` if the condition
    /// failed. The index moves only when the item's state or sort key changed.
    fn write<'t>(t: &'t mut MemTable, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<&'t Item>> {
        worldland_core::state::expr::check_paths(ops)?;
        if !eval(cond, t.items.get(key)) {
            return Ok(None);
        }
        let before = t.items.get(key).map(|i| (index_entry(i), placement_entry(i)));
        match t.items.get_mut(key) {
            Some(item) => apply_in_place(item, ops)?,
            None => {
                // Created only if the whole update applies.
                let mut item = Item::from([(KEY_ATTR.to_string(), Value::from(key))]);
                apply_in_place(&mut item, ops)?;
                t.items.insert(key.to_string(), item);
            }
        }
        let after = t.items.get(key).map(|i| (index_entry(i), placement_entry(i)));
        let ((state_before, place_before), (state_after, place_after)) = (before.unwrap_or_default(), after.unwrap_or_default());
        move_entry(&mut t.index, state_before, state_after);
        move_entry(&mut t.placement, place_before, place_after);
        Ok(t.items.get(key))
    }

    /// The write stamped with its token (see `replay`): a replay of a write that applied answers
    /// the item as stored, as DynamoDB's store does.
    fn write_stamped<'t>(t: &'t mut MemTable, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<&'t Item>> {
        let mut w = replay::stamp(cond, ops);
        if w.token.is_some() {
            // The ring shifts along, read under the same lock as the write.
            w.ops.extend(replay::ring_shift(t.items.get(key)));
        }
        if Self::write(t, key, &w.cond, &w.ops)?.is_some() {
            return Ok(t.items.get(key));
        }
        Ok(match &w.token {
            Some(token) => t.items.get(key).filter(|i| replay::carries(Some(i), token)),
            None => None,
        })
    }
}

#[async_trait]
impl ItemStore for MemoryStore {
    async fn get(&self, table: Table, key: &str) -> StoreResult<Option<Item>> {
        let tables = self.tables.lock().expect("store lock");
        Ok(tables.get(&table).and_then(|t| t.items.get(key)).cloned())
    }

    async fn update(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<Item>> {
        let mut tables = self.tables.lock().expect("store lock");
        Ok(Self::write_stamped(tables.entry(table).or_default(), key, cond, ops)?.cloned())
    }

    async fn update_if(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<bool> {
        let mut tables = self.tables.lock().expect("store lock");
        Ok(Self::write_stamped(tables.entry(table).or_default(), key, cond, ops)?.is_some())
    }

    async fn query_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<Vec<Item>> {
        let tables = self.tables.lock().expect("store lock");
        let Some(t) = tables.get(&table) else {
            return Ok(vec![]);
        };
        let lo = (state.to_string(), i64::MIN, String::new());
        let hi = (state.to_string(), hb_before.unwrap_or(i64::MAX), String::new());
        let keys = if hb_before.is_some() {
            t.index.range(lo..hi).collect::<Vec<_>>()
        } else {
            t.index.range(lo..).take_while(|(s, _, _)| s == state).collect()
        };
        Ok(keys.into_iter().filter_map(|(_, _, k)| t.items.get(k).cloned()).collect())
    }

    async fn query_by_state_projected(&self, table: Table, state: &str, hb_before: Option<i64>, attrs: &[&str]) -> StoreResult<Vec<Item>> {
        let tables = self.tables.lock().expect("store lock");
        let Some(t) = tables.get(&table) else { return Ok(vec![]) };
        let lo = (state.to_string(), i64::MIN, String::new());
        let hi = (state.to_string(), hb_before.unwrap_or(i64::MAX), String::new());
        Ok(t.index
            .range(lo..hi)
            .filter(|(s, _, _)| s == state)
            .filter_map(|(_, _, k)| t.items.get(k))
            .map(|item| projected(item, attrs))
            .collect())
    }

    async fn placement_page(&self, q: &PlacementQuery<'_>) -> StoreResult<PlacementPage> {
        use std::ops::Bound;
        let tables = self.tables.lock().expect("store lock");
        let Some(t) = tables.get(&Table::Providers) else {
            return Ok(PlacementPage::default());
        };
        let start = match q.after {
            Some(c) => Bound::Excluded((q.model.to_string(), c.price_micros, c.key.clone())),
            None => Bound::Included((q.model.to_string(), i64::MIN, String::new())),
        };
        let cap = q.max_price_micros.unwrap_or(i64::MAX);
        let read: Vec<&(String, i64, String)> = t
            .placement
            .range((start, Bound::Unbounded))
            .take_while(|(m, price, _)| m == q.model && *price <= cap)
            .take(q.limit.max(1))
            .collect();
        // A full page may have more behind it (DynamoDB answers the same).
        let next = read
            .last()
            .filter(|_| read.len() == q.limit.max(1))
            .map(|(_, price, key)| PlacementCursor {
                price_micros: *price,
                key: key.clone(),
            });
        Ok(PlacementPage {
            items: read
                .iter()
                .filter_map(|(_, _, k)| t.items.get(k))
                .filter(|item| item.get(INDEX_STATE_ATTR).and_then(Value::as_str) == Some(q.state))
                .map(|item| projected(item, q.attrs))
                .collect(),
            read: read.len(),
            next,
        })
    }

    async fn count_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<usize> {
        let tables = self.tables.lock().expect("store lock");
        let Some(t) = tables.get(&table) else { return Ok(0) };
        let lo = (state.to_string(), i64::MIN, String::new());
        let hi = match hb_before {
            Some(before) => (state.to_string(), before, String::new()),
            None => (format!("{state}\0"), i64::MIN, String::new()),
        };
        Ok(t.index.range(lo..hi).count())
    }

    async fn newest_in_state(&self, table: Table, state: &str) -> StoreResult<Option<i64>> {
        let tables = self.tables.lock().expect("store lock");
        let Some(t) = tables.get(&table) else { return Ok(None) };
        // Every entry of `state` lies between (state, MIN, "") and its successor string.
        let lo = (state.to_string(), i64::MIN, String::new());
        let hi = (format!("{state}\0"), i64::MIN, String::new());
        Ok(t.index.range(lo..hi).next_back().map(|(_, hb, _)| *hb))
    }

    async fn scan(&self, table: Table) -> StoreResult<Vec<Item>> {
        let tables = self.tables.lock().expect("store lock");
        let mut out: Vec<Item> = tables.get(&table).map(|t| t.items.values().cloned().collect()).unwrap_or_default();
        out.sort_by(|a, b| a.get(KEY_ATTR).cmp(&b.get(KEY_ATTR)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        super::super::contract::run_all(&MemoryStore::new()).await;
    }
}
