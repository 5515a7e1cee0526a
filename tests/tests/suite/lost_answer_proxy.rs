//! The lost-answer proxy in front of a real dynalite (issue 22): a write whose answer it loses
//! has applied, the AWS SDK's standard retry mode sends it again, and `DynamoStore` reads the
//! replay as its own write — applied once, answered "applied". Also what faults.rs relies on:
//! keep-alive and chunked bodies forwarded as they are, only applied writes' answers lost, and a
//! dynalite restarted on the same port found again without a request ever hanging.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use worldland_core::state::{Cond, ItemStore, Op, Table, Value};
use worldland_runtime::backends;
use worldland_tests::lost_answer_proxy::{LostAnswerProxy, LOST_ANSWER_BODY};
use worldland_tests::private_dynalite::PrivateDynalite;
use worldland_tests::TestEnv;

/// A proxy to the suite's dynalite, and a test environment whose store talks through it.
async fn through_proxy(every: u64) -> (LostAnswerProxy, TestEnv) {
    let upstream = worldland_tests::dynamodb_endpoint().trim_start_matches("http://").to_string();
    let proxy = LostAnswerProxy::start(&upstream, every).await;
    let env = TestEnv::new(&[("WORLDLAND_DYNAMODB_ENDPOINT", &proxy.endpoint())]);
    (proxy, env)
}

/// A store on the same tables that skips the proxy: what dynalite really holds.
async fn direct(env: &TestEnv) -> worldland_adapters::state::dynamo::DynamoStore {
    let mut cfg = env.cfg.clone();
    cfg.dynamodb_endpoint = Some(worldland_tests::dynamodb_endpoint());
    backends::dynamo(&cfg).await
}

