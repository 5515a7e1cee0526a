//! The SDK's heartbeat loop against a Redis of its own that goes away and comes back: beats are
//! signed by the wallet, the outage is retried, and no backlog of stale heartbeats is sent after.

use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::broadcast;
use worldland_core::messages::Heartbeat;
use worldland_core::signature::{address_of, recover_personal};
use worldland_core::streams::StreamNames;
use worldland_provider_sdk::heartbeat::{run_heartbeats, HeartbeatSettings, Usage};
use worldland_provider_sdk::simulated::SimulatedProvider;

async fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (scripts/test installs it)");
    // A process start has no event to await: poll the port, bounded.
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not open port {port}");
}

/// Blocks until the stream has more than `after` entries; returns all of them.
async fn entries(url: &str, stream: &str, more_than: usize) -> Vec<(String, String)> {
    let mut conn = worldland_redis::connect(url, true).await.unwrap();
    loop {
        let all: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        if all.ids.len() > more_than {
            return all
                .ids
                .iter()
                .map(|e| (e.get::<String>("data").unwrap(), e.get::<String>("signature").unwrap()))
                .collect();
        }
        let last = all.ids.last().map(|e| e.id.clone()).unwrap_or_else(|| "0".into());
        let _: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5_000)
            .arg("STREAMS")
            .arg(stream)
            .arg(last)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_signed_survive_an_outage_and_leave_no_backlog() {
    let port = worldland_tests::spare_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut redis = start_redis(port).await;
    let p = SimulatedProvider::new(1, chrono::Utc::now());
    let streams = StreamNames::default();
    let interval = Duration::from_millis(100);
    let settings = HeartbeatSettings {
        redis_url: url.clone(),
        streams: streams.clone(),
        provider_id: p.provider_id.clone(),
        node_name: "gpu-node-00001".into(),
        interval,
        timeouts: Default::default(),
        state_dir: None,
    };
    let (stop, rx) = broadcast::channel(1);
    let beating = tokio::spawn(run_heartbeats(
        settings,
        p.key.clone(),
        || Usage {
            gpu: vec![50.0],
            cpu: 10.0,
            memory: 20.0,
        },
        rx,
    ));

    let before = tokio::time::timeout(Duration::from_secs(10), entries(&url, &streams.heartbeat(), 2))
        .await
        .expect("heartbeats arrive");
    let wallet = address_of(p.key.verifying_key());
    for (data, sig) in &before {
        assert_eq!(recover_personal(data.as_bytes(), sig).unwrap(), wallet, "signed by the wallet");
        let hb: Heartbeat = serde_json::from_str(data).unwrap();
        assert_eq!(
            (hb.provider_id.as_str(), hb.node_name.as_str()),
            (p.provider_id.as_str(), "gpu-node-00001")
        );
    }

    // Redis goes away for a while (its data with it), then comes back empty.
    redis.kill().await.unwrap();
    let outage = Duration::from_millis(1_500);
    tokio::time::sleep(outage).await;
    let back_at = chrono::Utc::now();
    let _redis = start_redis(port).await;
    let after = tokio::time::timeout(Duration::from_secs(10), entries(&url, &streams.heartbeat(), 1))
        .await
        .expect("heartbeats resume");
    let _ = stop.send(());
    let stats = beating.await.unwrap();
    assert!(stats.failed >= 1, "the outage was noticed: {stats:?}");
    // Nothing queued up during the outage: every beat after it is fresh.
    for (data, _) in &after {
        let hb: Heartbeat = serde_json::from_str(data).unwrap();
        assert!(
            hb.timestamp >= back_at - chrono::Duration::milliseconds(200),
            "a stale heartbeat from the outage: {}",
            hb.timestamp
        );
    }
}
