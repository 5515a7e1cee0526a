//! Jobs left `pending` past the claim lease: their placing delivery died, stalled, or gave up
//! (dead-lettered) mid-placement. Found through the jobs' state index (while pending, a job's
//! sort key is its claim time), each is taken over with a conditional write on the claim's age
//! and owner, then settled: a commit that landed is finished (`allocated`, answered), otherwise
//! the job is rolled back (`rejected` `placement_interrupted`, answered) with the ledger as it was.

use chrono::{DateTime, Utc};
use worldland_core::job::JobState;
use worldland_core::job::{self, answer_settled, resolve_pending, Resolution, RollBack, CLAIM_LEASE_S};
use worldland_core::state::{StoreResult, Table, Value, KEY_ATTR};

use crate::Context;

/// The reason code of a job rolled back because its placement was interrupted.
pub const INTERRUPTED: &str = "placement_interrupted";

/// Resolves every job pending under a claim older than the lease; how many it settled. A job it
/// cannot settle now (a live claim, a store error) is left for the next sweep.
pub async fn resolve_stale_pending(ctx: &Context, now: DateTime<Utc>) -> StoreResult<usize> {
    let stale_before = job::stale_before(now, CLAIM_LEASE_S);
    let stale = ctx
        .store
        .query_by_state(Table::Jobs, JobState::Pending.as_str(), Some(stale_before))
        .await?;
    let mut settled = 0;
    for item in stale {
        let Some(id) = item.get(KEY_ATTR).and_then(Value::as_str) else {
            continue;
        };
        let me = job::new_claim_token();
        let how = RollBack::Reject {
            reason: INTERRUPTED,
            message: "placement was interrupted and nothing was allocated; send the request again under a new job id",
        };
        let item = match resolve_pending(ctx.store.as_ref(), id, &me, stale_before, how, now).await {
            Ok(Resolution::Allocated(item) | Resolution::RolledBack(item)) => item,
            Ok(_) => continue, // settled meanwhile, or a live owner took it
            Err(e) => {
                tracing::warn!(job_id = id, error = %e, "stale pending job not resolved; next sweep tries again");
                continue;
            }
        };
        settled += 1;
        tracing::info!(job_id = id, state = ?JobState::of(&item), "stale pending job resolved");
        if let Err(e) = answer_settled(ctx.store.as_ref(), ctx.bus.as_ref(), ctx.replies.as_ref(), &item, id).await {
            tracing::warn!(job_id = id, error = %e, "answer of a resolved job not sent");
        }
    }
    Ok(settled)
}
