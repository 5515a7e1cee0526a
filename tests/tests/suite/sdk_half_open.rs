//! The SDK's loops survive a Redis that stops answering (a half-open socket after a failover):
//! between the SDK and the real Redis sits a proxy that, once stopped, keeps every socket open and
//! forwards nothing on it, ever again. Each loop's read or write then times out (its BLOCK plus a
//! margin for a blocking read), is reported, and the loop gives its connection up for a new one
//! — which the proxy counts — instead of hanging; once the proxy forwards again, heartbeats
//! arrive and mining commands are obeyed again.
//!
//! Without a response timeout on the mining loop's blocking connection (as before), its XREAD
//! waits on the frozen socket forever and no new connection ever comes: the test fails there.

use std::time::Duration;

use tokio::sync::broadcast;
use worldland_adapters::replies::RedisReplies;
use worldland_core::messages::jobs::MiningCommand;
use worldland_core::replies::ProviderReplies;
use worldland_provider_sdk::heartbeat::{run_heartbeats, HeartbeatSettings, Usage};
use worldland_provider_sdk::mining::{run_commands, CommandAck, MiningSettings};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_provider_sdk::RedisTimeouts;
use worldland_tests::stall_proxy::StallProxy;
use worldland_tests::TestEnv;

/// Short timeouts, so the test runs in seconds.
const TIMEOUTS: RedisTimeouts = RedisTimeouts {
    connect: Duration::from_millis(300),
    response: Duration::from_millis(300),
};
/// How long a loop may take to notice that Redis stopped answering and try a new connection.
const NOTICE: Duration = Duration::from_secs(5);

/// The Redis behind `url` (`redis://host:port[/db]`), as `host:port`.
fn host_port(url: &str) -> String {
    let rest = url.trim_start_matches("redis://");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_resume_after_redis_stops_answering() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let proxy = StallProxy::start(&host_port(&env.cfg.redis_url)).await;
    let p = SimulatedProvider::new(1, chrono::Utc::now());
    let settings = HeartbeatSettings {
        redis_url: proxy.redis_url(),
        streams: streams.clone(),
        provider_id: p.provider_id.clone(),
        node_name: "gpu-node-00001".into(),
        interval: Duration::from_millis(100),
        timeouts: TIMEOUTS,
        state_dir: None,
    };
    let (stop, rx) = broadcast::channel(1);
    let beating = tokio::spawn(run_heartbeats(settings, p.key.clone(), Usage::default, rx));
    env.next_entries(&streams.heartbeat(), &mut "0".to_string(), 1).await;

    proxy.stop();
    let before = proxy.accepted();
    assert!(
        proxy.accepted_more_than(before, NOTICE).await,
        "the heartbeat loop never gave up its connection to a Redis that stopped answering"
    );
    // The loop is past its frozen connection: no beat can land any more until the proxy resumes.
    let mut last = env.last_entry_id(&streams.heartbeat()).await;
    proxy.resume();
    // Two beats: the first of them went through whole, as a beat follows the previous one's reply.
    env.next_entries(&streams.heartbeat(), &mut last, 2).await;

    let _ = stop.send(());
    let stats = tokio::time::timeout(NOTICE, beating)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
    assert!(stats.failed >= 1, "the lost beats are reported: {stats:?}");
    assert!(stats.sent >= 1, "{stats:?}");
}

fn command(kind: &str, job: &str) -> MiningCommand {
    MiningCommand {
        kind: kind.into(),
        command_id: format!("{job}/{}", kind.trim_start_matches("mining.")),
        job_id: job.into(),
        gpu_model: "RTX-4090".into(),
        gpus: 1,
    }
}

/// The next acknowledgement after `last` (awaited up to 10 s).
async fn next_ack(env: &TestEnv, last: &mut String) -> CommandAck {
    let e = env.next_entries(&env.cfg.streams().command_ack(), last, 1).await.remove(0);
    serde_json::from_str(&e.get::<String>("data").unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mining_loop_obeys_commands_again_after_redis_stops_answering() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let proxy = StallProxy::start(&host_port(&env.cfg.redis_url)).await;
    let p = SimulatedProvider::new(2, chrono::Utc::now());
    let broker = worldland_core::answers::BrokerKey::generate();
    let replies = RedisReplies::new(env.redis().await, streams.clone(), 600, broker.clone());
    let settings = MiningSettings {
        dry_run: true,
        machine_gpus: 1,
        block: Duration::from_millis(200),
        timeouts: TIMEOUTS,
        ..Default::default()
    };
    let (stop, rx) = broadcast::channel(1);
    let handling = tokio::spawn(run_commands(
        proxy.redis_url(),
        streams.clone(),
        p.provider_id.clone(),
        p.key.clone(),
        broker.public(),
        settings,
        rx,
    ));
    let mut acks = "0".to_string();
    replies.command(&p.provider_id, &command("mining.stop", "job-1")).await.unwrap();
    assert_eq!(next_ack(&env, &mut acks).await.command_id, "job-1/stop");

    // The loop is blocked in XREAD when the proxy stops answering.
    proxy.stop();
    let before = proxy.accepted();
    assert!(
        proxy.accepted_more_than(before, NOTICE).await,
        "the mining loop never gave up its blocked read on a Redis that stopped answering"
    );
    proxy.resume();
    // A command sent after the recovery is obeyed and acknowledged. (The stop may be acknowledged
    // twice: when the proxy stopped before the first acknowledgement's reply came back, the loop
    // writes it again after reconnecting, without running the command again.)
    replies.command(&p.provider_id, &command("mining.resume", "job-1")).await.unwrap();
    let mut after_recovery = vec![next_ack(&env, &mut acks).await.command_id];
    if after_recovery[0] == "job-1/stop" {
        after_recovery.push(next_ack(&env, &mut acks).await.command_id);
    }
    assert_eq!(
        after_recovery.last().map(String::as_str),
        Some("job-1/resume"),
        "{after_recovery:?}"
    );

    let _ = stop.send(());
    let obeyed = tokio::time::timeout(NOTICE, handling)
        .await
        .expect("the loop stops on shutdown")
        .unwrap();
    assert_eq!(obeyed, 2);
}
