//! The real Lambda bootstrap binaries under cargo-lambda's emulator (`cargo lambda watch` on
//! 127.0.0.1, `cargo lambda invoke`), each handed a real SQS event with good, bad and duplicate
//! records: the bad (refused) records are parked by the function on its queue's dead-letter queue
//! and not named in `batchItemFailures` (SQS would deliver them again), and the state in dynalite
//! is as if each good message had arrived once.

use serde_json::json;
use worldland_core::messages::jobs::{AllocateRequest, Workload};
use worldland_core::messages::topics;
use worldland_core::state::{ItemStore, Table, Value};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::lambda_api::invoke_once;
use worldland_tests::{seed_available, TestEnv};

fn sqs_record(id: &str, body: &str, routing_key: &str) -> serde_json::Value {
    json!({
        "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {"routing_key": {"stringValue": routing_key, "dataType": "String"}},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:q", "awsRegion": "us-east-1"
    })
}

fn failures(response: &serde_json::Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

/// The message ids parked on `worker`'s dead-letter queue (waits for `n`).
async fn parked(vars: &[(String, String)], worker: &str, n: usize) -> Vec<String> {
    use worldland_core::bus::{Bus, QueueSpec};
    let cfg = worldland_runtime::Config::from_vars(vars.to_vec()).unwrap();
    let bus = worldland_runtime::backends::sqs(&cfg).await;
    let dlq = QueueSpec::new(cfg.queue(worker), &[]).dead_letter_name();
    let mut sub = bus.subscribe(&QueueSpec::new(dlq, &[])).await.unwrap();
    let mut ids = vec![];
    for _ in 0..n {
        let d = tokio::time::timeout(std::time::Duration::from_secs(15), sub.next())
            .await
            .expect("a parked record within 15 s")
            .unwrap();
        ids.push(d.message_id.clone().unwrap_or_default());
        d.ack().await.unwrap();
    }
    ids
}

/// The environment a Lambda gets: this test's tables, queues and streams.
async fn lambda_env(env: &TestEnv) -> Vec<(String, String)> {
    let sqs = std::env::var("WORLDLAND_TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5123".into());
    let vars = vec![
        ("WORLDLAND_STORE".to_string(), "dynamodb".to_string()),
        ("WORLDLAND_DYNAMODB_ENDPOINT".into(), env.cfg.dynamodb_endpoint.clone().unwrap()),
        ("WORLDLAND_PROVIDERS_TABLE".into(), env.cfg.providers_table.clone()),
        ("WORLDLAND_JOBS_TABLE".into(), env.cfg.jobs_table.clone()),
        ("WORLDLAND_BUS".into(), "sqs".into()),
        ("WORLDLAND_SQS_ENDPOINT".into(), sqs.clone()),
        ("WORLDLAND_QUEUE_PREFIX".into(), env.cfg.queue_prefix.clone()),
        ("WORLDLAND_STREAM_PREFIX".into(), env.cfg.stream_prefix.clone()),
        ("WORLDLAND_CLUSTER".into(), "simulated".into()),
        ("RUST_LOG".into(), "error".into()),
    ];
    let cfg = worldland_runtime::Config::from_vars(vars.clone()).unwrap();
    let bus = worldland_runtime::backends::sqs(&cfg).await;
    for q in cfg.queues() {
        bus.declare(&q).await.expect("moto (scripts/test starts it)");
    }
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_handler_lambda_parks_the_bad_records() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    let vars = lambda_env(&env).await;
    let now = chrono::Utc::now();
    let (a, b) = (SimulatedProvider::new(1, now), SimulatedProvider::new(2, now));
    let env_a = serde_json::to_string(&a.envelope("provider:registration", "1-0")).unwrap();
    let env_b = serde_json::to_string(&b.envelope("provider:registration", "2-0")).unwrap();
    let key = topics::REGISTRATION_RECEIVED;
    let event = json!({"Records": [
        sqs_record("m-a", &env_a, key),
        sqs_record("m-bad", "{not json", key),
        sqs_record("m-b", &env_b, key),
        sqs_record("m-a-again", &env_a, key),
    ]});
    let response = invoke_once("registration-handler-lambda", &vars, &event).await;
    assert!(failures(&response).is_empty(), "{response}");
    assert_eq!(parked(&vars, "registration-handler", 1).await, vec!["m-bad"]);
    let providers: Vec<_> = store
        .scan(Table::Providers)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| !worldland_core::provider::nodes::is_not_a_provider(i))
        .collect();
    assert_eq!(providers.len(), 2, "the duplicate made no second provider");
    assert!(providers.iter().all(|p| p.get("state") == Some(&Value::from("pending"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocator_lambda_parks_the_bad_records() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    let vars = lambda_env(&env).await;
    let now = chrono::Utc::now();
    seed_available(&store, &SimulatedProvider::new(3, now).registration, now).await;
    let req = |job: &str| {
        serde_json::to_string(&AllocateRequest {
            job_id: job.into(),
            customer_id: "c".into(),
            gpu_model: None,
            gpus: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            max_price_per_gpu_hour: None,
            duration_s: None,
            workload: Workload::of_image("docker.io/library/python:3.12-slim"),
        })
        .unwrap()
    };
    let event = json!({"Records": [
        sqs_record("m-1", &req("job-1"), topics::JOB_ALLOCATE),
        sqs_record("m-zero", r#"{"job_id":"job-2","customer_id":"c","gpus":0,"cpu_cores":1,"memory_mb":1}"#, topics::JOB_ALLOCATE),
        sqs_record("m-1-again", &req("job-1"), topics::JOB_ALLOCATE),
        sqs_record("m-release", r#"{"job_id":"job-1","reason":"done"}"#, topics::JOB_RELEASE),
    ]});
    let response = invoke_once("allocator-lambda", &vars, &event).await;
    assert!(failures(&response).is_empty(), "{response}");
    assert_eq!(parked(&vars, "allocator", 1).await, vec!["m-zero"]);
    let job = store.get(Table::Jobs, "job-1").await.unwrap().unwrap();
    assert_eq!(job.get("state"), Some(&Value::from("released")), "allocated once, then released");
    assert!(worldland_core::job::audit(&store).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_issuer_lambda_parks_the_bad_records() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    let mut vars = lambda_env(&env).await;
    vars.push(("WORLDLAND_REDIS_URL".into(), env.cfg.redis_url.clone()));
    let now = chrono::Utc::now();
    let p = SimulatedProvider::new(4, now);
    let reg_store: std::sync::Arc<dyn ItemStore> = std::sync::Arc::new(store.clone());
    worldland_core::provider::register_pending(&p.registration, "7-0", now)
        .run(reg_store.as_ref(), &p.provider_id)
        .await
        .unwrap();
    let validated = serde_json::to_string(&worldland_core::messages::ProviderValidated {
        provider_id: p.provider_id.clone(),
        registration_id: "7-0".into(),
        enc_pubkey: p.registration.enc_pubkey.clone(),
    })
    .unwrap();
    let key = topics::PROVIDER_VALIDATED;
    let event = json!({"Records": [
        sqs_record("m-v", &validated, key),
        sqs_record("m-unknown", r#"{"provider_id":"nobody","registration_id":"1-0"}"#, key),
        sqs_record("m-v-again", &validated, key),
    ]});
    let response = invoke_once("join-token-issuer-lambda", &vars, &event).await;
    assert!(failures(&response).is_empty(), "{response}");
    assert_eq!(parked(&vars, "join-token-issuer", 1).await, vec!["m-unknown"]);
    let rec = worldland_core::provider::ProviderRecord::load(reg_store.as_ref(), &p.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.state,
        worldland_core::messages::ProviderState::Approved,
        "approved once, with one token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_recorder_lambda_parks_the_bad_records() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    let vars = lambda_env(&env).await;
    let now = chrono::Utc::now();
    let p = SimulatedProvider::new(5, now);
    seed_available(&store, &p.registration, now - chrono::Duration::seconds(60)).await;
    let beat = serde_json::to_string(&worldland_tests::lifecycle::heartbeat(&p, now, 0)).unwrap();
    let key = topics::HEARTBEAT_RECEIVED;
    let event = json!({"Records": [
        sqs_record("m-hb", &beat, key),
        sqs_record("m-hb-again", &beat, key),
        sqs_record("m-bad", r#"{"data":"{}","stream":"s","entry_id":"1-0"}"#, key),
    ]});
    let response = invoke_once("heartbeat-recorder-lambda", &vars, &event).await;
    assert!(failures(&response).is_empty(), "{response}");
    assert_eq!(parked(&vars, "heartbeat-recorder", 1).await, vec!["m-bad"]);
    let rec = worldland_core::provider::ProviderRecord::load(&store, &p.provider_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.last_heartbeat.map(|t| t.timestamp_millis()), Some(now.timestamp_millis()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_sweeper_lambda_sweeps_on_a_scheduled_event() {
    let env = TestEnv::new(&[]);
    let store = env.dynamo().await;
    let vars = lambda_env(&env).await;
    let now = chrono::Utc::now();
    seed_available(
        &store,
        &SimulatedProvider::new(6, now).registration,
        now - chrono::Duration::minutes(10),
    )
    .await;
    let event = json!({
        "version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events", "account": "000000000000",
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/sweep"], "detail": {}
    });
    let report = invoke_once("staleness-sweeper-lambda", &vars, &event).await;
    assert_eq!(report["marked_offline"], 1, "{report}");
}

/// The approver's Lambda passes once per scheduled event and reports what it decided (a
/// simulated cluster has no CSRs: an empty pass, but the whole Lambda path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_approver_lambda_passes_on_a_scheduled_event() {
    let env = TestEnv::new(&[]);
    let vars = lambda_env(&env).await;
    let now = chrono::Utc::now();
    let event = json!({
        "version": "0", "id": "e-2", "detail-type": "Scheduled Event", "source": "aws.events", "account": "000000000000",
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/decide"], "detail": {}
    });
    let report = invoke_once("csr-approver-lambda", &vars, &event).await;
    assert_eq!(
        report,
        json!({"examined": 0, "approved": 0, "denied": 0, "left": 0, "failed": 0}),
        "{report}"
    );
}
