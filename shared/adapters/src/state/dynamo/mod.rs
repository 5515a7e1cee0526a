//! DynamoDB store (aws-sdk-dynamodb). Each `update` is one conditional UpdateItem: no
//! transactions, so it also runs on dynalite and costs one write unit on DynamoDB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Select};
use aws_sdk_dynamodb::Client;

use worldland_core::state::replay;
use worldland_core::state::{
    Cond, Item, ItemStore, Op, PlacementCursor, PlacementPage, PlacementQuery, StoreResult, Table, TableNames, Value, INDEX_SORT_ATTR,
    INDEX_STATE_ATTR, KEY_ATTR, PLACEMENT_MODEL_ATTR, PLACEMENT_SORT_ATTR,
};

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    names: TableNames,
}

mod encode;
mod tables;

use encode::{backend, from_item, ExprBuilder};

impl DynamoStore {
    pub fn new(client: Client, names: TableNames) -> Self {
        Self { client, names }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn names(&self) -> &TableNames {
        &self.names
    }
}

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, table: Table, key: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(self.names.of(table))
            .key(KEY_ATTR, AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        out.item().map(from_item).transpose()
    }

    async fn update(&self, table: Table, key: &str, cond: &Cond, ops: &[Op]) -> StoreResult<Option<Item>> {
        if ops.is_empty() {
            // A pure check writes nothing: a consistent read judged by the same evaluator.
            let item = self.get(table, key).await?;
            return Ok(if worldland_core::state::expr::eval(cond, item.as_ref()) {
                Some(item.unwrap_or_default())
            } else {
                None
            });
        }
        // Stamped once, before the SDK's retries: every resend carries the same token.
        let w = replay::stamp(cond, ops);
        let mut b = ExprBuilder::default();
        let condition = (w.cond != Cond::Always).then(|| b.cond(&w.cond));
        let update = b.update(&w.ops);
        let res = self
            .client
            .update_item()
            .table_name(self.names.of(table))
            .key(KEY_ATTR, AttributeValue::S(key.to_string()))
            .update_expression(update)
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(b.names))
            .set_expression_attribute_values((!b.values.is_empty()).then_some(b.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(out.attributes().map(from_item).transpose()?.unwrap_or_default())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                // Our own earlier attempt (applied, its answer lost, resent by the SDK) or
                // someone else's write: the item says which (read back: dynalite ignores
                // ReturnValuesOnConditionCheckFailure).
                let Some(token) = &w.token else { return Ok(None) };
                let item = self.get(table, key).await?;
                Ok(item.filter(|i| replay::carries(Some(i), token)))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn query_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<Vec<Item>> {
        self.query(table, state, hb_before, None).await
    }

    async fn query_by_state_projected(&self, table: Table, state: &str, hb_before: Option<i64>, attrs: &[&str]) -> StoreResult<Vec<Item>> {
        self.query(table, state, hb_before, Some(attrs)).await
    }

    async fn count_by_state(&self, table: Table, state: &str, hb_before: Option<i64>) -> StoreResult<usize> {
        let (key_cond, b) = key_condition(state, hb_before);
        let mut count = 0usize;
        let mut start = None;
        loop {
            let page = self
                .index_query(table, &key_cond, &b)
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            count += usize::try_from(page.count()).unwrap_or(0);
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    async fn newest_in_state(&self, table: Table, state: &str) -> StoreResult<Option<i64>> {
        let (key_cond, mut b) = key_condition(state, None);
        let projection = b.path(INDEX_SORT_ATTR);
        let page = self
            .index_query(table, &key_cond, &b)
            .scan_index_forward(false)
            .limit(1)
            .projection_expression(projection)
            .send()
            .await
            .map_err(backend)?;
        match page.items().first() {
            Some(raw) => Ok(from_item(raw)?.get(INDEX_SORT_ATTR).and_then(Value::as_i64)),
            None => Ok(None),
        }
    }

    async fn placement_page(&self, q: &PlacementQuery<'_>) -> StoreResult<PlacementPage> {
        let mut b = ExprBuilder::default();
        let (m, p) = (b.path(PLACEMENT_MODEL_ATTR), b.path(PLACEMENT_SORT_ATTR));
        let mv = b.value(AttributeValue::S(q.model.to_string()));
        let mut key_cond = format!("{m} = {mv}");
        if let Some(cap) = q.max_price_micros {
            let cv = b.value(AttributeValue::N(cap.to_string()));
            key_cond.push_str(&format!(" AND {p} <= {cv}"));
        }
        let state = b.path(INDEX_STATE_ATTR);
        let sv = b.value(AttributeValue::S(q.state.to_string()));
        let filter = format!("{state} = {sv}");
        let projection = std::iter::once(KEY_ATTR)
            .chain(q.attrs.iter().copied())
            .map(|a| b.path(a))
            .collect::<Vec<_>>()
            .join(", ");
        let start = q.after.map(|c| {
            HashMap::from([
                (KEY_ATTR.to_string(), AttributeValue::S(c.key.clone())),
                (PLACEMENT_MODEL_ATTR.to_string(), AttributeValue::S(q.model.to_string())),
                (PLACEMENT_SORT_ATTR.to_string(), AttributeValue::N(c.price_micros.to_string())),
            ])
        });
        let page = self
            .client
            .query()
            .table_name(self.names.of(Table::Providers))
            .index_name(&self.names.providers_placement_index)
            .key_condition_expression(key_cond)
            .filter_expression(filter)
            .projection_expression(projection)
            .set_expression_attribute_names(Some(b.names))
            .set_expression_attribute_values(Some(b.values))
            .limit(i32::try_from(q.limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(backend)?;
        let next = match page.last_evaluated_key() {
            None => None,
            Some(last) => {
                let key = last.get(KEY_ATTR).and_then(|v| v.as_s().ok()).cloned();
                let price = last
                    .get(PLACEMENT_SORT_ATTR)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok());
                match (key, price) {
                    (Some(key), Some(price_micros)) => Some(PlacementCursor { price_micros, key }),
                    _ => return Err(backend("the placement index answered a page end without its key")),
                }
            }
        };
        Ok(PlacementPage {
            items: page.items().iter().map(from_item).collect::<StoreResult<_>>()?,
            read: usize::try_from(page.scanned_count()).unwrap_or(0),
            next,
        })
    }

    async fn scan(&self, table: Table) -> StoreResult<Vec<Item>> {
        let mut out = vec![];
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(self.names.of(table))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for raw in page.items() {
                out.push(from_item(raw)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.get(KEY_ATTR).cmp(&b.get(KEY_ATTR)));
        Ok(out)
    }
}

/// The state index's key condition: `state`, and `hb_at` below `hb_before` when given.
fn key_condition(state: &str, hb_before: Option<i64>) -> (String, ExprBuilder) {
    let mut b = ExprBuilder::default();
    let s = b.path(INDEX_STATE_ATTR);
    let sv = b.value(AttributeValue::S(state.to_string()));
    let mut key_cond = format!("{s} = {sv}");
    if let Some(before) = hb_before {
        let h = b.path(INDEX_SORT_ATTR);
        let hv = b.value(AttributeValue::N(before.to_string()));
        key_cond.push_str(&format!(" AND {h} < {hv}"));
    }
    (key_cond, b)
}

impl DynamoStore {
    /// A query on `table`'s state index under `key_cond`, with the names and values it uses.
    fn index_query(
        &self,
        table: Table,
        key_cond: &str,
        b: &ExprBuilder,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(self.names.of(table))
            .index_name(self.names.index_of(table))
            .key_condition_expression(key_cond)
            .set_expression_attribute_names(Some(b.names.clone()))
            .set_expression_attribute_values(Some(b.values.clone()))
    }

    /// One index query, paged; with `attrs`, only those attributes (and the key) come back.
    async fn query(&self, table: Table, state: &str, hb_before: Option<i64>, attrs: Option<&[&str]>) -> StoreResult<Vec<Item>> {
        let (key_cond, mut b) = key_condition(state, hb_before);
        let projection = attrs.map(|a| {
            std::iter::once(KEY_ATTR)
                .chain(a.iter().copied())
                .map(|p| b.path(p))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let mut out = vec![];
        let mut start = None;
        loop {
            let page = self
                .index_query(table, &key_cond, &b)
                .set_projection_expression(projection.clone())
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for raw in page.items() {
                out.push(from_item(raw)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}
