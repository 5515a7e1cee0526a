//! Node marks follow the stored state: an offline provider's node carries the offline label and
//! taint, a live one's none; after marking a node the sweeper re-reads its provider and undoes
//! the marks if it came back, and a slow reconcile pass repairs any node whose marks disagree.

use std::collections::BTreeMap;
use std::sync::Mutex;

use worldland_core::cluster::Cluster;
use worldland_core::job::EndReason;
use worldland_core::labels;
use worldland_core::ledger::Ledger;
use worldland_core::messages::ProviderState;
use worldland_core::provider::ProviderRecord;
use worldland_core::state::{StoreResult, Table, Value, INDEX_STATE_ATTR, KEY_ATTR};
use worldland_core::BoxError;

use crate::Context;

/// Marks a node offline: the status label and the NoSchedule taint.
pub(crate) async fn mark_node_offline(cluster: &dyn Cluster, node: &str) -> worldland_core::cluster::ClusterResult<()> {
    let status = BTreeMap::from([(labels::STATUS.to_string(), Some(labels::STATUS_OFFLINE.to_string()))]);
    cluster.patch_node_metadata(node, &status, &BTreeMap::new()).await?;
    cluster.set_offline_taint(node, true).await
}

/// Takes the offline marks off a node, as a recovery does: the taint, then the status label.
async fn unmark_node(cluster: &dyn Cluster, node: &str) -> worldland_core::cluster::ClusterResult<()> {
    cluster.set_offline_taint(node, false).await?;
    let status = BTreeMap::from([(labels::STATUS.to_string(), None)]);
    cluster.patch_node_metadata(node, &status, &BTreeMap::new()).await
}

/// What a node carries of the offline marks: (the taint, the status label).
fn marks_of(node: &worldland_core::cluster::NodeInfo) -> (bool, bool) {
    (
        node.taints.iter().any(|t| t.key == labels::OFFLINE_TAINT),
        node.labels.get(labels::STATUS).map(String::as_str) == Some(labels::STATUS_OFFLINE),
    )
}

/// Makes the provider's node marks follow its stored state: offline → both marks, joined or
/// available → neither; other states are left alone. The state is read again after every write,
/// so a transition landing while the marks were written (a heartbeat bringing it back, a sweeper
/// taking it offline) is followed too. Returns whether anything was written.
pub async fn follow_stored_state(ctx: &Context, provider_id: &str) -> Result<bool, BoxError> {
    let mut wrote = false;
    // Each round reads the state, then the node; a write is followed by another round. Three
    // rounds settle anything but a provider flapping faster than the writes.
    for _ in 0..3 {
        let Some(rec) = ProviderRecord::load(ctx.store.as_ref(), provider_id).await? else {
            return Ok(wrote);
        };
        let offline = match rec.state {
            ProviderState::Offline => true,
            ProviderState::Joined | ProviderState::Available => false,
            _ => return Ok(wrote),
        };
        let Some(node) = ctx.cluster.get_node(&rec.node_name).await? else {
            return Ok(wrote);
        };
        let (taint, label) = marks_of(&node);
        if offline {
            if taint && label {
                return Ok(wrote);
            }
            mark_node_offline(ctx.cluster.as_ref(), &rec.node_name).await?;
            tracing::info!(provider_id, node = %rec.node_name, "offline marks written to follow the stored state");
        } else {
            if !taint && !label {
                return Ok(wrote);
            }
            unmark_node(ctx.cluster.as_ref(), &rec.node_name).await?;
            tracing::info!(provider_id, node = %rec.node_name, state = %rec.state, "offline marks removed to follow the stored state");
        }
        wrote = true;
    }
    Ok(wrote)
}

/// After the sweeper marked a node: one read of the provider, and nothing more while it is still
/// offline (the marks just written are right); if it came back meanwhile, the marks follow it.
pub(crate) async fn recheck_after_marking(ctx: &Context, provider_id: &str) -> Result<(), BoxError> {
    match ProviderRecord::load(ctx.store.as_ref(), provider_id).await? {
        Some(rec) if rec.state != ProviderState::Offline => {
            follow_stored_state(ctx, provider_id).await?;
        }
        _ => {}
    }
    Ok(())
}

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Providers whose node was checked.
    pub checked: usize,
    /// Nodes whose marks were rewritten to agree with the stored state.
    pub repaired: usize,
    /// Orphan allocation entries given back (jobs allocated elsewhere or settled).
    pub orphans_given_back: usize,
    /// Jobs still open on an offline provider (its offline write's jobs not all closed), closed.
    pub jobs_closed: usize,
}

