//! Obeying the broker's `mining.stop` / `mining.resume`: the SDK reads its response stream
//! through the `sdk-group` consumer group (every entry once, acked after it is handled), runs the
//! configured command on exactly the GPUs named (`--dry-run` logs it instead), and acknowledges
//! on `provider:command-ack`, signed by its wallet.
//!
//! A command counts only when the pinned broker key signed it for this stream, recently (see
//! [`crate::verify`]); anything else is skipped, logged, never acknowledged. Even then the SDK
//! runs only the command configured on this machine, and only for a GPU count this machine has
//! and fields of a plain shape: the network chooses when, never what.

use std::collections::HashSet;

use chrono::{SecondsFormat, Utc};
use k256::ecdsa::SigningKey;
use redis::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use worldland_core::answers::BrokerPublicKey;
use worldland_core::labels::is_valid_label_value;
use worldland_core::messages::jobs::{MiningCommand, MINING_RESUME, MINING_STOP};
use worldland_core::signature::sign_personal;
use worldland_core::streams::{StreamNames, AGENT_RESPONSE_GROUP};

/// What to run. Templates are split on whitespace (no shell); `{gpus}`, `{model}` and
/// `{job_id}` are replaced.
#[derive(Debug, Clone, Default)]
pub struct MiningSettings {
    pub stop_cmd: Option<String>,
    pub resume_cmd: Option<String>,
    pub dry_run: bool,
    /// GPUs on this machine: a command for none, or for more, is refused.
    pub machine_gpus: u32,
}

/// The acknowledgement the SDK sends back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    pub provider_id: String,
    pub command_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ok: bool,
    pub detail: String,
    pub timestamp: chrono::DateTime<Utc>,
}

/// A command among the entries of a response stream (answers are not commands).
pub fn parse_command(data: &[u8]) -> Option<MiningCommand> {
    let cmd: MiningCommand = serde_json::from_slice(data).ok()?;
    [MINING_STOP, MINING_RESUME].contains(&cmd.kind.as_str()).then_some(cmd)
}

pub fn render(template: &str, cmd: &MiningCommand) -> Vec<String> {
    template
        .split_whitespace()
        .map(|w| {
            w.replace("{gpus}", &cmd.gpus.to_string())
                .replace("{model}", &cmd.gpu_model)
                .replace("{job_id}", &cmd.job_id)
        })
        .collect()
}

/// Whether a (signed) command is one this machine can obey: a GPU count it has, a job id and a
/// model key of plain characters (they may be filled into the configured command's arguments).
pub fn check_command(cmd: &MiningCommand, s: &MiningSettings) -> Result<(), String> {
    if cmd.gpus == 0 || cmd.gpus > s.machine_gpus {
        return Err(format!("{} GPUs asked; this machine has {}", cmd.gpus, s.machine_gpus));
    }
    let plain_id = (1..=64).contains(&cmd.job_id.len()) && cmd.job_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !plain_id {
        return Err(format!("job id {:?} is not 1-64 letters, digits and '-'", cmd.job_id));
    }
    if cmd.gpu_model.is_empty() || !is_valid_label_value(&cmd.gpu_model) {
        return Err(format!("GPU model {:?} is not a model key", cmd.gpu_model));
    }
    Ok(())
}

/// Runs (or, dry, describes) what a command asks, after [`check_command`]. Returns (ok, detail).
pub async fn obey(cmd: &MiningCommand, s: &MiningSettings) -> (bool, String) {
    if let Err(why) = check_command(cmd, s) {
        tracing::warn!(command = %cmd.command_id, %why, "refused a mining command");
        return (false, format!("refused: {why}"));
    }
    let template = if cmd.kind == MINING_STOP { &s.stop_cmd } else { &s.resume_cmd };
    let Some(template) = template else {
        return (
            true,
            format!(
                "{} of {} × {}: no command configured; nothing to do",
                cmd.kind, cmd.gpus, cmd.gpu_model
            ),
        );
    };
    let argv = render(template, cmd);
    if s.dry_run || argv.is_empty() {
        tracing::info!(command = ?argv, "dry run: would run");
        return (true, format!("dry run: {}", argv.join(" ")));
    }
    match tokio::process::Command::new(&argv[0]).args(&argv[1..]).status().await {
        Ok(st) if st.success() => (true, format!("ran {}", argv.join(" "))),
        Ok(st) => (false, format!("{} exited with {st}", argv.join(" "))),
        Err(e) => (false, format!("{}: {e}", argv[0])),
    }
}

