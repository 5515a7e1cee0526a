//! A job: its states, its item's schema, and its transitions ([`transitions`]: each one
//! conditional write on the jobs table); closing a job and answering for it ([`closing`]); the
//! claims that fence the deliveries placing it ([`claims`]); the workload it runs ([`workload()`]);
//! an allocated job's rental stage ([`rental`]) and its rental's objects ([`rental_spec`]).

use crate::messages::jobs::AllocateRequest;
use crate::state::{Item, Value};

mod claims;
mod closing;
pub mod rental;
pub mod rental_spec;
mod transitions;
mod workload;

pub use claims::*;
pub use closing::*;
pub use transitions::*;
pub use workload::workload;

/// A conditional write on the jobs table.
pub type Transition = crate::state::Transition<crate::state::JobsTable>;

/// A job's state, as stored in its item's `state` attribute (the jobs' index partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Being placed by the delivery that owns the claim.
    Pending,
    /// Holding GPUs, CPU and memory on one provider; billed from `allocated_at`.
    Allocated,
    /// Refused with a reason (no capacity, price, model, request).
    Rejected,
    /// Ended: its resources given back, billed to `ended_at`.
    Released,
    /// Released before it was ever allocated: a tombstone that refuses the late allocate.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 5] = [Self::Pending, Self::Allocated, Self::Rejected, Self::Released, Self::Cancelled];

    /// The stored (and printed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Allocated => "allocated",
            Self::Rejected => "rejected",
            Self::Released => "released",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state stored on a job item; `None` when absent or unknown.
    pub fn of(item: &Item) -> Option<Self> {
        let name = item.get(attr::STATE).and_then(Value::as_str)?;
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<JobState> for Value {
    fn from(s: JobState) -> Self {
        Value::from(s.as_str())
    }
}

/// Why a job ended, when the broker says it (a customer's `job.release` may give a reason of its
/// own, stored as given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Released by the customer without a reason.
    Released,
    /// Its requested duration ran out.
    Expired,
    /// Its provider went offline.
    Interrupted,
}

impl EndReason {
    /// The stored (and answered) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Interrupted => "interrupted",
        }
    }
}

/// Attribute names of a job item (key: the job id).
pub mod attr {
    /// `pending`, `allocated`, `rejected`, `released` or `cancelled`; the partition key of the jobs' state index.
    pub const STATE: &str = "state";
    /// The `AllocateRequest`, as JSON, with its workload (read it with [`super::workload`]); at
    /// most the 64 KiB a `job.allocate` body may be, as the workload's bounds keep it.
    pub const REQUEST: &str = "request";
    /// The customer's id.
    pub const CUSTOMER: &str = "customer";
    /// When the item was created, in epoch ms.
    pub const CREATED_AT: &str = "created_at";
    /// Provider being tried while `pending`, so a redelivery can find a commit made there.
    pub const ATTEMPT: &str = "attempt";
    /// Provider the job was allocated on.
    pub const PROVIDER: &str = "provider";
    /// The `JobAllocated` answer, as JSON.
    pub const ALLOCATION: &str = "allocation";
    /// When the allocation was committed (billing starts), in epoch ms.
    pub const ALLOCATED_AT: &str = "allocated_at";
    /// `<reason>: <message>` of a rejected job, as answered.
    pub const REJECTION: &str = "rejection";
    /// `true` once the `job.allocated` / `job.rejected` answer has been published.
    pub const ANSWERED: &str = "answered";
    /// When the job ended (or was cancelled), in epoch ms.
    pub const ENDED_AT: &str = "ended_at";
    /// Why it ended: the release's reason, `expired`, `interrupted`, or a cancellation's reason.
    pub const END_REASON: &str = "end_reason";
    /// Billed duration, in ms.
    pub const DURATION_MS: &str = "duration_ms";
    /// Cost in integer micro-units (GPUs × price per GPU-hour × hours, rounded half up).
    pub const COST_MICROS: &str = "cost_micros";
    /// `true` once `job.released` has been published.
    pub const RELEASE_ANSWERED: &str = "release_answered";
    /// DynamoDB TTL in epoch seconds: a closed job is removed 90 days after it ended.
    pub const TTL: &str = "ttl";
    /// While `pending`: the claim token of the delivery placing the job. Unique per
    /// delivery; every write of the placement is conditional on it (fencing).
    pub const OWNER: &str = "owner";
    /// While `pending`: the key of the request being placed ([`super::claim_key`]), so a
    /// redelivery of the same message recognises its own claim and takes it at once.
    pub const CLAIM: &str = "claim";
    /// While `pending`: when the current owner claimed it, in epoch ms (also the index sort
    /// key, so the sweeper finds claims older than the lease).
    pub const CLAIMED_AT: &str = "claimed_at";
}

/// The key of a request: the same for every delivery of the same `job.allocate` message
/// (and of an identical re-send), different for a different request under the same job id.
pub fn claim_key(req: &AllocateRequest) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::to_vec(req).expect("serialises");
    let digest = Sha256::digest(&body);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_round_trip_through_the_stored_name() {
        for state in JobState::ALL {
            let item: Item = [(attr::STATE.to_string(), Value::from(state))].into_iter().collect();
            assert_eq!(JobState::of(&item), Some(state), "{state}");
        }
        let unknown: Item = [(attr::STATE.to_string(), Value::from("placing"))].into_iter().collect();
        assert_eq!(JobState::of(&unknown), None);
        assert_eq!(JobState::of(&Item::new()), None);
    }
}
