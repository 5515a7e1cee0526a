//! A process's readiness, as `/readyz` reports it: ready while every worker it runs is consuming
//! (a container runs one, `worldland up` all of them). Owned by whoever starts the workers and
//! handed to each, never a global: two processes' (or tests') readiness never mix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The readiness of one process: ready when it has workers and each of them is.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Vec<ReadyPart>>>);

/// One worker's share of its process's readiness; not ready until it says so.
#[derive(Clone, Default)]
pub struct ReadyPart(Arc<AtomicBool>);

impl Readiness {
    /// A new part for one worker, not ready yet.
    pub fn part(&self) -> ReadyPart {
        let part = ReadyPart::default();
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(part.clone());
        part
    }

    /// Whether every part is ready (and there is at least one).
    pub fn is_ready(&self) -> bool {
        let parts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        !parts.is_empty() && parts.iter().all(ReadyPart::is_ready)
    }
}

impl ReadyPart {
    /// A part no process reports on (a test's or a benchmark's consumer).
    pub fn unobserved() -> Self {
        Self::default()
    }

    /// Marks this worker ready (consuming) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_every_worker_is() {
        let r = Readiness::default();
        assert!(!r.is_ready(), "no worker yet");
        let (a, b) = (r.part(), r.part());
        a.set(true);
        assert!(!r.is_ready(), "one of two consumes");
        b.set(true);
        assert!(r.is_ready());
        a.set(false);
        assert!(!r.is_ready(), "one stopped");
        let other = Readiness::default();
        other.part().set(true);
        assert!(!r.is_ready(), "another process's readiness does not count");
    }
}
