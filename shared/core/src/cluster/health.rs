//! Whether a provider's node is healthy: its Ready condition and its kubelet's Lease
//! (`kube-node-lease/<node>`), judged against the broker's clock. Pure.
//!
//! Whose clock each time is decides how far it is believed:
//! - `Ready=Unknown` is written by kube-controller-manager's node lifecycle controller when the
//!   kubelet stopped reporting (no Lease renewal within its grace period, ~40 s): its
//!   `lastTransitionTime` is the control plane's clock, as trusted as the broker's own.
//! - `Ready=False` and the Lease's `renewTime` are written by the provider's kubelet, with the
//!   provider's clock. The status is believed (a kubelet saying it is not Ready speaks against its
//!   own interest); the time only once it is older than the threshold plus a clock allowance —
//!   the skew the broker already accepts on that machine's heartbeats (the replay window: an agent
//!   whose heartbeats are recorded has a clock within it of the broker's). So an honest provider
//!   whose clock runs behind is never marked offline for a Lease it is still renewing, nor for a
//!   moment's NotReady. A time in the future counts as now.
//!
//! A provider faking health is out of scope: it is root on its node and could run a kubelet that
//! says anything. This catches an honest provider whose kubelet died while its agent still sends
//! signed heartbeats.

use chrono::{DateTime, Duration, Utc};

/// The namespace of the kubelets' Leases; each is named after its node.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The status of a node's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyStatus {
    /// The kubelet says the node is Ready.
    True,
    /// The kubelet says it is not.
    False,
    /// The node lifecycle controller heard nothing from the kubelet within its grace period.
    Unknown,
}

impl ReadyStatus {
    /// From the API's spelling; anything but `True` and `False` is `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }
}

/// A node's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyCondition {
    /// Its status.
    pub status: ReadyStatus,
    /// Its `lastTransitionTime`: the control plane's clock for `Unknown`, the provider's for the others.
    pub since: Option<DateTime<Utc>>,
}

/// A provider's node as the health check reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// Node name.
    pub name: String,
    /// Its `worldland.io/provider-id` label: the provider it was joined for.
    pub provider_id: Option<String>,
    /// Whether it carries the offline status label: its provider is already offline.
    pub marked_offline: bool,
    /// Its `Ready` condition; `None` when it has none (no kubelet ever reported).
    pub ready: Option<ReadyCondition>,
    /// Its Lease's `renewTime` (the provider's clock); `None` when there is no Lease or no renewal
    /// (and, from a page, for a node marked offline: its Lease is not read).
    pub lease_renewed: Option<DateTime<Utc>>,
}

/// One bounded page of provider nodes, and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealthPage {
    /// The page's nodes, in the API server's (name) order.
    pub nodes: Vec<NodeHealth>,
    /// The cursor of the next page; `None` after the last.
    pub next: Option<String>,
}

/// How long trouble must last before the node is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// The stale threshold (`WORLDLAND_STALE_AFTER_S`), the same as for heartbeats.
    pub stale_after: Duration,
    /// How far a provider's clock may be from the broker's (`WORLDLAND_REPLAY_WINDOW_S`): added
    /// to the threshold for the times the provider's kubelet writes.
    pub clock_allowance: Duration,
}

impl Default for HealthPolicy {
    /// The configuration's defaults: 120 s and 300 s.
    fn default() -> Self {
        Self {
            stale_after: Duration::seconds(120),
            clock_allowance: Duration::seconds(300),
        }
    }
}

/// What is wrong with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symptom {
    /// `Ready=False`: the kubelet says the node is not Ready.
    NotReady,
    /// `Ready=Unknown` (or no Ready condition): the control plane stopped hearing from the kubelet.
    Unreachable,
    /// The kubelet's Lease stopped renewing.
    LeaseStale,
}