fn n_of(item: &Option<worldland_core::state::Item>) -> Option<i64> {
    item.as_ref()?.get("n").and_then(Value::as_i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_write_whose_answer_is_lost_applies_once_and_reads_as_applied() {
    let (proxy, env) = through_proxy(1).await;
    let store = env.dynamo().await;
    let truth = direct(&env).await;

    let first = store
        .update(Table::Jobs, "lost-1", &Cond::ItemNotExists, &[Op::Add("n".into(), 1)])
        .await
        .expect("the SDK retries the lost answer and the store reads its own write");
    assert_eq!(n_of(&first), Some(1), "answered applied, with the item as stored: {first:?}");
    assert_eq!(proxy.lost().get("UpdateItem"), Some(&1), "{:?}", proxy.lost());
    let jobs = store.names().jobs.clone();
    assert_eq!(proxy.lost_by_table(), [(jobs, 1)].into(), "counted by table too");
    let stored = truth.get(Table::Jobs, "lost-1").await.expect("direct read");
    assert_eq!(n_of(&stored), Some(1), "applied once: {stored:?}");

    // Someone else's write (the item exists now) is still refused, and its answer — nothing
    // applied — is never lost.
    let second = store
        .update(Table::Jobs, "lost-1", &Cond::ItemNotExists, &[Op::Add("n".into(), 1)])
        .await
        .expect("a refused write answers");
    assert_eq!(second, None);
    assert_eq!(proxy.lost_total(), 1, "{:?}", proxy.lost());
    assert_eq!(n_of(&truth.get(Table::Jobs, "lost-1").await.unwrap()), Some(1));
}

/// What the store's write token is for: the SDK's standard retry mode resends a write whose
/// answer was a 500 — three attempts in all — and without a token each resend applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_retries_a_lost_answer_twice_and_an_unguarded_write_applies_each_time() {
    let (proxy, env) = through_proxy(1).await;
    let store = env.dynamo().await;
    let err = store
        .client()
        .update_item()
        .table_name(&store.names().jobs)
        .key("id", AttributeValue::S("unguarded".into()))
        .update_expression("ADD n :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .expect_err("every attempt's answer is lost");
    let text = format!("{:?}", err.as_service_error());
    assert!(
        text.contains("answer lost (injected)"),
        "the injected error reaches the caller: {text}"
    );
    assert_eq!(proxy.lost().get("UpdateItem"), Some(&3), "three attempts: {:?}", proxy.lost());
    let stored = direct(&env).await.get(Table::Jobs, "unguarded").await.unwrap();
    assert_eq!(n_of(&stored), Some(3), "each attempt applied: {stored:?}");
}

/// Reads one HTTP answer with a `Content-Length` body: (status, body).
async fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut raw = vec![];
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the proxy closed the connection mid-answer: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// A request as the SDK would send it (dynalite checks the signature's shape, not its value).
fn request(target: &str, body: &str, chunked: bool) -> Vec<u8> {
    let framing = if chunked {
        format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
    } else {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    };
    format!(
        "POST / HTTP/1.1\r\nHost: dynamodb\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: DynamoDB_20120810.{target}\r\nX-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host, Signature=00\r\n{framing}"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_keep_alive_requests_are_forwarded_and_only_applied_writes_lose_their_answer() {
    let (proxy, env) = through_proxy(1).await;
    let jobs = env.dynamo().await.names().jobs.clone();
    let (before_connections, before_requests) = (proxy.connections(), proxy.requests());
    let put = format!(
        r#"{{"TableName":"{jobs}","Key":{{"id":{{"S":"raw"}}}},"UpdateExpression":"SET v = :v","ConditionExpression":"attribute_not_exists(id)","ExpressionAttributeValues":{{":v":{{"S":"chunked"}}}}}}"#
    );
    let get = format!(r#"{{"TableName":"{jobs}","Key":{{"id":{{"S":"raw"}}}},"ConsistentRead":true}}"#);
    let mut s = TcpStream::connect(proxy.endpoint().trim_start_matches("http://")).await.unwrap();

    s.write_all(&request("UpdateItem", &put, true)).await.unwrap();
    assert_eq!(
        read_answer(&mut s).await,
        (500, LOST_ANSWER_BODY.to_string()),
        "applied, answer lost"
    );
    s.write_all(&request("GetItem", &get, false)).await.unwrap();
    let (status, body) = read_answer(&mut s).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""v":{"S":"chunked"}"#), "the chunked write applied: {body}");
    s.write_all(&request("UpdateItem", &put, true)).await.unwrap();
    let (status, body) = read_answer(&mut s).await;
    assert_eq!(status, 400, "its replay is refused, and that answer is forwarded: {body}");
    assert!(body.contains("ConditionalCheckFailedException"), "{body}");

    assert_eq!(proxy.connections() - before_connections, 1, "one connection");
    assert_eq!(proxy.requests() - before_requests, 3, "three requests on it");
    assert_eq!(proxy.lost_total(), 1, "{:?}", proxy.lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynalite_restarted_on_its_port_is_found_again_and_a_dead_one_never_hangs_a_request() {
    let mut dynalite = tokio::task::block_in_place(PrivateDynalite::start);
    let proxy = LostAnswerProxy::start(&dynalite.addr(), 0).await;
    let env = TestEnv::new(&[("WORLDLAND_DYNAMODB_ENDPOINT", &proxy.endpoint())]);
    let store = env.dynamo().await;
    let set = [Op::set("v", "kept")];
    assert!(store.update(Table::Jobs, "r", &Cond::Always, &set).await.unwrap().is_some());

    tokio::task::block_in_place(|| dynalite.kill9());
    let dead = tokio::time::timeout(Duration::from_secs(30), store.get(Table::Jobs, "r")).await;
    assert!(matches!(dead, Ok(Err(_))), "an error, not a hang: {dead:?}");

    tokio::task::block_in_place(|| dynalite.launch());
    let back = tokio::time::timeout(Duration::from_secs(30), store.get(Table::Jobs, "r"))
        .await
        .expect("no hang")
        .expect("dynalite again, through the same proxy");
    assert_eq!(back.and_then(|i| i.get("v").cloned()), Some(Value::from("kept")));
}
