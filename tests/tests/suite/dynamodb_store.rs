//! The DynamoDB store against dynalite: the same contract the in-memory store passes, plus a
//! race of conditional writes that must lose no update.

use std::sync::Arc;

use worldland_adapters::state::contract;
use worldland_core::state::ItemStore;
use worldland_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_passes_the_store_contract() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    contract::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_conditional_decrements_never_oversell() {
    let env = TestEnv::new(&[]);
    let store: Arc<dyn ItemStore> = Arc::new(env.dynamo().await);
    contract::racing_conditional_decrements(store, 16, 10, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_conditional_decrements_never_oversell() {
    let store: Arc<dyn ItemStore> = Arc::new(worldland_adapters::state::memory::MemoryStore::new());
    contract::racing_conditional_decrements(store, 16, 20, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_tables_is_idempotent() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    store.ensure_tables().await.expect("second ensure_tables");
}

/// A providers table made before the placement index existed is refused by `ensure_tables` with
/// the way out, rather than used with placement reads that would find nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_tables_refuses_a_providers_table_without_the_placement_index() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    };

    let env = TestEnv::new(&[]);
    let store = worldland_runtime::backends::dynamo(&env.cfg).await;
    let names = store.names().clone();
    let def = |n: &str, t| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build().unwrap();
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().unwrap();
    store
        .client()
        .create_table()
        .table_name(&names.providers)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(def("id", ScalarAttributeType::S))
        .attribute_definitions(def("state", ScalarAttributeType::S))
        .attribute_definitions(def("hb_at", ScalarAttributeType::N))
        .key_schema(key("id", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&names.providers_state_index)
                .key_schema(key("state", KeyType::Hash))
                .key_schema(key("hb_at", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("the older table (dynalite: scripts/test starts it)");
    let err = store.ensure_tables().await.expect_err("an older providers table is refused");
    let why = err.to_string();
    assert!(
        why.contains(&names.providers_placement_index) && why.contains("template.yaml"),
        "{why}"
    );
}
