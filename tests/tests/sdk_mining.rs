//! The SDK obeys `mining.stop` / `mining.resume` written by the broker on its response stream,
//! once each, and acknowledges them signed by its wallet.

use std::time::Duration;

use tokio::sync::broadcast;
use worldland_adapters::replies::RedisReplies;
use worldland_core::messages::jobs::MiningCommand;
use worldland_core::messages::ProviderResponse;
use worldland_core::replies::ProviderReplies;
use worldland_core::signature::{address_of, recover_personal};
use worldland_provider_sdk::mining::{run_commands, CommandAck, MiningSettings};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_obeys_mining_commands_once_and_acknowledges_them() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let p = SimulatedProvider::new(3, chrono::Utc::now());
    let broker = worldland_core::answers::BrokerKey::generate();
    let replies = RedisReplies::new(env.redis().await, streams.clone(), 600, broker.clone());
    // An answer and two commands (one of them delivered twice) wait on the stream.
    replies
        .reply(
            &p.provider_id,
            &ProviderResponse {
                success: true,
                status: "approved".into(),
                message: "hi".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stop = MiningCommand {
        kind: "mining.stop".into(),
        command_id: "job-1/stop".into(),
        job_id: "job-1".into(),
        gpu_model: "RTX-4090".into(),
        gpus: 2,
    };
    let resume = MiningCommand {
        kind: "mining.resume".into(),
        command_id: "job-1/resume".into(),
        ..stop.clone()
    };
    for c in [&stop, &stop, &resume] {
        replies.command(&p.provider_id, c).await.unwrap();
    }
    let settings = MiningSettings {
        stop_cmd: Some("miner-ctl stop --gpus {gpus}".into()),
        resume_cmd: Some("miner-ctl start --gpus {gpus}".into()),
        dry_run: true,
        machine_gpus: p.registration.spec.total_gpus,
    };
    let (stop_tx, rx) = broadcast::channel(1);
    let handling = tokio::spawn(run_commands(
        env.cfg.redis_url.clone(),
        streams.clone(),
        p.provider_id.clone(),
        p.key.clone(),
        broker.public(),
        settings,
        rx,
    ));

    // Await both acknowledgements on the ack stream.
    let mut reader = env.redis_blocking().await;
    let mut acks = vec![];
    let mut last = "0".to_string();
    while acks.len() < 2 {
        let reply: redis::streams::StreamReadReply = tokio::time::timeout(
            Duration::from_secs(10),
            redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(streams.command_ack())
                .arg(&last)
                .query_async(&mut reader),
        )
        .await
        .expect("acknowledgements within 10 s")
        .unwrap();
        for e in reply.keys.iter().flat_map(|k| k.ids.iter()) {
            last = e.id.clone();
            let data: String = e.get("data").unwrap();
            let sig: String = e.get("signature").unwrap();
            assert_eq!(recover_personal(data.as_bytes(), &sig).unwrap(), address_of(p.key.verifying_key()));
            acks.push(serde_json::from_str::<CommandAck>(&data).unwrap());
        }
    }
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 2, "the repeated command is obeyed once");
    assert_eq!(
        acks.iter().map(|a| (a.command_id.as_str(), a.ok)).collect::<Vec<_>>(),
        vec![("job-1/stop", true), ("job-1/resume", true)]
    );
    assert_eq!(acks[0].detail, "dry run: miner-ctl stop --gpus 2");
}
