//! The tables and their indexes, created (and awaited active) by `infra init` and the tests the
//! way the SAM template declares them; deleted by the tests.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TableStatus,
};

use worldland_core::state::{StoreResult, Table, INDEX_SORT_ATTR, INDEX_STATE_ATTR, KEY_ATTR, PLACEMENT_MODEL_ATTR, PLACEMENT_SORT_ATTR};

use super::{backend, DynamoStore};

impl DynamoStore {
    /// Creates the tables and their indexes if they are missing; waits until they are active.
    /// Idempotent. A providers table made before the placement index is refused with a reason.
    pub async fn ensure_tables(&self) -> StoreResult<()> {
        for table in [Table::Providers, Table::Jobs] {
            let name = self.names.of(table).to_string();
            let described = self.client.describe_table().table_name(&name).send().await;
            match described.as_ref().ok().and_then(|d| d.table()) {
                None => self.create_table(table).await?,
                Some(t) if table == Table::Providers => {
                    let has_placement = t
                        .global_secondary_indexes()
                        .iter()
                        .any(|g| g.index_name() == Some(self.names.providers_placement_index.as_str()));
                    if !has_placement {
                        // Deployed tables get it from the SAM template (CloudFormation adds it and
                        // DynamoDB backfills it); dynalite cannot add an index to a table.
                        return Err(backend(format!(
                            "table {name} has no index {}: deploy infra/template.yaml, or delete the table and run `worldland infra init`",
                            self.names.providers_placement_index
                        )));
                    }
                }
                Some(_) => {}
            }
            self.wait_active(&name).await?;
        }
        Ok(())
    }

    fn attr_def(n: &str, t: ScalarAttributeType) -> StoreResult<AttributeDefinition> {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(t)
            .build()
            .map_err(backend)
    }

    fn index(name: &str, partition: &str, sort: &str, projection: Projection) -> StoreResult<GlobalSecondaryIndex> {
        let schema = |n: &str, t: KeyType| KeySchemaElement::builder().attribute_name(n).key_type(t).build().map_err(backend);
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(schema(partition, KeyType::Hash)?)
            .key_schema(schema(sort, KeyType::Range)?)
            .projection(projection)
            .build()
            .map_err(backend)
    }

    /// The placement index: only what placement reads is projected, so heartbeats (which change
    /// none of it) never write to it.
    fn placement_index(&self) -> StoreResult<GlobalSecondaryIndex> {
        let projection = Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(
                worldland_core::placement::PLACEMENT_ATTRS
                    .iter()
                    .filter(|a| **a != PLACEMENT_SORT_ATTR)
                    .map(|a| a.to_string())
                    .collect(),
            ))
            .build();
        Self::index(
            &self.names.providers_placement_index,
            PLACEMENT_MODEL_ATTR,
            PLACEMENT_SORT_ATTR,
            projection,
        )
    }

    async fn create_table(&self, table: Table) -> StoreResult<()> {
        let schema = KeySchemaElement::builder()
            .attribute_name(KEY_ATTR)
            .key_type(KeyType::Hash)
            .build()
            .map_err(backend)?;
        let all = Projection::builder().projection_type(ProjectionType::All).build();
        // Every table has the sparse state index (providers: last heartbeat; jobs: due).
        let mut req = self
            .client
            .create_table()
            .table_name(self.names.of(table))
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(Self::attr_def(KEY_ATTR, ScalarAttributeType::S)?)
            .key_schema(schema)
            .attribute_definitions(Self::attr_def(INDEX_STATE_ATTR, ScalarAttributeType::S)?)
            .attribute_definitions(Self::attr_def(INDEX_SORT_ATTR, ScalarAttributeType::N)?)
            .global_secondary_indexes(Self::index(self.names.index_of(table), INDEX_STATE_ATTR, INDEX_SORT_ATTR, all)?);
        if table == Table::Providers {
            req = req
                .attribute_definitions(Self::attr_def(PLACEMENT_MODEL_ATTR, ScalarAttributeType::S)?)
                .attribute_definitions(Self::attr_def(PLACEMENT_SORT_ATTR, ScalarAttributeType::N)?)
                .global_secondary_indexes(self.placement_index()?);
        }
        match req.send().await {
            Err(e) if !e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    async fn wait_active(&self, name: &str) -> StoreResult<()> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..100 {
            let out = self.client.describe_table().table_name(name).send().await;
            let active = out.as_ref().ok().and_then(|o| o.table()).map(|t| {
                t.table_status() == Some(&TableStatus::Active)
                    && t.global_secondary_indexes()
                        .iter()
                        .all(|g| g.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active))
            });
            if active == Some(true) {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        Err(backend(format!("table {name} did not become active")))
    }

    /// Deletes the tables (tests clean up what they created).
    pub async fn delete_tables(&self) -> StoreResult<()> {
        for table in [Table::Providers, Table::Jobs] {
            let _ = self.client.delete_table().table_name(self.names.of(table)).send().await;
        }
        Ok(())
    }
}