/// The slow repair of node marks: checks at most `limit` providers (offline, then available,
/// then joined, from `cursor` on, wrapping around), and makes each node's marks follow the
/// stored state. `cursor` carries over between passes, so every provider is checked in turn.
pub async fn reconcile_marks(ctx: &Context, limit: usize, cursor: &mut usize) -> StoreResult<ReconcileReport> {
    let mut ids = vec![];
    for state in [ProviderState::Offline, ProviderState::Available, ProviderState::Joined] {
        let items = ctx
            .store
            .query_by_state_projected(Table::Providers, state.as_str(), None, &[])
            .await?;
        ids.extend(
            items
                .iter()
                .filter_map(|i| i.get(KEY_ATTR).and_then(Value::as_str).map(str::to_string)),
        );
    }
    let mut report = ReconcileReport::default();
    if ids.is_empty() {
        *cursor = 0;
        return Ok(report);
    }
    let start = *cursor % ids.len();
    let take = limit.min(ids.len());
    for id in ids.iter().cycle().skip(start).take(take) {
        report.checked += 1;
        match follow_stored_state(ctx, id).await {
            Ok(true) => report.repaired += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(provider_id = %id, error = %e, "node marks not reconciled; a later pass tries again"),
        }
        match reconcile_ledger(ctx, id).await {
            Ok((given, closed)) => {
                report.orphans_given_back += given;
                report.jobs_closed += closed;
            }
            Err(e) => tracing::warn!(provider_id = %id, error = %e, "ledger not reconciled; a later pass tries again"),
        }
    }
    *cursor = (start + take) % ids.len();
    Ok(report)
}

/// The ledger of one provider made to agree with the jobs: orphan entries given back (see
/// `job::is_orphan`), and, when the provider is offline, the jobs still allocated on it closed
/// as interrupted (billed to its last heartbeat, or its node's trouble: see
/// `provider::interrupted_at_for`). (orphans given back, jobs closed).
async fn reconcile_ledger(ctx: &Context, provider_id: &str) -> StoreResult<(usize, usize)> {
    let given = worldland_core::job::give_back_orphans(ctx.store.as_ref(), provider_id).await?;
    for job_id in &given {
        tracing::warn!(provider_id, job_id = %job_id, "orphan allocation given back");
    }
    let Some(item) = ctx.store.get(Table::Providers, provider_id).await? else {
        return Ok((given.len(), 0));
    };
    if item.get(INDEX_STATE_ATTR).and_then(Value::as_str) != Some(ProviderState::Offline.as_str()) {
        return Ok((given.len(), 0));
    }
    let jobs: Vec<String> = Ledger::from_item(&item).map(|l| l.allocs.into_keys().collect()).unwrap_or_default();
    // Its last heartbeat, and never later than its node was seen in trouble when it went
    // offline for its node (its heartbeats may have gone on since).
    let ended = worldland_core::provider::interrupted_at_for(&item).unwrap_or_else(chrono::Utc::now);
    let mut closed = 0;
    for job_id in jobs {
        if crate::close_on_and_announce(ctx, provider_id, &job_id, EndReason::Interrupted.as_str(), ended).await {
            closed += 1;
        }
    }
    Ok((given.len(), closed))
}

/// A reconcile pass runs once every this many sweeps.
pub const RECONCILE_EVERY: u64 = 20;
/// A reconcile pass checks at most this many providers.
pub const RECONCILE_LIMIT: usize = 100;

/// Counts sweeps and runs a reconcile pass every [`RECONCILE_EVERY`] of them.
#[derive(Debug, Default)]
pub struct Reconciler {
    state: Mutex<(u64, usize)>,
}

impl Reconciler {
    /// Called after each sweep: on every [`RECONCILE_EVERY`]th, one bounded pass.
    pub async fn after_sweep(&self, ctx: &Context) {
        let (due, mut cursor) = {
            let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            st.0 += 1;
            (st.0 % RECONCILE_EVERY == 1, st.1)
        };
        if !due {
            return;
        }
        match reconcile_marks(ctx, RECONCILE_LIMIT, &mut cursor).await {
            Ok(r) if r.repaired > 0 => tracing::info!(?r, "node marks reconciled"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconcile pass failed; a later one tries again"),
        }
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = cursor;
    }
}
