//! The node-health pass: a provider whose agent still sends signed heartbeats but whose node is
//! NotReady, or whose kubelet stopped renewing its Lease, for longer than the stale threshold
//! (see [`worldland_core::cluster::health::assess`]) is marked offline like a stale one — its
//! jobs interrupted (billed no later than its node was first seen in trouble), its node marked —
//! with the reason recorded. The heartbeat recorder brings it back only onto a node that is
//! Ready with a live Lease again.
//!
//! Each sweep reads a bounded window of provider nodes ([`NODE_PAGES_PER_SWEEP`] pages of
//! [`NODE_PAGE`], Leases included), continuing where the last sweep stopped and starting over
//! after the last page: a fleet up to the window is read whole every sweep, a larger one over
//! several. Nobody is marked when the read fails, nor when the window looks like an outage of
//! the control plane rather than of the nodes: more than the stall guard's share (and at least
//! its minimum) of the live nodes read unhealthy at once — a kube-controller-manager that
//! marked every node `Unknown`, an API server the kubelets could not reach. The nodes of
//! providers already offline (the offline status label) count for neither side.

use std::sync::Mutex;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use worldland_core::cluster::health::{assess, HealthPolicy, Symptom, Verdict};
use worldland_core::cluster::{ClusterResult, NodeHealth};
use worldland_core::provider::{interrupted_at, mark_offline_for_node};
use worldland_core::state::StoreResult;

use crate::{after_offline, stall_decision, Context, Stall, StallGuard, SweepReport};

/// Nodes asked for per page.
pub const NODE_PAGE: u32 = 100;
/// Pages one sweep reads at most.
pub const NODE_PAGES_PER_SWEEP: usize = 5;

/// The pass's setting and where the next sweep's window starts.
#[derive(Debug)]
pub struct NodeHealthPass {
    /// How far a provider's clock may be from the broker's (the replay window): the kubelet's
    /// times count only once older than the threshold plus this.
    pub clock_allowance: Duration,
    cursor: Mutex<Option<String>>,
}

impl Default for NodeHealthPass {
    fn default() -> Self {
        Self::new(HealthPolicy::default().clock_allowance)
    }
}

