//! Obeying the broker's `mining.stop` / `mining.resume`: the SDK reads its response stream with
//! plain `XREAD` after a cursor of its own ([`CommandCursor`], saved in the state dir after each
//! entry handled, so a restart neither misses nor re-runs commands), runs the configured command
//! on exactly the GPUs named (`--dry-run` logs it instead), and acknowledges on
//! `provider:command-ack`, signed by its wallet. It no longer reads through the `sdk-group`
//! consumer group, which every agent's Redis user can read from, acknowledge in, or create.
//!
//! A command counts only when the pinned broker key signed it for this stream, recently (see
//! [`crate::verify`]); anything else is skipped, logged, never acknowledged. Even then the SDK
//! runs only the command configured on this machine, and only for a GPU count this machine has
//! and fields of a plain shape: the network chooses when, never what.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use k256::ecdsa::SigningKey;
use redis::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use worldland_core::answers::BrokerPublicKey;
use worldland_core::labels::is_valid_label_value;
use worldland_core::messages::jobs::{MiningCommand, MINING_RESUME, MINING_STOP};
use worldland_core::signature::sign_personal;
use worldland_core::streams::StreamNames;

use crate::local_state::LocalState;

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

/// Where [`run_commands_from`] reads on from in the response stream, and where it records how
/// far it got.
///
/// The SDK reads its stream with plain `XREAD` after this cursor, not through the `sdk-group`
/// consumer group: every agent shares one Redis user, so any of them could read a provider's
/// entries off that group (and XACK them) or create the group at the stream's end before the
/// broker writes, and the provider would never see its commands. A cursor of its own is
/// something no one else can move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCursor {
    after: String,
    state_dir: Option<PathBuf>,
    dirty: bool,
}

impl CommandCursor {
    /// Reads after entry `after` ("0-0": the whole stream), keeping the progress in memory only.
    pub fn in_memory(after: impl Into<String>) -> Self {
        Self {
            after: after.into(),
            state_dir: None,
            dirty: false,
        }
    }

    /// Where a provider with `state` resumes: after the last entry it handled, or, before it
    /// handled any, from just before its registration (so the commands that came while it was
    /// down, or before it first ran, are all seen; stale ones are skipped as ever). With `dir`,
    /// the progress is saved there ([`LocalState::save_command_cursor`]) as it goes.
    pub fn resume(state: &LocalState, dir: Option<&Path>) -> Self {
        let saved = state.command_cursor.as_deref().filter(|c| {
            let valid = parse_entry_id(c).is_some();
            if !valid {
                tracing::warn!(cursor = %c, "the saved command cursor is no entry id; reading from the registration");
            }
            valid
        });
        let after = match saved {
            Some(c) => c.to_string(),
            None => {
                let ms = state.registration_entry.as_deref().and_then(parse_entry_id).map(|(ms, _)| ms);
                match ms.and_then(|ms| ms.checked_sub(1)) {
                    // Entries of that very millisecond sort after `ms-1` with any sequence.
                    Some(before) => format!("{before}-{}", u64::MAX),
                    None => "0-0".to_string(),
                }
            }
        };
        Self {
            after,
            state_dir: dir.map(Path::to_path_buf),
            dirty: false,
        }
    }

    /// The entry after which reading goes on.
    pub fn after(&self) -> &str {
        &self.after
    }

    fn advance(&mut self, entry: &str) {
        self.after = entry.to_string();
        self.dirty = true;
    }

    /// Saves the cursor when it moved (and a state dir was given); a failure is logged, and the
    /// entries since the last save are read again after a restart.
    fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(dir) = &self.state_dir else {
            self.dirty = false;
            return;
        };
        match LocalState::save_command_cursor(dir, &self.after) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::error!(cursor = %self.after, error = %e, "could not save the command cursor"),
        }
    }
}

/// `ms-seq`, both numbers.
fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Sends `ack` on `provider:command-ack`, signed by the wallet.
async fn send_ack(
    conn: &mut redis::aio::ConnectionManager,
    streams: &StreamNames,
    key: &SigningKey,
    ack: &CommandAck,
) -> redis::RedisResult<()> {
    let data = serde_json::to_string(ack).expect("serialises");
    redis::cmd("XADD")
        .arg(streams.command_ack())
        .arg("MAXLEN")
        .arg("~")
        .arg(100_000)
        .arg("*")
        .arg("data")
        .arg(&data)
        .arg("signature")
        .arg(sign_personal(key, data.as_bytes()))
        .arg("timestamp")
        .arg(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true))
        .query_async(conn)
        .await
}

