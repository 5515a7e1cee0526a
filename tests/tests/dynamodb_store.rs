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