impl NodeHealthPass {
    /// A pass allowing provider clocks `clock_allowance` off, starting at the first page.
    pub fn new(clock_allowance: Duration) -> Self {
        Self {
            clock_allowance,
            cursor: Mutex::new(None),
        }
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What one node-health pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealthReport {
    /// Provider nodes read.
    pub read: usize,
    /// Of those of live providers, the ones unhealthy for longer than the threshold.
    pub unhealthy: usize,
    /// Providers this pass marked offline for their node.
    pub marked_offline: usize,
    /// Too many unhealthy at once: nobody was marked.
    pub guard_held: bool,
    /// The cluster could not be read: nobody was marked.
    pub read_failed: bool,
}

/// A live provider's node, unhealthy for longer than the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The provider its label names.
    pub provider_id: String,
    /// The node as read.
    pub node: NodeHealth,
    /// What lasted.
    pub why: Symptom,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// The judgement of one window of nodes. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Nodes of live providers (not marked offline) in the window.
    pub live: usize,
    /// Those unhealthy for longer than the threshold.
    pub unhealthy: Vec<Unhealthy>,
    /// Why nobody may be marked, when the guard holds.
    pub held: Option<Stall>,
}

/// Judges a window of provider nodes at `now`: each live one's health, and whether so many are
/// unhealthy at once that the control plane, not the nodes, is in trouble.
pub fn judge(nodes: &[NodeHealth], now: DateTime<Utc>, policy: HealthPolicy, guard: StallGuard) -> Judgement {
    let live: Vec<&NodeHealth> = nodes.iter().filter(|n| !n.marked_offline).collect();
    let unhealthy: Vec<Unhealthy> = live
        .iter()
        .filter_map(|n| match (assess(n, now, policy), &n.provider_id) {
            (Verdict::Unhealthy { why, since }, Some(p)) => Some(Unhealthy {
                provider_id: p.clone(),
                node: (*n).clone(),
                why,
                since,
            }),
            _ => None,
        })
        .collect();
    let held = stall_decision(guard, live.len(), unhealthy.len(), None, 0);
    Judgement {
        live: live.len(),
        unhealthy,
        held,
    }
}

/// Reads this sweep's window from where the last one stopped; the cursor moves on only when the
/// whole window was read, and starts over after a failure (a continue token too old included).
async fn read_window(ctx: &Context) -> ClusterResult<Vec<NodeHealth>> {
    let mut cursor = ctx.node_health.cursor().clone();
    let mut nodes = vec![];
    for _ in 0..NODE_PAGES_PER_SWEEP {
        let page = match ctx.cluster.provider_node_health(cursor.as_deref(), NODE_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                *ctx.node_health.cursor() = None;
                return Err(e);
            }
        };
        nodes.extend(page.nodes);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    *ctx.node_health.cursor() = cursor;
    Ok(nodes)
}

fn rfc3339(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// What was seen, for `offline_reason`.
fn detail(u: &Unhealthy) -> String {
    let ready = u.node.ready.map_or_else(
        || "no Ready condition".to_string(),
        |r| format!("Ready={:?} since {}", r.status, rfc3339(r.since)),
    );
    format!(
        "node {}: {ready}, Lease renewed {}; unhealthy since {}",
        u.node.name,
        rfc3339(u.node.lease_renewed),
        rfc3339(Some(u.since))
    )
}

/// Marks one provider offline for its node, if it is still live on that node; whether this call
/// made the change.
/// The node read again, alone, and judged again: a window's list is a snapshot that may be older
/// than this sweep (its `continue` token reads the first page's), and the node may have
/// recovered since. `None` unless it is still unhealthy now.
async fn still_unhealthy(ctx: &Context, u: &Unhealthy, now: DateTime<Utc>, policy: HealthPolicy) -> Option<Unhealthy> {
    match ctx.cluster.node_health(&u.node.name).await {
        Ok(Some(node)) => match assess(&node, now, policy) {
            Verdict::Unhealthy { why, since } => Some(Unhealthy {
                provider_id: u.provider_id.clone(),
                node,
                why,
                since,
            }),
            _ => None,
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(node = %u.node.name, error = %e, "node not read again before marking: left for a later pass");
            None
        }
    }
}

async fn mark_unhealthy(ctx: &Context, u: &Unhealthy, now: DateTime<Utc>, report: &mut SweepReport) -> StoreResult<bool> {
    let why = detail(u);
    let written = mark_offline_for_node(&u.node.name, u.why, &why, u.since, now)
        .run(ctx.store.as_ref(), &u.provider_id)
        .await?;
    let Some(marked) = written else {
        return Ok(false); // offline already, another sweeper was first, or not this node's provider
    };
    tracing::warn!(provider_id = %marked.provider_id, node = %u.node.name, reason = u.why.code(), %why, "provider offline: its node is unhealthy");
    after_offline(ctx, &marked, interrupted_at(marked.hb_at, Some(u.since), now), report).await;
    Ok(true)
}

/// One node-health pass at `now`, its account in `report`. A cluster read that fails marks nobody
/// and is no error of the sweep; a store error is.
pub async fn sweep_node_health(ctx: &Context, now: DateTime<Utc>, report: &mut SweepReport) -> StoreResult<()> {
    let nodes = match read_window(ctx).await {
        Ok(nodes) => nodes,
        Err(e) => {
            report.node_health.read_failed = true;
            tracing::warn!(error = %e, "provider nodes' health not read: nobody marked offline for their node this sweep");
            return Ok(());
        }
    };
    report.node_health.read = nodes.len();
    let policy = HealthPolicy {
        stale_after: ctx.stale_after,
        clock_allowance: ctx.node_health.clock_allowance,
    };
    let judged = judge(&nodes, now, policy, ctx.guard);
    report.node_health.unhealthy = judged.unhealthy.len();
    worldland_runtime::metrics::sweeper_node_guard_active(judged.held.is_some());
    if let Some(why) = judged.held {
        report.node_health.guard_held = true;
        tracing::warn!(?why, "node-health guard holds: too many nodes unhealthy at once (controller manager or API server trouble?); nobody marked offline for their node");
        return Ok(());
    }
    for u in &judged.unhealthy {
        let Some(u) = still_unhealthy(ctx, u, now, policy).await else {
            continue;
        };
        if mark_unhealthy(ctx, &u, now, report).await? {
            report.node_health.marked_offline += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
