//! The heartbeat sequence number: it grows with every heartbeat and is kept in the state
//! directory (`heartbeat_seq`, mode 0600) so a restarted SDK continues it. The broker orders a
//! sequenced heartbeat by it alone, never by the agent's clock, so a clock stepped back changes
//! nothing, and a replayed heartbeat (its number already recorded) changes nothing either.
//!
//! Each number is at least the wall clock in Unix milliseconds (the floor). A lost or unreadable
//! state directory therefore restarts the sequence above every number this agent sent before —
//! unless its clock ran fast when those were sent: then the broker ignores (acknowledges, never
//! records) its heartbeats until the clock has passed that point, at most the broker's replay
//! window (a heartbeat from a clock further off is refused outright, so never recorded). It never
//! makes the broker accept a replay: the recorded number only grows.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// File in the state directory holding the last number used.
pub const FILE: &str = "heartbeat_seq";

/// The next number after `last`: one more, or the clock's floor (Unix ms) when that is higher.
pub fn next_seq(last: u64, now: DateTime<Utc>) -> u64 {
    let floor = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    last.saturating_add(1).max(floor).min(i64::MAX as u64)
}

/// The sequence, kept in a state directory (or only in memory, without one).
#[derive(Debug)]
pub struct HeartbeatSequence {
    path: Option<PathBuf>,
    last: u64,
}

impl HeartbeatSequence {
    /// Continues the sequence saved in `dir`; starts afresh (from the clock's floor) when there
    /// is none, or it cannot be read.
    pub fn open(dir: Option<&Path>) -> Self {
        let path = dir.map(|d| d.join(FILE));
        let last = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Self { path, last }
    }

    /// The last number used (0 before any).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next number, saved before it is returned (a heartbeat never carries a number the
    /// next run could use again). A failed save is logged: that heartbeat is still sent.
    pub fn advance(&mut self, now: DateTime<Utc>) -> u64 {
        self.last = next_seq(self.last, now);
        if let Some(path) = &self.path {
            if let Err(e) = save(path, self.last) {
                tracing::warn!(path = %path.display(), error = %e, "heartbeat sequence not saved");
            }
        }
        self.last
    }
}

fn save(path: &Path, n: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(n.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn the_next_number_is_one_more_or_the_clock_floor() {
        let table = [
            (0, 1_000, 1_000),
            (5_000, 1_000, 5_001), // the clock stepped back: one more
            (5_000, 9_000, 9_000), // the clock ahead: its floor
            (5_000, -1, 5_001),    // a clock before 1970
            (u64::MAX, 0, i64::MAX as u64),
        ];
        for (last, now, want) in table {
            assert_eq!(next_seq(last, at(now)), want, "{last} {now}");
        }
    }

    #[test]
    fn a_restarted_sdk_continues_its_sequence_and_a_lost_directory_restarts_above_the_clock() {
        let dir = std::env::temp_dir().join(format!("wl-seq-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut seq = HeartbeatSequence::open(Some(&dir));
        assert_eq!(seq.advance(at(10_000)), 10_000);
        assert_eq!(seq.advance(at(9_000)), 10_001, "clock stepped back");
        let mut again = HeartbeatSequence::open(Some(&dir));
        assert_eq!(again.last(), 10_001);
        assert_eq!(again.advance(at(8_000)), 10_002, "continues after a restart");
        std::fs::remove_dir_all(&dir).unwrap();
        let mut lost = HeartbeatSequence::open(Some(&dir));
        assert_eq!(lost.last(), 0);
        assert_eq!(lost.advance(at(20_000)), 20_000, "a lost directory: the clock's floor");
        assert_eq!(HeartbeatSequence::open(None).advance(at(7)), 7);
    }
}
