//! The heartbeats this process recorded last, per provider: a heartbeat that comes less than the
//! minimum interval after one of them is acknowledged without any store call — a failed
//! conditional write is billed as a write, by the size of the item, so a flood answered only by
//! the store's condition would still cost one write (and a read) per heartbeat. Only applied
//! writes are noted, so a heartbeat forged for another provider (which never applies) cannot
//! silence it. Another process, or this one after a restart, knows nothing of these: the
//! conditional write still holds the limit across processes.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use worldland_core::provider::within_min_interval;

/// Providers remembered before the memory is cleared (a cleared entry costs one store call).
pub const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug, Default)]
pub struct RecentHeartbeats(Mutex<HashMap<String, DateTime<Utc>>>);

impl RecentHeartbeats {
    /// Whether this process recorded a heartbeat of `provider_id` less than `min_interval`
    /// before `received_at`.
    pub fn too_soon(&self, provider_id: &str, received_at: DateTime<Utc>, min_interval: Duration) -> bool {
        let seen = self.0.lock().expect("recent heartbeats lock");
        seen.get(provider_id)
            .is_some_and(|last| within_min_interval(*last, received_at, min_interval))
    }

    /// Notes a heartbeat of `provider_id`, received at `received_at`, that the store recorded
    /// (this process's write applied, or the store's `hb_at` read back).
    pub fn recorded(&self, provider_id: &str, received_at: DateTime<Utc>) {
        let mut seen = self.0.lock().expect("recent heartbeats lock");
        if seen.len() >= MAX_REMEMBERED && !seen.contains_key(provider_id) {
            seen.clear();
        }
        let last = seen.entry(provider_id.to_string()).or_insert(received_at);
        *last = (*last).max(received_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recorded_heartbeats_hold_back_the_next_ones() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let ten = Duration::seconds(10);
        let recent = RecentHeartbeats::default();
        assert!(!recent.too_soon("p1", t(0), ten), "nothing recorded yet");
        recent.recorded("p1", t(0));
        let table = [("p1", 5, true), ("p1", 10, false), ("p1", 11, false), ("p2", 5, false)];
        for (id, at, soon) in table {
            assert_eq!(recent.too_soon(id, t(at), ten), soon, "{id} {at}");
        }
        assert!(!recent.too_soon("p1", t(5), Duration::zero()), "no limit");
        recent.recorded("p1", t(-100));
        assert!(recent.too_soon("p1", t(5), ten), "an older note never moves it back");
    }
}