impl Symptom {
    /// The reason code recorded on the provider (`offline_reason`).
    pub fn code(self) -> &'static str {
        match self {
            Self::NotReady => "node_not_ready",
            Self::Unreachable => "node_unreachable",
            Self::LeaseStale => "kubelet_lease_stale",
        }
    }
}

/// The health check's judgement of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing shows trouble lasting longer than the threshold.
    Healthy,
    /// Unhealthy for longer than the threshold: `why` is the symptom that lasted (the oldest, when
    /// several did), `since` the earliest sign of trouble (never after now).
    Unhealthy {
        /// The symptom.
        why: Symptom,
        /// Since when, on the broker's clock as far as it can be told.
        since: DateTime<Utc>,
    },
}

/// One sign of trouble: what, since when, and how long it must last to count.
struct Sign {
    symptom: Symptom,
    at: DateTime<Utc>,
    counts_after: Duration,
}

/// The signs of trouble a node shows at `now`. A Lease is a sign only once older than the
/// threshold (it renews every ~10 s); a Ready condition that is not True is one from its
/// transition (without a transition time nobody can say for how long: no sign).
fn signs(node: &NodeHealth, now: DateTime<Utc>, policy: HealthPolicy) -> Vec<Sign> {
    let provider_clock = policy.stale_after + policy.clock_allowance;
    let mut out = vec![];
    if let Some(ReadyCondition { status, since: Some(t) }) = node.ready {
        let (symptom, counts_after) = match status {
            ReadyStatus::True => (None, provider_clock),
            ReadyStatus::False => (Some(Symptom::NotReady), provider_clock),
            ReadyStatus::Unknown => (Some(Symptom::Unreachable), policy.stale_after),
        };
        if let Some(symptom) = symptom {
            out.push(Sign {
                symptom,
                at: t.min(now),
                counts_after,
            });
        }
    }
    if let Some(r) = node.lease_renewed.map(|r| r.min(now)) {
        if now - r > policy.stale_after {
            out.push(Sign {
                symptom: Symptom::LeaseStale,
                at: r,
                counts_after: provider_clock,
            });
        }
    }
    out
}

/// Whether `node` has been unhealthy for longer than the threshold at `now`, and since when: its
/// Ready condition `Unknown` for longer than `stale_after` (the control plane's clock), or
/// `False`, or its Lease not renewed, for longer than `stale_after + clock_allowance` (the
/// provider's clock). `since` is the earliest sign of trouble, the Lease's last renewal among
/// them once it is older than the threshold: what interrupted jobs are billed to at the latest.
pub fn assess(node: &NodeHealth, now: DateTime<Utc>, policy: HealthPolicy) -> Verdict {
    let signs = signs(node, now, policy);
    let lasting = signs.iter().filter(|s| now - s.at > s.counts_after).min_by_key(|s| s.at);
    match (lasting, signs.iter().map(|s| s.at).min()) {
        (Some(s), Some(since)) => Verdict::Unhealthy { why: s.symptom, since },
        _ => Verdict::Healthy,
    }
}

/// Why a provider may not be (again) available on `node` at `now`, if it may not: its node is
/// not Ready, or its Lease is stale by the measure [`assess`] marks by. Offline providers come
/// back only through here, so one marked offline for its node stays offline while the node is
/// still NotReady or its Lease stale. A node without a Lease is judged by its Ready condition.
pub fn unfit_to_sell(node: &NodeHealth, now: DateTime<Utc>, policy: HealthPolicy) -> Option<Symptom> {
    match node.ready.map(|r| r.status) {
        Some(ReadyStatus::True) => {}
        Some(ReadyStatus::False) => return Some(Symptom::NotReady),
        Some(ReadyStatus::Unknown) | None => return Some(Symptom::Unreachable),
    }
    let lease_limit = policy.stale_after + policy.clock_allowance;
    node.lease_renewed
        .is_some_and(|r| now - r.min(now) > lease_limit)
        .then_some(Symptom::LeaseStale)
}

#[cfg(test)]
mod tests;