/// [`run_commands_from`] the start of the stream, keeping the progress in memory: every command
/// still fresh is seen.
pub async fn run_commands(
    redis_url: String,
    streams: StreamNames,
    provider_id: String,
    key: SigningKey,
    broker: BrokerPublicKey,
    settings: MiningSettings,
    shutdown: broadcast::Receiver<()>,
) -> usize {
    let cursor = CommandCursor::in_memory("0-0");
    run_commands_from(redis_url, streams, provider_id, key, broker, settings, cursor, shutdown).await
}

/// Handles the commands after `cursor` until `shutdown` fires; returns how many (signed by
/// `broker`) it obeyed.
///
/// Each command is obeyed at most once per `command_id` in a run, and the cursor moves past an
/// entry only once it is handled: a command obeyed and acknowledged, or an entry skipped. When
/// the acknowledgement cannot be written, it is sent again after reconnecting (the command is
/// not run again) before anything else is read. Only a restart between running a command and
/// writing its acknowledgement runs it again (when it is still fresh).
#[allow(clippy::too_many_arguments)]
pub async fn run_commands_from(
    redis_url: String,
    streams: StreamNames,
    provider_id: String,
    key: SigningKey,
    broker: BrokerPublicKey,
    settings: MiningSettings,
    mut cursor: CommandCursor,
    mut shutdown: broadcast::Receiver<()>,
) -> usize {
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    let stream = streams.response(&provider_id);
    let mut done: HashSet<String> = HashSet::new();
    // A command obeyed whose acknowledgement has not been written yet, with its entry's id.
    let mut unacked: Option<(String, CommandAck)> = None;
    let mut obeyed = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let conns = async {
            let reader = crate::redis_conn::connect(&redis_url, true).await?;
            let writer = crate::redis_conn::connect(&redis_url, false).await?;
            redis::RedisResult::Ok((reader, writer))
        };
        let connected = tokio::select! { _ = shutdown.recv() => break, c = conns => c };
        match connected {
            Err(e) => tracing::warn!(error = %e, "cannot reach Redis for mining commands; retrying"),
            Ok((mut reader, mut writer)) => loop {
                if let Some((entry, ack)) = &unacked {
                    if let Err(e) = send_ack(&mut writer, &streams, &key, ack).await {
                        tracing::warn!(command = %ack.command_id, error = %e, "could not acknowledge a mining command; retrying after reconnecting");
                        break;
                    }
                    cursor.advance(entry);
                    cursor.save();
                    unacked = None;
                }
                let mut read_cmd = redis::cmd("XREAD");
                read_cmd
                    .arg("COUNT")
                    .arg(16)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(cursor.after());
                let read = read_cmd.query_async::<Value>(&mut reader);
                let reply = tokio::select! { _ = shutdown.recv() => { cursor.save(); return obeyed }, r = read => r };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        tracing::warn!(stream, error = %e, "reading mining commands failed; reconnecting");
                        break;
                    }
                };
                backoff = FIRST_BACKOFF;
                for entry in crate::verify::entries(&reply) {
                    let cmd = parse_command(&entry.data).filter(|_| crate::verify::believe(&entry, &stream, &broker, Utc::now()));
                    match cmd {
                        Some(cmd) if done.insert(cmd.command_id.clone()) => {
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
                            // Acknowledged at the top of the loop; the entries after it are read
                            // again from the cursor then.
                            unacked = Some((entry.id, ack));
                            break;
                        }
                        Some(cmd) => {
                            tracing::info!(command = %cmd.command_id, entry = %entry.id, "skipped a mining command already obeyed")
                        }
                        None => {}
                    }
                    // Not a command, not the broker's, or a repeat: skipped for good.
                    cursor.advance(&entry.id);
                }
                cursor.save();
            },
        }
        cursor.save();
        tokio::select! { _ = shutdown.recv() => break, _ = tokio::time::sleep(backoff) => {} }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    cursor.save();
    obeyed
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
