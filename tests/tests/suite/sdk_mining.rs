//! The SDK obeys `mining.stop` / `mining.resume` written by the broker on its response stream,
//! once each, and acknowledges them signed by its wallet. It reads them with XREAD from a cursor
//! kept in its state dir, so a restart neither misses a command nor runs one again, and moves the
//! cursor past a command only once its acknowledgement is written.

use std::time::Duration;

use tokio::sync::broadcast;
use worldland_adapters::replies::RedisReplies;
use worldland_core::messages::jobs::MiningCommand;
use worldland_core::messages::ProviderResponse;
use worldland_core::replies::ProviderReplies;
use worldland_core::signature::{address_of, recover_personal};
use worldland_provider_sdk::local_state::LocalState;
use worldland_provider_sdk::mining::{run_commands, run_commands_from, CommandAck, CommandCursor, MiningSettings};
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

    // Await both acknowledgements on the ack stream, each signed by the provider's wallet.
    let mut acks = vec![];
    for e in env.next_entries(&streams.command_ack(), &mut "0".to_string(), 2).await {
        let data: String = e.get("data").unwrap();
        let sig: String = e.get("signature").unwrap();
        assert_eq!(recover_personal(data.as_bytes(), &sig).unwrap(), address_of(p.key.verifying_key()));
        acks.push(serde_json::from_str::<CommandAck>(&data).unwrap());
    }
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 2, "the repeated command is obeyed once");
    assert_eq!(
        acks.iter().map(|a| (a.command_id.as_str(), a.ok)).collect::<Vec<_>>(),
        vec![("job-1/stop", true), ("job-1/resume", true)]
    );
    assert_eq!(acks[0].detail, "dry run: miner-ctl stop --gpus 2");
}

