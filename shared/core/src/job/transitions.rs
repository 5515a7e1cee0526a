//! A job's transitions: each a pure function returning one conditional write on its item.

use chrono::{DateTime, Utc};

use super::{attr, JobState, Transition};
use crate::messages::jobs::{AllocateRequest, JobAllocated};
use crate::state::{ms, Cond, Op, INDEX_SORT_ATTR};

/// The ops that record a claim by `owner` for the request `claim` at `now`; `hb_at` is the
/// claim time while pending, so stale claims are found through the state index.
fn claim_ops(claim: &str, owner: &str, now: DateTime<Utc>) -> Vec<Op> {
    vec![
        Op::set(attr::CLAIM, claim),
        Op::set(attr::OWNER, owner),
        Op::set(attr::CLAIMED_AT, ms(now)),
        Op::set(INDEX_SORT_ATTR, ms(now)),
    ]
}

/// The condition that the job is pending under `owner` (fencing for every placement write).
pub fn owned_by(owner: &str) -> Cond {
    Cond::eq(attr::STATE, JobState::Pending).and(Cond::eq(attr::OWNER, owner))
}

/// Takes over a pending job from `old` (its owner as read; `None` for a claim without one):
/// only while `old` still owns it and, with `stale_before`, only if its claim is older than
/// that (epoch ms). After it, every write of the old owner fails its condition.
pub fn take_claim(old: Option<&str>, stale_before: Option<i64>, claim: &str, owner: &str, now: DateTime<Utc>) -> Transition {
    let mut cond = Cond::eq(attr::STATE, JobState::Pending).and(match old {
        Some(o) => Cond::eq(attr::OWNER, o),
        None => Cond::AttrNotExists(attr::OWNER.into()),
    });
    if let Some(before) = stale_before {
        cond = cond.and(Cond::Or(vec![
            Cond::AttrNotExists(attr::CLAIMED_AT.into()),
            Cond::Lt(attr::CLAIMED_AT.into(), before),
        ]));
    }
    Transition::new(cond, claim_ops(claim, owner, now))
}

/// Job states: `pending` (placing), `allocated`, `rejected`, `released` (ended normally,
/// expired or interrupted: see `end_reason`), `cancelled` (released before it was placed).
/// Created claimed by `owner`, for the request `claim` ([`claim_key`]).
pub fn create_pending(req: &AllocateRequest, claim: &str, owner: &str, now: DateTime<Utc>) -> Transition {
    let mut ops = vec![
        Op::set(attr::STATE, JobState::Pending),
        Op::set(attr::REQUEST, serde_json::to_string(req).expect("serialises")),
        Op::set(attr::CUSTOMER, req.customer_id.as_str()),
        Op::set(attr::CREATED_AT, ms(now)),
    ];
    ops.extend(claim_ops(claim, owner, now));
    Transition::new(Cond::ItemNotExists, ops)
}

/// Notes which provider is being tried, so a redelivery can find a commit that happened.
pub fn attempt(provider_id: &str) -> Transition {
    Transition::new(Cond::eq(attr::STATE, JobState::Pending), vec![Op::set(attr::ATTEMPT, provider_id)])
}

/// `pending → allocated`; a job with a duration gets its due time on the state index.
pub fn allocated(a: &JobAllocated, started_at_ms: i64, due_at_ms: Option<i64>) -> Transition {
    let mut ops = vec![
        Op::set(attr::STATE, JobState::Allocated),
        Op::set(attr::PROVIDER, a.provider_id.as_str()),
        Op::set(attr::ALLOCATION, serde_json::to_string(a).expect("serialises")),
        Op::set(attr::ALLOCATED_AT, started_at_ms),
    ];
    // The sort key held the claim time while pending; allocated, it is the due time or absent.
    ops.push(match due_at_ms {
        Some(due) => Op::set(INDEX_SORT_ATTR, due),
        None => Op::Remove(INDEX_SORT_ATTR.into()),
    });
    Transition::new(Cond::eq(attr::STATE, JobState::Pending), ops)
}

/// `pending → rejected`, keeping `<reason>: <message>` for the answer.
pub fn rejected(reason: &str, message: &str) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, JobState::Pending),
        vec![
            Op::set(attr::STATE, JobState::Rejected),
            Op::set(attr::REJECTION, format!("{reason}: {message}")),
            Op::Remove(INDEX_SORT_ATTR.into()),
        ],
    )
}

/// `pending → cancelled`: a release met a job whose placement never committed.
pub fn cancelled_while_pending(reason: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, JobState::Pending),
        vec![
            Op::set(attr::STATE, JobState::Cancelled),
            Op::set(attr::END_REASON, reason),
            Op::set(attr::ENDED_AT, ms(now)),
            Op::Remove(INDEX_SORT_ATTR.into()),
        ],
    )
}

/// `job.released` (and the `mining.resume` it owed) went out: marked, and off the released
/// index, where only unanswered closes are kept.
pub fn release_answered() -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, JobState::Released),
        vec![Op::set(attr::RELEASE_ANSWERED, true), Op::Remove(INDEX_SORT_ATTR.into())],
    )
}

/// Marks the answer flag `which` ([`attr::ANSWERED`]; for a release, [`release_answered`]) as published.
pub fn answered(which: &str) -> Transition {
    Transition::new(Cond::ItemExists, vec![Op::set(which, true)])
}

/// A release for a job never seen: it can never be allocated afterwards.
pub fn cancelled_before_allocation(reason: &str, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::ItemNotExists,
        vec![
            Op::set(attr::STATE, JobState::Cancelled),
            Op::set(attr::END_REASON, reason),
            Op::set(attr::ENDED_AT, ms(now)),
            Op::set(attr::CREATED_AT, ms(now)),
        ],
    )
}

/// `allocated → released`, with duration and exact cost. Off the due index, onto the released
/// one (sort key: its end) until [`release_answered`] takes it off: a close whose answer went
/// missing is found there and answered by the next sweep.
pub fn closed(reason: &str, ended_at_ms: i64, duration_ms: i64, cost: i64) -> Transition {
    Transition::new(
        Cond::eq(attr::STATE, JobState::Allocated),
        vec![
            Op::set(attr::STATE, JobState::Released),
            Op::set(attr::END_REASON, reason),
            Op::set(attr::ENDED_AT, ended_at_ms),
            Op::set(attr::DURATION_MS, duration_ms),
            Op::set(attr::COST_MICROS, cost),
            Op::set(INDEX_SORT_ATTR, ended_at_ms),
            // DynamoDB's TTL (epoch seconds) removes closed jobs 90 days after they end.
            Op::set(attr::TTL, ended_at_ms / 1000 + 90 * 86_400),
        ],
    )
}
