//! Attacks on a running agent's mining commands, on real Redis: anyone can XADD a `mining.stop`
//! or `mining.resume` to `provider:response:<id>`. The SDK runs its locally configured command
//! only for commands the pinned broker key signed for this stream, recently, and only for a GPU
//! count this machine has; everything else runs nothing and is never acknowledged. And since
//! every agent shares one Redis user, which may read, acknowledge and create the `sdk-group`
//! consumer group on any response stream, the SDK reads its commands with plain XREAD from a
//! cursor of its own, which another agent can neither drain nor move.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::sync::broadcast;
use worldland_adapters::replies::RedisReplies;
use worldland_core::answers::{BrokerKey, SIGNATURE_FIELD};
use worldland_core::messages::jobs::MiningCommand;
use worldland_core::replies::ProviderReplies;
use worldland_core::streams::AGENT_RESPONSE_GROUP;
use worldland_provider_sdk::mining::{run_commands, CommandAck, MiningSettings};
use worldland_provider_sdk::simulated::SimulatedProvider;
use worldland_tests::TestEnv;

fn stop(job: &str, gpus: u32) -> MiningCommand {
    MiningCommand {
        kind: "mining.stop".into(),
        command_id: format!("{job}/stop"),
        job_id: job.into(),
        gpu_model: "RTX-4090".into(),
        gpus,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_unsigned_mining_commands_run_nothing() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let p = SimulatedProvider::new(5, Utc::now()); // 6 GPUs
    let other = SimulatedProvider::new(105, Utc::now());
    let broker = BrokerKey::generate();
    let mut conn = env.redis().await;
    let replies = RedisReplies::new(conn.clone(), streams.clone(), 600, broker.clone());
    let stream = streams.response(&p.provider_id);
    let xadd = |fields: Vec<(&'static str, String)>| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let ts = || Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let json = |c: &MiningCommand| serde_json::to_string(c).unwrap();

    // Unsigned — reusing the id of the real command to come, to poison its deduplication.
    let mut unsigned = stop("evil-1", 2);
    unsigned.command_id = "job-1/stop".into();
    let _: String = xadd(vec![("data", json(&unsigned)), ("timestamp", ts())])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Signed by the attacker's own key.
    let evil = json(&stop("evil-2", 2));
    let t = ts();
    let sig = BrokerKey::generate().sign(&stream, &t, evil.as_bytes());
    let _: String = xadd(vec![("data", evil), ("timestamp", t), (SIGNATURE_FIELD, sig)])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Genuine, but for another provider, copied over field for field.
    replies.command(&other.provider_id, &stop("evil-3", 2)).await.unwrap();
    let theirs: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(streams.response(&other.provider_id))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = &theirs.ids[0];
    let _: String = xadd(vec![
        ("data", e.get::<String>("data").unwrap()),
        ("timestamp", e.get::<String>("timestamp").unwrap()),
        (SIGNATURE_FIELD, e.get::<String>(SIGNATURE_FIELD).unwrap()),
    ])
    .query_async(&mut conn)
    .await
    .unwrap();
    // Genuine, but an hour old: a replay.
    let old = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let replayed = json(&stop("evil-4", 2));
    let sig = broker.sign(&stream, &old, replayed.as_bytes());
    let _: String = xadd(vec![("data", replayed), ("timestamp", old), (SIGNATURE_FIELD, sig)])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Signed by the broker, but for more GPUs than this machine has: refused, acknowledged as such.
    replies.command(&p.provider_id, &stop("job-9", 64)).await.unwrap();
    // And the real one.
    replies.command(&p.provider_id, &stop("job-1", 2)).await.unwrap();

    let dir = std::env::temp_dir().join(format!("wl-mining-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = MiningSettings {
        stop_cmd: Some(format!("touch {}/{{job_id}}", dir.display())),
        resume_cmd: None,
        dry_run: false,
        machine_gpus: p.registration.spec.total_gpus,
        ..Default::default()
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

    // Await the acknowledgements: one per command the broker signed for us, none for the rest.
    let acks: Vec<CommandAck> = env
        .next_entries(&streams.command_ack(), &mut "0".to_string(), 2)
        .await
        .iter()
        .map(|e| serde_json::from_str(&e.get::<String>("data").unwrap()).unwrap())
        .collect();
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 2, "only the broker's commands for this stream are handled");
    assert_eq!(
        acks.iter().map(|a| (a.command_id.as_str(), a.ok)).collect::<Vec<_>>(),
        vec![("job-9/stop", false), ("job-1/stop", true)]
    );
    assert!(acks[0].detail.contains("64 GPUs asked"), "{}", acks[0].detail);
    let ran: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ran, vec!["job-1"], "only the real command ran");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs the victim's `run_commands` (running `touch <dir>/<job_id>` on `mining.stop`) until one
/// acknowledgement arrives, and returns it, how many commands it obeyed, and the jobs it ran.
async fn victim_obeys(env: &TestEnv, p: &SimulatedProvider, broker: &BrokerKey) -> (CommandAck, usize, Vec<String>) {
    let streams = env.cfg.streams();
    let dir = std::env::temp_dir().join(format!("wl-mining-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = MiningSettings {
        stop_cmd: Some(format!("touch {}/{{job_id}}", dir.display())),
        resume_cmd: None,
        dry_run: false,
        machine_gpus: p.registration.spec.total_gpus,
        ..Default::default()
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
    let mut reader = env.redis_blocking().await;
    let reply: redis::streams::StreamReadReply = tokio::time::timeout(
        Duration::from_secs(10),
        redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(8000)
            .arg("STREAMS")
            .arg(streams.command_ack())
            .arg("0")
            .query_async(&mut reader),
    )
    .await
    .expect("the acknowledgement within 10 s")
    .unwrap();
    let _ = stop_tx.send(());
    let obeyed = handling.await.unwrap();
    let entry = &reply.keys.first().expect("an acknowledgement: the command was seen").ids[0];
    let ack = serde_json::from_str(&entry.get::<String>("data").unwrap()).unwrap();
    let ran = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    std::fs::remove_dir_all(dir).unwrap();
    (ack, obeyed, ran)
}

/// Every agent shares the Redis user `agent`, which may XREADGROUP and XACK on any
/// `provider:response:*`: a thief reads the victim's `mining.stop` off the `sdk-group` consumer
/// group and acknowledges it, so nothing is left there for the victim. The SDK reads its stream
/// with plain XREAD from a cursor of its own, and still obeys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agent_stealing_from_sdk_group_cannot_hide_a_mining_command() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let victim = SimulatedProvider::new(7, Utc::now());
    let broker = BrokerKey::generate();
    let mut thief = env.redis().await;
    let replies = RedisReplies::new(thief.clone(), streams.clone(), 600, broker.clone());
    let stream = streams.response(&victim.provider_id);
    // The broker creates `sdk-group` at 0 and writes the command.
    replies.command(&victim.provider_id, &stop("job-1", 1)).await.unwrap();

    let stolen: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(AGENT_RESPONSE_GROUP)
        .arg("thief")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut thief)
        .await
        .unwrap();
    let ids: Vec<String> = stolen.keys.iter().flat_map(|k| k.ids.iter().map(|e| e.id.clone())).collect();
    assert_eq!(ids.len(), 1, "the thief took the command off the group");
    let acked: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg(AGENT_RESPONSE_GROUP)
        .arg(&ids)
        .query_async(&mut thief)
        .await
        .unwrap();
    assert_eq!(acked, 1);
    // Through the group, the victim would see nothing: no new entry, none pending.
    let left: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(AGENT_RESPONSE_GROUP)
        .arg("sdk-1")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut thief)
        .await
        .unwrap();
    assert!(left.keys.iter().all(|k| k.ids.is_empty()), "{left:?}");

    let (ack, obeyed, ran) = victim_obeys(&env, &victim, &broker).await;
    assert_eq!((ack.command_id.as_str(), ack.ok), ("job-1/stop", true));
    assert_eq!(obeyed, 1);
    assert_eq!(ran, vec!["job-1"], "the stolen command still ran, once");
}

/// The other group attack: the thief creates `sdk-group` at the largest id before the broker
/// writes, so the broker's own create meets BUSYGROUP and the group never delivers a thing. The
/// SDK does not read through the group, and still obeys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agent_creating_sdk_group_past_the_end_cannot_hide_a_mining_command() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let victim = SimulatedProvider::new(8, Utc::now());
    let broker = BrokerKey::generate();
    let mut thief = env.redis().await;
    let replies = RedisReplies::new(thief.clone(), streams.clone(), 600, broker.clone());
    let stream = streams.response(&victim.provider_id);
    let max = format!("{}-{}", u64::MAX, u64::MAX);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(AGENT_RESPONSE_GROUP)
        .arg(&max)
        .arg("MKSTREAM")
        .query_async(&mut thief)
        .await
        .unwrap();
    replies.command(&victim.provider_id, &stop("job-2", 1)).await.unwrap();
    let through_group: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(AGENT_RESPONSE_GROUP)
        .arg("sdk-1")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut thief)
        .await
        .unwrap();
    assert!(through_group.keys.iter().all(|k| k.ids.is_empty()), "{through_group:?}");

    let (ack, obeyed, ran) = victim_obeys(&env, &victim, &broker).await;
    assert_eq!((ack.command_id.as_str(), ack.ok), ("job-2/stop", true));
    assert_eq!(obeyed, 1);
    assert_eq!(ran, vec!["job-2"]);
}
