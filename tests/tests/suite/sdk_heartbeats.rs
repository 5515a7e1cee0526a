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

/// Runs the heartbeat loop on `dir` until the stream holds more than `more_than` entries; the
/// `seq` of every entry.
async fn beat_until(url: &str, p: &SimulatedProvider, dir: &std::path::Path, more_than: usize) -> Vec<u64> {
    let streams = StreamNames::default();
    let settings = HeartbeatSettings {
        redis_url: url.into(),
        streams: streams.clone(),
        provider_id: p.provider_id.clone(),
        node_name: "gpu-node-00002".into(),
        interval: Duration::from_millis(50),
        timeouts: Default::default(),
        state_dir: Some(dir.to_path_buf()),
    };
    let (stop, rx) = broadcast::channel(1);
    let beating = tokio::spawn(run_heartbeats(settings, p.key.clone(), Usage::default, rx));
    let all = tokio::time::timeout(Duration::from_secs(10), entries(url, &streams.heartbeat(), more_than))
        .await
        .expect("heartbeats arrive");
    let _ = stop.send(());
    beating.await.unwrap();
    all.iter()
        .map(|(data, _)| serde_json::from_str::<Heartbeat>(data).unwrap().seq.expect("the SDK sends seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sdk_continues_its_signed_sequence_from_its_state_directory() {
    let port = worldland_tests::spare_port();
    let url = format!("redis://127.0.0.1:{port}");
    let _redis = start_redis(port).await;
    let p = SimulatedProvider::new(2, chrono::Utc::now());
    let dir = std::env::temp_dir().join(format!("wl-seq-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // A sequence far ahead of the clock (it ran fast once): a restart must continue it, not
    // fall back to the clock's floor, which the broker would ignore.
    let ahead = chrono::Utc::now().timestamp_millis() as u64 + 1_000_000_000;
    std::fs::write(dir.join(worldland_provider_sdk::sequence::FILE), ahead.to_string()).unwrap();
    let first = beat_until(&url, &p, &dir, 1).await;
    let second = beat_until(&url, &p, &dir, first.len() + 1).await;
    assert_eq!(first[0], ahead + 1, "continued from the state directory");
    assert!(second.windows(2).all(|w| w[0] < w[1]), "always growing: {second:?}");
    assert!(second.len() > first.len(), "the restarted SDK sent more");
    let saved: u64 = std::fs::read_to_string(dir.join(worldland_provider_sdk::sequence::FILE))
        .unwrap()
        .parse()
        .unwrap();
    assert!(saved >= *second.last().unwrap(), "every number sent was saved first");
    std::fs::remove_dir_all(&dir).unwrap();
}
