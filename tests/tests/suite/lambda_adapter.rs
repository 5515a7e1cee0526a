//! A worker core through the Lambda/SQS adapter: a batch with good, bad and duplicate records
//! parks exactly the bad ones on the dead-letter queue with their reason (reported as done, so
//! SQS does not deliver them again), and the state is as if each good message had arrived once.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::signature::SignaturePolicy;
use worldland_core::state::{ItemStore, Table};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_runtime::lambda::{handle_sqs_batch, MemoryPark};

fn record(id: &str, body: String) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(body);
    m
}

#[tokio::test]
async fn good_bad_and_duplicate_records_in_one_batch() {
    let now = Utc::now();
    let store = Arc::new(MemoryStore::new());
    let handler = registration_handler::RegistrationHandler(registration_handler::Context {
        store: store.clone(),
        bus: worldland_tests::validated_sink(),
        replies: Arc::new(MemoryReplies::default()),
        policy: Default::default(),
        signatures: SignaturePolicy::Required,
    });
    let a = SimulatedProvider::new(1, now);
    let b = SimulatedProvider::new(2, now);
    let env_a = serde_json::to_string(&a.envelope("provider:registration", "1-0")).unwrap();
    let env_b = serde_json::to_string(&b.envelope("provider:registration", "2-0")).unwrap();
    let mut unsigned = b.envelope("provider:registration", "3-0");
    unsigned.signature = None;
    let mut event = SqsEvent::default();
    event.records = vec![
        record("m-a", env_a.clone()),
        record("m-bad-json", "{not json".into()),
        record("m-b", env_b),
        record("m-a-again", env_a),
        record("m-unsigned", serde_json::to_string(&unsigned).unwrap()),
    ];
    let park = MemoryPark::default();
    let response = handle_sqs_batch(&handler, &park, event, &move || now).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert!(failed.is_empty(), "refused records are parked, not failed: {failed:?}");
    let parked: Vec<(Option<String>, String)> = park
        .parked
        .lock()
        .unwrap()
        .iter()
        .map(|p| (p.message_id.clone(), p.reason.clone()))
        .collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0], (Some("m-bad-json".into()), "malformed_json".into()));
    assert_eq!(parked[1].0.as_deref(), Some("m-unsigned"));
    let providers: Vec<_> = store
        .scan(Table::Providers)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| !worldland_core::provider::nodes::is_not_a_provider(i))
        .collect();
    assert_eq!(providers.len(), 2, "the duplicate made no second provider");
}
