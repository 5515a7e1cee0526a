//! `joined`/`available` → `offline` when the provider's node is unhealthy — its kubelet dead or
//! the node NotReady for longer than the stale threshold (see [`crate::cluster::health`]) —
//! though its heartbeats still arrive; what its interrupted jobs are billed to; and what its
//! recovery removes again.

use chrono::{DateTime, Utc};

use super::{attr, Transition};
use crate::cluster::health::Symptom;
use crate::messages::ProviderState;
use crate::state::{from_ms, ms, Cond, Item, Op, Value};

/// `joined`/`available` → `offline` because node `node_name` has shown `why` since `since`: only
/// while the provider is still live on that very node (a provider that went offline meanwhile,
/// or moved to another node, is left alone). Records why (`offline_reason`: the symptom's code,
/// then `detail`) and since when (`node_unhealthy_since`), and takes the provider out of the
/// placement index, as every offline write does.
pub fn mark_offline_for_node(node_name: &str, why: Symptom, detail: &str, since: DateTime<Utc>, now: DateTime<Utc>) -> Transition {
    Transition::new(
        Cond::state_in(&[ProviderState::Joined, ProviderState::Available]).and(Cond::eq(attr::NODE_NAME, node_name)),
        vec![
            Op::set(attr::STATE, ProviderState::Offline),
            Op::set(attr::OFFLINE_AT, ms(now)),
            Op::set(attr::UPDATED_AT, ms(now)),
            Op::set(attr::OFFLINE_REASON, format!("{}: {detail}", why.code())),
            Op::set(attr::NODE_UNHEALTHY_SINCE, ms(since.min(now))),
            Op::Remove(attr::PLACE_MODEL.into()),
        ],
    )
}

/// What the jobs of an offline provider are billed to when they are interrupted: its last
/// heartbeat (the broker's receive time), and never later than its node was seen in trouble
/// (`node_unhealthy_since`, when it went offline for its node) nor than `now`.
pub fn interrupted_at(last_heartbeat: DateTime<Utc>, node_unhealthy_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let end = last_heartbeat.min(now);
    node_unhealthy_since.map_or(end, |since| end.min(since))
}

/// [`interrupted_at`] for a provider's stored item, without a `now` (the reconcile pass closes
/// what an offline write left open, later): an offline provider's heartbeats keep moving `hb_at`
/// while its node is down, `node_unhealthy_since` holds the bill where it was. `None` without a
/// heartbeat.
pub fn interrupted_at_for(item: &Item) -> Option<DateTime<Utc>> {
    let at = |a: &str| item.get(a).and_then(Value::as_i64).map(from_ms);
    let hb = at(attr::HB_AT)?;
    Some(interrupted_at(hb, at(attr::NODE_UNHEALTHY_SINCE), hb))
}

/// A recovery (`offline → available`) that also forgets why the node was in trouble.
pub fn forgetting_node_trouble(recovery: Transition) -> Transition {
    let mut ops = recovery.ops;
    ops.push(Op::Remove(attr::OFFLINE_REASON.into()));
    ops.push(Op::Remove(attr::NODE_UNHEALTHY_SINCE.into()));
    Transition::new(recovery.cond, ops)
}

#[cfg(test)]
mod tests;
