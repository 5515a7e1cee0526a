//! How far the mining loop got in the response stream, kept across restarts.

use std::path::{Path, PathBuf};

use crate::local_state::LocalState;

/// Where [`run_commands_from`](super::run_commands_from) reads on from in the response stream, and where it records how
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

    pub(super) fn advance(&mut self, entry: &str) {
        self.after = entry.to_string();
        self.dirty = true;
    }

    /// Saves the cursor when it moved (and a state dir was given); a failure is logged, and the
    /// entries since the last save are read again after a restart.
    pub(super) fn save(&mut self) {
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
