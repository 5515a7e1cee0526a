//! What a rental's pod says, and what the broker does about it.
//!
//! The kubelet reporting a pod's status is the provider's: the broker takes its word for the
//! pod's phase (nothing else could tell), but never its clock — a rental is billed from when the
//! broker first saw its container running to when the broker saw it end (or the customer's
//! release, the due time, the provider's last heartbeat), never from `startedAt`/`finishedAt`.
//! Each decision is pure: [`decide`] takes what the controller read and the job's stage, and
//! every action it returns is applied as one conditional write that recognises its replay, so
//! many events saying the same thing release the job once.

use chrono::{DateTime, Duration, Utc};

/// The pod's phase as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Accepted, not yet running (scheduling, pulling, creating).
    Pending,
    /// Bound and its container started.
    Running,
    /// Its container exited 0.
    Succeeded,
    /// Its container exited non-zero, or the pod was evicted.
    Failed,
    /// The node stopped reporting, or a phase this code does not know.
    Unknown,
}

impl PodPhase {
    /// From `status.phase`; anything else is `Unknown`.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Pending") => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            _ => Self::Unknown,
        }
    }
}

/// How the rental's container ended, when it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// The container's exit code.
    pub exit_code: i32,
    /// `OOMKilled`, `Error`, `Completed`, `ContainerCannotRun`, …
    pub reason: Option<String>,
}

/// What the controller read of a rental's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// `status.phase`.
    pub phase: PodPhase,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.reason` (`Evicted`, …).
    pub reason: Option<String>,
    /// The rental container is running now.
    pub running: bool,
    /// Why the rental container is waiting (`ContainerCreating`, `ErrImagePull`, …).
    pub waiting: Option<String>,
    /// How it ended, if it has (the last termination state counts: `restartPolicy: Never`).
    pub terminated: Option<Terminated>,
    /// `metadata.deletionTimestamp` is set: someone is deleting it.
    pub deleting: bool,
}

/// Where an open (allocated) job's rental stands, as stored on the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The allocation took GPUs from mining: the pod waits for the provider's `mining.stop` ack,
    /// asked for at `since`.
    AwaitingMiningStop {
        /// When `mining.stop` was sent.
        since: DateTime<Utc>,
    },
    /// The pod was created at `since` (or is to be): not yet seen running.
    Starting {
        /// When the pod was first made (or asked for).
        since: DateTime<Utc>,
    },
    /// First seen running at `since` (the broker's clock): billed from then.
    Running {
        /// When the broker first saw the container running.
        since: DateTime<Utc>,
    },
}

/// Why a rental ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RentalEnd {
    /// The pod Succeeded.
    Completed,
    /// The container exited non-zero (its exit code kept).
    Failed {
        /// The container's exit code (-1 when the kubelet gave none).
        exit_code: i32,
    },
    /// The kernel killed it for memory.
    OomKilled,
    /// The kubelet evicted the pod.
    Evicted,
    /// Someone else deleted the pod.
    Deleted,
    /// Seen running once, then gone without a trace (found by the reconcile pass).
    Lost,
    /// Never running within the start timeout (image never pulled, container never created).
    StartFailed,
    /// The provider never acknowledged `mining.stop` within its timeout: the pod was never made.
    MiningNotStopped,
}

impl RentalEnd {
    /// The end reason as stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed { .. } => "failed",
            Self::OomKilled => "oom_killed",
            Self::Evicted => "evicted",
            Self::Deleted => "deleted",
            Self::Lost => "lost",
            Self::StartFailed => "start_failed",
            Self::MiningNotStopped => "mining_not_stopped",
        }
    }
}

/// The controller's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `WORLDLAND_START_TIMEOUT_S` (600): from the pod's creation to its container running.
    pub start: Duration,
    /// `WORLDLAND_MINING_STOP_TIMEOUT_S` (60): from `mining.stop` to its ack.
    pub mining_stop: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            start: Duration::seconds(600),
            mining_stop: Duration::seconds(60),
        }
    }
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing now.
    Wait,
    /// Create the pod (none yet, or gone while starting).
    Create,
    /// The container runs: the job becomes `running`, billed from `at` (the broker's clock).
    MarkRunning {
        /// The broker's now.
        at: DateTime<Utc>,
    },
    /// The pod sits on a node that is not its job's provider's: delete it (a new one is made).
    DeleteMisplaced,
    /// The rental ended: release the job with `end` at `at`, billed from its running time (if it
    /// ever ran) to `at`; then delete the pod.
    Release {
        /// Why it ended.
        end: RentalEnd,
        /// When (the broker's now).
        at: DateTime<Utc>,
    },
}

/// Decides for an open job at `stage`, its provider's node `node`, and its pod as read (`None`:
/// no such pod), at `now` (the broker's clock).
pub fn decide(stage: Stage, node: &str, pod: Option<&PodView>, now: DateTime<Utc>, t: Timeouts) -> Verdict {
    let release = |end| Verdict::Release { end, at: now };
    let Some(pod) = pod else {
        return match stage {
            Stage::AwaitingMiningStop { since } if now - since > t.mining_stop => release(RentalEnd::MiningNotStopped),
            Stage::AwaitingMiningStop { .. } => Verdict::Wait,
            Stage::Starting { since } if now - since > t.start => release(RentalEnd::StartFailed),
            Stage::Starting { .. } => Verdict::Create,
            Stage::Running { .. } => release(RentalEnd::Lost),
        };
    };
    if pod.node.as_deref().is_some_and(|n| n != node) {
        return Verdict::DeleteMisplaced;
    }
    if let Some(end) = ended(pod) {
        return release(end);
    }
    if pod.deleting {
        return release(RentalEnd::Deleted);
    }
    match stage {
        _ if !(pod.running && pod.phase == PodPhase::Running) => match stage {
            Stage::Starting { since } | Stage::AwaitingMiningStop { since } if now - since > t.start => release(RentalEnd::StartFailed),
            _ => Verdict::Wait,
        },
        Stage::Running { .. } => Verdict::Wait,
        Stage::Starting { .. } | Stage::AwaitingMiningStop { .. } => Verdict::MarkRunning { at: now },
    }
}

/// How a pod that has ended ended; `None` while it has not.
fn ended(pod: &PodView) -> Option<RentalEnd> {
    let oom = pod.terminated.as_ref().and_then(|t| t.reason.as_deref()) == Some("OOMKilled");
    match pod.phase {
        PodPhase::Succeeded => Some(RentalEnd::Completed),
        PodPhase::Failed if pod.reason.as_deref() == Some("Evicted") => Some(RentalEnd::Evicted),
        PodPhase::Failed if oom => Some(RentalEnd::OomKilled),
        PodPhase::Failed => Some(RentalEnd::Failed {
            exit_code: pod.terminated.as_ref().map_or(-1, |t| t.exit_code),
        }),
        _ => None,
    }
}

/// The billed span of a rental that ended at `ended_at`: from its running time, if it ever ran,
/// and never negative; zero for one that never ran.
pub fn billed(running_since: Option<DateTime<Utc>>, ended_at: DateTime<Utc>) -> Duration {
    running_since.map_or(Duration::zero(), |s| (ended_at - s).max(Duration::zero()))
}

#[cfg(test)]
mod tests;