/// Waits (up to 10 s) for `n` more acknowledgements after `last`.
async fn next_acks(env: &TestEnv, last: &mut String, n: usize) -> Vec<CommandAck> {
    let entries = env.next_entries(&env.cfg.streams().command_ack(), last, n).await;
    entries
        .iter()
        .map(|e| serde_json::from_str::<CommandAck>(&e.get::<String>("data").unwrap()).unwrap())
        .collect()
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

/// The files in `dir`, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The SDK keeps its place in the response stream in the state dir: stopped and started again,
/// it obeys the command written while it was down (once), and not the one it had handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_sdk_obeys_what_came_while_it_was_down_and_nothing_twice() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let p = SimulatedProvider::new(4, chrono::Utc::now());
    let broker = worldland_core::answers::BrokerKey::generate();
    let mut conn = env.redis().await;
    let replies = RedisReplies::new(conn.clone(), streams.clone(), 600, broker.clone());
    // Installed: registered (on this Redis, so the entry id is its clock), no cursor yet.
    let registered: String = redis::cmd("XADD")
        .arg(streams.registration())
        .arg("*")
        .arg("data")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("wl-mining-{}", uuid::Uuid::new_v4().simple()));
    let ran = dir.join("ran");
    std::fs::create_dir_all(&ran).unwrap();
    LocalState {
        provider_id: p.provider_id.clone(),
        registration_entry: Some(registered),
        gpu_count: 2,
        ..Default::default()
    }
    .save(&dir)
    .unwrap();
    let settings = MiningSettings {
        // A fresh file per run: the count of files is the count of runs.
        stop_cmd: Some(format!("mktemp -p {} {{job_id}}-stop.XXXXXX", ran.display())),
        resume_cmd: Some(format!("mktemp -p {} {{job_id}}-resume.XXXXXX", ran.display())),
        dry_run: false,
        machine_gpus: 2,
        ..Default::default()
    };
    let start = || {
        let state = LocalState::load(&dir).unwrap().unwrap();
        let (stop_tx, rx) = broadcast::channel(1);
        let handling = tokio::spawn(run_commands_from(
            env.cfg.redis_url.clone(),
            streams.clone(),
            p.provider_id.clone(),
            p.key.clone(),
            broker.public(),
            settings.clone(),
            CommandCursor::resume(&state, Some(&dir)),
            rx,
        ));
        (stop_tx, handling)
    };
    let saved_cursor = || LocalState::load(&dir).unwrap().unwrap().command_cursor;
    let mut last_ack = "0".to_string();

    // Written after the install, before the SDK first runs: obeyed on the first run.
    replies.command(&p.provider_id, &command("mining.stop", "job-1")).await.unwrap();
    let (stop_tx, handling) = start();
    let acks = next_acks(&env, &mut last_ack, 1).await;
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 1);
    assert_eq!(acks[0].command_id, "job-1/stop");
    assert_eq!(
        saved_cursor(),
        Some(env.last_entry_id(&streams.response(&p.provider_id)).await),
        "the handled entry is saved"
    );

    // Written while it is down: obeyed after the restart; job-1/stop is not run again.
    replies.command(&p.provider_id, &command("mining.resume", "job-1")).await.unwrap();
    let (stop_tx, handling) = start();
    let acks = next_acks(&env, &mut last_ack, 1).await;
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 1, "only the command that came while it was down");
    assert_eq!(acks[0].command_id, "job-1/resume");
    assert_eq!(saved_cursor(), Some(env.last_entry_id(&streams.response(&p.provider_id)).await));

    // Once more with nothing new: nothing runs.
    let (stop_tx, handling) = start();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 0);
    let all_acks: usize = redis::cmd("XLEN").arg(streams.command_ack()).query_async(&mut conn).await.unwrap();
    assert_eq!(all_acks, 2);
    let ran_files = files(&ran);
    assert_eq!(ran_files.len(), 2, "{ran_files:?}");
    assert!(
        ran_files[0].starts_with("job-1-resume.") && ran_files[1].starts_with("job-1-stop."),
        "{ran_files:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// When the acknowledgement cannot be written, the SDK does not move past the command: it sends
/// the acknowledgement again after reconnecting (without running the command again), and only
/// then reads on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acknowledgement_is_sent_again_without_running_the_command_again() {
    let env = TestEnv::new(&[]);
    let streams = env.cfg.streams();
    let p = SimulatedProvider::new(6, chrono::Utc::now());
    let broker = worldland_core::answers::BrokerKey::generate();
    let mut conn = env.redis().await;
    let replies = RedisReplies::new(conn.clone(), streams.clone(), 600, broker.clone());
    // The ack stream's key holds a string: every XADD to it fails (WRONGTYPE).
    let _: () = redis::cmd("SET")
        .arg(streams.command_ack())
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    replies.command(&p.provider_id, &command("mining.stop", "job-1")).await.unwrap();
    replies.command(&p.provider_id, &command("mining.resume", "job-1")).await.unwrap();
    let ran = std::env::temp_dir().join(format!("wl-mining-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&ran).unwrap();
    let settings = MiningSettings {
        stop_cmd: Some(format!("mktemp -p {} {{job_id}}-stop.XXXXXX", ran.display())),
        resume_cmd: Some(format!("mktemp -p {} {{job_id}}-resume.XXXXXX", ran.display())),
        dry_run: false,
        machine_gpus: 2,
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
    // The stop runs; its acknowledgement fails, again and again.
    let ran_stop = tokio::time::timeout(Duration::from_secs(10), async {
        while files(&ran).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ran_stop.is_ok(), "the stop ran within 10 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ran_files = files(&ran);
    assert_eq!(ran_files.len(), 1, "unacknowledged, the SDK reads no further: {ran_files:?}");
    assert!(ran_files[0].starts_with("job-1-stop."), "{ran_files:?}");

    // Redis takes acknowledgements again: the stop's is sent, then the resume runs.
    let _: () = redis::cmd("DEL").arg(streams.command_ack()).query_async(&mut conn).await.unwrap();
    let acks = next_acks(&env, &mut "0".to_string(), 2).await;
    let _ = stop_tx.send(());
    assert_eq!(handling.await.unwrap(), 2);
    assert_eq!(
        acks.iter().map(|a| (a.command_id.as_str(), a.ok)).collect::<Vec<_>>(),
        vec![("job-1/stop", true), ("job-1/resume", true)]
    );
    let ran_files = files(&ran);
    assert_eq!(ran_files.len(), 2, "each command ran once: {ran_files:?}");
    assert!(
        ran_files[0].starts_with("job-1-resume.") && ran_files[1].starts_with("job-1-stop."),
        "{ran_files:?}"
    );
    std::fs::remove_dir_all(ran).unwrap();
}
