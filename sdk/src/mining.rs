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
use std::time::Duration;

use backon::ExponentialBackoff;
use chrono::{SecondsFormat, Utc};
use k256::ecdsa::SigningKey;
use redis::aio::ConnectionManager;
use redis::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use worldland_core::answers::BrokerPublicKey;
use worldland_core::labels::is_valid_label_value;
use worldland_core::messages::jobs::{MiningCommand, MINING_RESUME, MINING_STOP};
use worldland_core::signature::sign_personal;
use worldland_core::streams::StreamNames;
use worldland_redis::RedisTimeouts;

use crate::heartbeat::reconnect_backoff;

mod cursor;

pub use cursor::CommandCursor;

/// What to run, and how the response stream is read. Templates are split on whitespace (no
/// shell); `{gpus}`, `{model}` and `{job_id}` are replaced.
#[derive(Debug, Clone)]
pub struct MiningSettings {
    pub stop_cmd: Option<String>,
    pub resume_cmd: Option<String>,
    pub dry_run: bool,
    /// GPUs on this machine: a command for none, or for more, is refused.
    pub machine_gpus: u32,
    /// How long each read of the response stream blocks (default 1 s).
    pub block: Duration,
    /// Of the loop's connections; the reader's response timeout is `block` plus
    /// `timeouts.response`, so a read from a Redis that stopped answering fails instead of hanging.
    pub timeouts: RedisTimeouts,
}

impl Default for MiningSettings {
    fn default() -> Self {
        Self {
            stop_cmd: None,
            resume_cmd: None,
            dry_run: false,
            machine_gpus: 0,
            block: Duration::from_secs(1),
            timeouts: RedisTimeouts::default(),
        }
    }
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

/// The longest wait before reconnecting (the waits start at half a second and double).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Handles the commands after `cursor` until `shutdown` fires; returns how many (signed by
/// `broker`) it obeyed.
///
/// Each command is obeyed at most once per `command_id` in a run, and the cursor moves past an
/// entry only once it is handled: a command obeyed and acknowledged, or an entry skipped. When
/// the acknowledgement cannot be written, it is sent again after reconnecting (the command is
/// not run again) before anything else is read. Only a restart between running a command and
/// writing its acknowledgement runs it again (when it is still fresh).
///
/// A read or write that fails, timed-out ones included (a Redis that stopped answering), is
/// logged, and the loop reconnects after a growing backoff: both connections are replaced, as a
/// timed-out socket may be half-open.
#[allow(clippy::too_many_arguments)]
pub async fn run_commands_from(
    redis_url: String,
    streams: StreamNames,
    provider_id: String,
    key: SigningKey,
    broker: BrokerPublicKey,
    settings: MiningSettings,
    cursor: CommandCursor,
    mut shutdown: broadcast::Receiver<()>,
) -> usize {
    let (ordinary, blocking) = (settings.timeouts, settings.timeouts.blocking(settings.block));
    let mut c = Commands {
        stream: streams.response(&provider_id),
        streams,
        provider_id,
        key,
        broker,
        settings,
        cursor,
        done: HashSet::new(),
        unacked: None,
        obeyed: 0,
        backoff: reconnect_backoff(MAX_BACKOFF),
    };
    loop {
        let conns = async {
            let reader = worldland_redis::connect_with(&redis_url, blocking).await?;
            let writer = worldland_redis::connect_with(&redis_url, ordinary).await?;
            redis::RedisResult::Ok((reader, writer))
        };
        let connected = tokio::select! { _ = shutdown.recv() => break, c = conns => c };
        match connected {
            Err(e) => tracing::warn!(error = %e, "cannot reach Redis for mining commands; retrying"),
            Ok((mut reader, mut writer)) => {
                if let Stop::Shutdown = c.serve(&mut reader, &mut writer, &mut shutdown).await {
                    break;
                }
            }
        }
        c.cursor.save();
        let wait = c.backoff.next().unwrap_or(MAX_BACKOFF);
        tokio::select! { _ = shutdown.recv() => break, _ = tokio::time::sleep(wait) => {} }
    }
    c.cursor.save();
    c.obeyed
}

/// Why [`Commands::serve`] returned.
enum Stop {
    Shutdown,
    /// A read or write failed: reconnect.
    Failed,
}

/// The state of [`run_commands_from`], kept across reconnections.
struct Commands {
    streams: StreamNames,
    stream: String,
    provider_id: String,
    key: SigningKey,
    broker: BrokerPublicKey,
    settings: MiningSettings,
    cursor: CommandCursor,
    done: HashSet<String>,
    /// A command obeyed whose acknowledgement has not been written yet, with its entry's id.
    unacked: Option<(String, CommandAck)>,
    obeyed: usize,
    backoff: ExponentialBackoff,
}

impl Commands {
    /// Reads and handles commands on these connections until one fails or `shutdown` fires.
    async fn serve(
        &mut self,
        reader: &mut ConnectionManager,
        writer: &mut ConnectionManager,
        shutdown: &mut broadcast::Receiver<()>,
    ) -> Stop {
        loop {
            if let Some((entry, ack)) = &self.unacked {
                if let Err(e) = send_ack(writer, &self.streams, &self.key, ack).await {
                    tracing::warn!(command = %ack.command_id, error = %e, "could not acknowledge a mining command; retrying after reconnecting");
                    return Stop::Failed;
                }
                self.cursor.advance(entry);
                self.cursor.save();
                self.unacked = None;
            }
            let mut read_cmd = redis::cmd("XREAD");
            read_cmd
                .arg("COUNT")
                .arg(16)
                .arg("BLOCK")
                .arg(self.settings.block.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(self.cursor.after());
            let read = read_cmd.query_async::<Value>(reader);
            let reply = tokio::select! { _ = shutdown.recv() => return Stop::Shutdown, r = read => r };
            match reply {
                Ok(reply) => {
                    self.backoff = reconnect_backoff(MAX_BACKOFF);
                    self.handle(&reply).await;
                    self.cursor.save();
                }
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, timed_out = e.is_timeout(), "reading mining commands failed; reconnecting");
                    return Stop::Failed;
                }
            }
        }
    }

    /// Obeys the first new command among the entries of `reply` (its acknowledgement pending);
    /// the entries before it are skipped for good, those after it are read again.
    async fn handle(&mut self, reply: &Value) {
        for entry in crate::verify::entries(reply) {
            let believed = crate::verify::believe(&entry, &self.stream, &self.broker, Utc::now());
            match parse_command(&entry.data).filter(|_| believed) {
                Some(cmd) if self.done.insert(cmd.command_id.clone()) => {
                    let (ok, detail) = obey(&cmd, &self.settings).await;
                    self.obeyed += 1;
                    let ack = CommandAck {
                        provider_id: self.provider_id.clone(),
                        command_id: cmd.command_id.clone(),
                        kind: cmd.kind.clone(),
                        ok,
                        detail,
                        timestamp: Utc::now(),
                    };
                    self.unacked = Some((entry.id, ack));
                    return;
                }
                Some(cmd) => {
                    tracing::info!(command = %cmd.command_id, entry = %entry.id, "skipped a mining command already obeyed")
                }
                None => {}
            }
            // Not a command, not the broker's, or a repeat: skipped for good.
            self.cursor.advance(&entry.id);
        }
    }
}

#[cfg(test)]
mod tests;