/// Handles commands until `shutdown` fires; returns how many (signed by `broker`) it handled.
pub async fn run_commands(
    redis_url: String,
    streams: StreamNames,
    provider_id: String,
    key: SigningKey,
    broker: BrokerPublicKey,
    settings: MiningSettings,
    mut shutdown: broadcast::Receiver<()>,
) -> usize {
    let stream = streams.response(&provider_id);
    let mut done: HashSet<String> = HashSet::new();
    let mut obeyed = 0;
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        let conns = async {
            let reader = crate::redis_conn::connect(&redis_url, true).await.ok()?;
            let writer = crate::redis_conn::connect(&redis_url, false).await.ok()?;
            Some((reader, writer))
        };
        let connected = tokio::select! { _ = shutdown.recv() => return obeyed, c = conns => c };
        let Some((mut reader, mut writer)) = connected else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            continue;
        };
        let _ = crate::redis_conn::ensure_group(&mut writer, &stream, AGENT_RESPONSE_GROUP, "0").await;
        loop {
            let mut read_cmd = redis::cmd("XREADGROUP");
            read_cmd
                .arg("GROUP")
                .arg(AGENT_RESPONSE_GROUP)
                .arg("sdk-1")
                .arg("COUNT")
                .arg(16)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">");
            let read = read_cmd.query_async::<Value>(&mut reader);
            let reply = tokio::select! { _ = shutdown.recv() => return obeyed, r = read => r };
            let Ok(reply) = reply else { break };
            for entry in crate::verify::entries(&reply) {
                let id = entry.id.clone();
                let cmd = parse_command(&entry.data).filter(|_| crate::verify::believe(&entry, &stream, &broker, Utc::now()));
                if let Some(cmd) = cmd {
                    if done.insert(cmd.command_id.clone()) {
                        let (ok, detail) = obey(&cmd, &settings).await;
                        obeyed += 1;
                        let ack = CommandAck {
                            provider_id: provider_id.clone(),
                            command_id: cmd.command_id.clone(),
                            kind: cmd.kind.clone(),
                            ok,
                            detail,
                            timestamp: Utc::now(),
                        };
                        let data = serde_json::to_string(&ack).expect("serialises");
                        let sent: redis::RedisResult<()> = redis::cmd("XADD")
                            .arg(streams.command_ack())
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(100_000)
                            .arg("*")
                            .arg("data")
                            .arg(&data)
                            .arg("signature")
                            .arg(sign_personal(&key, data.as_bytes()))
                            .arg("timestamp")
                            .arg(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true))
                            .query_async(&mut writer)
                            .await;
                        if sent.is_err() {
                            done.remove(&cmd.command_id);
                            break; // not acked: read again after reconnecting
                        }
                    }
                }
                let _: redis::RedisResult<()> = redis::cmd("XACK")
                    .arg(&stream)
                    .arg(AGENT_RESPONSE_GROUP)
                    .arg(&id)
                    .query_async(&mut writer)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(kind: &str) -> MiningCommand {
        MiningCommand {
            kind: kind.into(),
            command_id: "job-1/stop".into(),
            job_id: "job-1".into(),
            gpu_model: "RTX-4090".into(),
            gpus: 2,
        }
    }

    #[test]
    fn commands_are_told_from_answers_and_rendered_without_a_shell() {
        assert_eq!(
            parse_command(&serde_json::to_vec(&cmd("mining.stop")).unwrap()),
            Some(cmd("mining.stop"))
        );
        assert_eq!(parse_command(br#"{"success":true,"status":"approved","message":"x"}"#), None);
        assert_eq!(parse_command(&serde_json::to_vec(&cmd("rm -rf")).unwrap()), None);
        assert_eq!(
            render("miner-ctl stop --gpus {gpus} --model {model}; {job_id}", &cmd("mining.stop")),
            vec!["miner-ctl", "stop", "--gpus", "2", "--model", "RTX-4090;", "job-1"]
        );
    }

    #[tokio::test]
    async fn dry_run_and_unconfigured_commands_run_nothing() {
        let dry = MiningSettings {
            stop_cmd: Some("false".into()),
            resume_cmd: None,
            dry_run: true,
            machine_gpus: 4,
        };
        assert_eq!(obey(&cmd("mining.stop"), &dry).await, (true, "dry run: false".into()));
        assert!(obey(&cmd("mining.resume"), &dry).await.1.contains("no command configured"));
        let real = MiningSettings {
            stop_cmd: Some("false".into()),
            resume_cmd: Some("true".into()),
            dry_run: false,
            machine_gpus: 4,
        };
        assert!(!obey(&cmd("mining.stop"), &real).await.0, "a failing command is reported");
        assert!(obey(&cmd("mining.resume"), &real).await.0);
    }

    #[tokio::test]
    async fn commands_for_gpus_this_machine_lacks_or_of_odd_shape_run_nothing() {
        let marker = std::env::temp_dir().join(format!("wl-mining-{}", uuid::Uuid::new_v4().simple()));
        let s = MiningSettings {
            resume_cmd: Some(format!("touch {}", marker.display())),
            machine_gpus: 2,
            ..Default::default()
        };
        let with = |f: &dyn Fn(&mut MiningCommand)| {
            let mut c = cmd("mining.resume");
            f(&mut c);
            c
        };
        for bad in [
            with(&|c| c.gpus = 3),
            with(&|c| c.gpus = 0),
            with(&|c| c.job_id = "job;rm -rf /".into()),
            with(&|c| c.job_id = "../../etc".into()),
            with(&|c| c.gpu_model = "--config=/tmp/evil".into()),
            with(&|c| c.gpu_model = String::new()),
        ] {
            let (ok, detail) = obey(&bad, &s).await;
            assert!(!ok && detail.starts_with("refused"), "{bad:?}: {detail}");
            assert!(!marker.exists(), "{bad:?} ran the command");
        }
        assert!(obey(&cmd("mining.resume"), &s).await.0);
        assert!(marker.exists(), "a good command runs");
        std::fs::remove_file(marker).unwrap();
    }
}
