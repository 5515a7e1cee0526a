//! Time as the broker sees it. Decision logic takes `now` (or a [`Clock`]) so tests drive it.

use chrono::{DateTime, Utc};

/// A source of the current time, shared by long-running loops (the sweeper's).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

impl<F: Fn() -> DateTime<Utc> + Send + Sync + 'static> Clock for F {
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}
