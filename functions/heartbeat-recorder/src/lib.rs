//! Heartbeat recorder: the broker, not the agent, decides a provider's state.
//!
//! Hot path: one conditional write, no read before it — it applies only to the provider's own
//! node, signed by its own wallet, and only if later than the last heartbeat. Cold paths (a read,
//! then Kubernetes) run only on transitions: the first heartbeat after approval joins the
//! provider (node checked against the spec, labelled, token deleted), a joined provider becomes
//! available once its node is Ready, an offline one comes back. Node writes stay rare: the
//! active-jobs label only when it changes, the last-heartbeat annotation at most once per
//! interval.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use tracing::instrument;
use worldland_core::bus::routes::ToHeartbeatRecorder;
use worldland_core::bus::HeartbeatReceived;
use worldland_core::cluster::health::HealthPolicy;
use worldland_core::cluster::Cluster;
use worldland_core::labels;
use worldland_core::ledger::ledger_for;
use worldland_core::messages::{Heartbeat, ProviderState, StreamEnvelope, MAX_ENTRY_BYTES};
use worldland_core::placement::placement_partition_for;
use worldland_core::provider::{
    file_for_placement, forgetting_node_trouble, make_available, note_node_write, record_heartbeat, within_min_interval, HeartbeatFacts,
    ProviderRecord,
};
use worldland_core::refusal::{Reason, Rejection};
use worldland_core::signature::{recover_personal, SignaturePolicy};
use worldland_core::state::ItemStore;
use worldland_core::validation::{check_provider_id, check_timestamp};
use worldland_core::worker::{Consume, Failure};
use worldland_runtime::backends::BackendError;
use worldland_runtime::worker::Worker;
use worldland_runtime::Backends;

mod joining;
mod node_fit;
mod recent;
mod usage;

use joining::join_cluster;
use node_fit::node_fit_to_sell;
pub use recent::RecentHeartbeats;
use usage::usage_json;

pub const WORKER: &str = worldland_core::bus::routes::HEARTBEAT_RECORDER.0;
pub const BINDINGS: &[&str] = worldland_core::bus::routes::HEARTBEAT_RECORDER.1;

pub struct Context {
    pub store: Arc<dyn ItemStore>,
    pub cluster: Arc<dyn Cluster>,
    pub signatures: SignaturePolicy,
    /// Heartbeat timestamps must lie within this window of now (either side).
    pub replay_window: Duration,
    /// The node's last-heartbeat annotation is rewritten at most this often.
    pub annotate_interval: Duration,
    /// At most one heartbeat per provider is recorded this often (`WORLDLAND_MIN_HEARTBEAT_INTERVAL_S`).
    pub min_heartbeat_interval: Duration,
    /// The node's active-jobs label is patched at most this often (`WORLDLAND_ACTIVE_JOBS_LABEL_INTERVAL_S`).
    pub active_jobs_label_interval: Duration,
    /// The heartbeats this process recorded last: ones too soon after them cost no store call.
    pub recent: RecentHeartbeats,
    /// The sweeper's measure of a node's health (`WORLDLAND_STALE_AFTER_S`, and the replay window
    /// as the provider clock's allowance): a provider becomes available, or comes back, only on
    /// a node it would not mark offline.
    pub node_health: HealthPolicy,
}

/// Parses and checks what can be checked without state: size, format, timestamp, signature.
pub fn check(env: &StreamEnvelope, ctx: &Context, now: DateTime<Utc>) -> Result<(Heartbeat, Option<String>), Rejection> {
    let size = env.data.len() + env.signature.as_ref().map_or(0, String::len);
    if size > MAX_ENTRY_BYTES {
        return Err(Rejection::new(
            Reason::EntryTooLarge,
            format!("entry is {size} bytes; the limit is {MAX_ENTRY_BYTES}"),
        ));
    }
    let hb: Heartbeat = serde_json::from_str(&env.data)
        .map_err(|e| Rejection::new(Reason::MalformedJson, format!("heartbeat does not match the agents' format: {e}")))?;
    check_provider_id(&hb.provider_id)?;
    check_timestamp(Some(hb.timestamp), now, ctx.replay_window)?;
    if hb.seq.is_some_and(|n| i64::try_from(n).is_err()) {
        return Err(Rejection::new(Reason::MalformedJson, "seq is above i64::MAX"));
    }
    let signer = match env.signature.as_deref() {
        None | Some("") if ctx.signatures == SignaturePolicy::Required => {
            return Err(Rejection::new(Reason::SignatureMissing, "this network requires signed heartbeats"));
        }
        None | Some("") => None,
        Some(sig) => Some(recover_personal(env.data.as_bytes(), sig)?),
    };
    Ok((hb, signer))
}

/// When the broker received a heartbeat: as the bridge stamped it (its stream entry's time when
/// Redis chose the id, the bridge's clock when the id lay in the future), else the entry id's
/// time; never later than `now`, the recorder's own clock. The agent's timestamp never decides
/// liveness: a slow or fast agent clock changes nothing, and an agent that writes an explicit
/// past id only ages its own heartbeat.
pub fn received_at(env: &StreamEnvelope, now: DateTime<Utc>) -> DateTime<Utc> {
    env.received_at_ms
        .and_then(DateTime::from_timestamp_millis)
        .or_else(|| entry_time(&env.entry_id))
        .map_or(now, |t| t.min(now))
}

/// The time part of a stream entry id (`<ms>-<seq>`); `None` past what a timestamp holds.
pub fn entry_time(entry_id: &str) -> Option<DateTime<Utc>> {
    let ms: i64 = entry_id.split_once('-')?.0.parse().ok()?;
    DateTime::from_timestamp_millis(ms)
}

#[instrument(skip(env, ctx, now), fields(entry = %env.entry_id))]
pub async fn handle(env: &StreamEnvelope, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let (hb, signer) = check(env, ctx, now)?;
    let usage = usage_json(&hb);
    let facts = HeartbeatFacts {
        node_name: &hb.node_name,
        at: hb.timestamp,
        received_at: received_at(env, now),
        seq: hb.seq.and_then(|n| i64::try_from(n).ok()),
        claimed_status: &hb.status,
        active_jobs: i64::from(hb.active_jobs),
        usage_json: usage,
    };
    if ctx.recent.too_soon(&hb.provider_id, facts.received_at, ctx.min_heartbeat_interval) {
        tracing::debug!(provider_id = %hb.provider_id, "heartbeat within the minimum interval; not recorded");
        return Ok(());
    }
    match record_heartbeat(&facts, signer.as_deref(), ctx.min_heartbeat_interval)
        .run(ctx.store.as_ref(), &hb.provider_id)
        .await?
    {
        Some(rec) => {
            ctx.recent.recorded(&hb.provider_id, facts.received_at);
            after_recorded(rec, &hb, ctx, now).await
        }
        None => cold_path(&hb, &facts, signer.as_deref(), ctx, now).await,
    }
}

/// The heartbeat is recorded; act on the state it found.
async fn after_recorded(rec: ProviderRecord, hb: &Heartbeat, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    match rec.state {
        ProviderState::Joined => become_available_if_ready(&rec, ProviderState::Joined, ctx, now).await,
        ProviderState::Offline => recover_from_offline(&rec, ctx, now).await,
        ProviderState::Available => {
            if !rec.placement_filed {
                // Stored before the placement index: filed once, so jobs naming its model find it.
                if let Some(partition) = placement_partition_for(&rec) {
                    file_for_placement(partition).run(ctx.store.as_ref(), &rec.provider_id).await?;
                }
            }
            refresh_node_marks(&rec, hb, ctx).await
        }
        _ => Ok(()),
    }
}

/// Available once the node is Ready and carries this provider's labels — its own id under
/// `worldland.io/provider-id`, so a node relabelled for another provider never makes two
/// providers available on one machine.
/// Whether `node` is fit to sell: Ready, a GPU rental node, labelled with this provider's own id.
fn is_own_ready_node(node: &worldland_core::cluster::NodeInfo, rec: &ProviderRecord) -> bool {
    node.ready
        && node.labels.get(labels::RENTAL_TYPE).map(String::as_str) == Some(labels::RENTAL_TYPE_GPU)
        && node.labels.get(labels::PROVIDER_ID) == Some(&labels::provider_id_label(&rec.provider_id))
}

/// Back from the dead — but only onto its own Ready node with a live kubelet: a heartbeat proves
/// the agent runs, not that its node still exists, is Ready, has a kubelet renewing its Lease or
/// is still this provider's. Until it does, the provider stays offline (the heartbeat is
/// recorded; the next one looks again). Then the offline marks go, idempotently, and it is
/// available again, the reason it went offline for its node forgotten.
async fn recover_from_offline(rec: &ProviderRecord, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    let node = ctx.cluster.get_node(&rec.node_name).await?;
    if !node.as_ref().is_some_and(|n| is_own_ready_node(n, rec)) || rec.unschedulable.is_some() {
        tracing::warn!(
            provider_id = %rec.provider_id,
            node = %rec.node_name,
            found = node.is_some(),
            "heartbeat from an offline provider whose node is gone, not Ready or not its own; stays offline"
        );
        return Ok(());
    }
    if !node_fit_to_sell(rec, ctx, now).await? {
        return Ok(()); // its kubelet's Lease is stale: stays offline
    }
    ctx.cluster.set_offline_taint(&rec.node_name, false).await?;
    let status = BTreeMap::from([(labels::STATUS.to_string(), None)]);
    ctx.cluster.patch_node_metadata(&rec.node_name, &status, &BTreeMap::new()).await?;
    tracing::info!(provider_id = %rec.provider_id, "provider is back from offline");
    let back = make_available(
        ProviderState::Offline,
        if rec.has_ledger { None } else { ledger_for(rec) },
        placement_partition_for(rec),
        now,
    );
    forgetting_node_trouble(back).run(ctx.store.as_ref(), &rec.provider_id).await?;
    Ok(())
}

pub(crate) async fn become_available_if_ready(
    rec: &ProviderRecord,
    from: ProviderState,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    if rec.unschedulable.is_some() {
        return Ok(());
    }
    match ctx.cluster.get_node(&rec.node_name).await? {
        Some(node) if labels::labelled_for_another_provider(&node.labels, &rec.provider_id).is_some() => {
            tracing::warn!(
                provider_id = %rec.provider_id,
                node = %rec.node_name,
                other = ?node.labels.get(labels::PROVIDER_ID),
                "node carries another provider's id; not available"
            );
            Ok(())
        }
        Some(node) if is_own_ready_node(&node, rec) => {
            if !node_fit_to_sell(rec, ctx, now).await? {
                return Ok(()); // its kubelet's Lease is stale: the next heartbeat looks again
            }
            make_available(
                from,
                if rec.has_ledger { None } else { ledger_for(rec) },
                placement_partition_for(rec),
                now,
            )
            .run(ctx.store.as_ref(), &rec.provider_id)
            .await?;
            Ok(())
        }
        // Not Ready (or not labelled) yet: the next heartbeat looks again.
        _ => Ok(()),
    }
}

/// Steady state: no node write unless the active-jobs label changed or the annotation is due.
async fn refresh_node_marks(rec: &ProviderRecord, hb: &Heartbeat, ctx: &Context) -> Result<(), Failure> {
    // The broker's receive time of the heartbeat just recorded.
    let received = rec.hb_at;
    let jobs_changed = rec.active_jobs_label_due(received, ctx.active_jobs_label_interval);
    let annotation_due = rec.annotated_at.is_none_or(|t| hb.timestamp - t >= ctx.annotate_interval);
    if !jobs_changed && !annotation_due {
        return Ok(());
    }
    let mut l = BTreeMap::new();
    let mut a = BTreeMap::new();
    if jobs_changed {
        l.insert(labels::ACTIVE_JOBS.to_string(), Some(rec.active_jobs.to_string()));
    }
    if annotation_due {
        a.insert(
            labels::LAST_HEARTBEAT_ANNOTATION.to_string(),
            Some(hb.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    if let Err(e) = ctx.cluster.patch_node_metadata(&rec.node_name, &l, &a).await {
        // The heartbeat itself is recorded; the marks are refreshed by a later one.
        tracing::warn!(provider_id = %rec.provider_id, error = %e, "node marks not refreshed");
        return Ok(());
    }
    let noted = note_node_write(
        jobs_changed.then_some((rec.active_jobs, received)),
        annotation_due.then_some(hb.timestamp),
    );
    noted.run(ctx.store.as_ref(), &rec.provider_id).await?;
    Ok(())
}

/// The hot write did not apply: read the provider to learn why.
async fn cold_path(
    hb: &Heartbeat,
    facts: &HeartbeatFacts<'_>,
    signer: Option<&str>,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    let rec = ProviderRecord::load(ctx.store.as_ref(), &hb.provider_id)
        .await?
        .ok_or_else(|| Failure::refuse(Reason::UnknownProvider, "no such provider"))?;
    if signer.is_some_and(|s| !s.eq_ignore_ascii_case(&rec.wallet)) {
        return Err(Failure::refuse(
            Reason::SignatureMismatch,
            "heartbeat was not signed by the provider's wallet",
        ));
    }
    if hb.node_name != rec.node_name {
        let why = format!("node_name {:?} is not this provider's node", hb.node_name);
        return Err(Failure::refuse(Reason::NodeNameMismatch, why));
    }
    match rec.state {
        ProviderState::Pending | ProviderState::Rejected | ProviderState::Expired => Err(Failure::refuse(
            Reason::NotApproved,
            format!("provider is {}, not approved", rec.state),
        )),
        ProviderState::Approved => join_cluster(rec, facts, ctx, now).await,
        _ if already_superseded(hb, &rec) => {
            // The same heartbeat again, or an older one (redelivered, replayed, or overtaken by a
            // later one): nothing to record, and nothing wrong with it either, so it is settled,
            // not dead-lettered.
            tracing::debug!(provider_id = %hb.provider_id, heartbeat = %hb.timestamp, seq = ?hb.seq, "heartbeat not newer than the last recorded one");
            Ok(())
        }
        _ if within_min_interval(rec.hb_at, facts.received_at, ctx.min_heartbeat_interval) => {
            // More often than the broker records heartbeats: a routine duplicate, acknowledged.
            // What the store holds is noted, so the next ones cost no store call.
            ctx.recent.recorded(&hb.provider_id, rec.hb_at);
            tracing::debug!(provider_id = %hb.provider_id, last = %rec.hb_at, "heartbeat within the minimum interval; not recorded");
            Ok(())
        }
        _ => Err(Failure::retry("heartbeat raced another write; retrying")),
    }
}

/// Whether a heartbeat is no later than the last recorded one of its kind: by sequence number
/// when it carries one, else by its timestamp (stored times are whole milliseconds).
fn already_superseded(hb: &Heartbeat, rec: &ProviderRecord) -> bool {
    match hb.seq {
        Some(seq) => rec.hb_seq.is_some_and(|last| i128::from(last) >= i128::from(seq)),
        None => rec
            .last_heartbeat
            .is_some_and(|last| last.timestamp_millis() >= hb.timestamp.timestamp_millis()),
    }
}

pub struct HeartbeatRecorder(pub Context);

#[async_trait]
impl Consume for HeartbeatRecorder {
    type Inbound = ToHeartbeatRecorder;
    async fn consume(&self, msg: ToHeartbeatRecorder, now: DateTime<Utc>) -> Result<(), Failure> {
        let ToHeartbeatRecorder::Received(HeartbeatReceived(env)) = msg;
        handle(&env, &self.0, now).await
    }
}

/// The recorder's context from the process's backends: the one wiring its container, its
/// Lambda, `worldland up` and the demo share (clients made once per process, never in the handler).
pub async fn context(b: &Backends) -> Result<Context, BackendError> {
    let cfg = b.config();
    Ok(Context {
        store: b.store().await?,
        cluster: b.cluster().await?,
        signatures: cfg.signature_policy,
        replay_window: Duration::seconds(cfg.replay_window_s),
        annotate_interval: Duration::seconds(cfg.annotate_interval_s),
        min_heartbeat_interval: Duration::seconds(cfg.min_heartbeat_interval_s),
        active_jobs_label_interval: Duration::seconds(cfg.active_jobs_label_interval_s),
        recent: RecentHeartbeats::default(),
        node_health: HealthPolicy {
            stale_after: Duration::seconds(cfg.stale_after_s),
            clock_allowance: Duration::seconds(cfg.replay_window_s),
        },
    })
}

/// The worker, for the entry points.
pub async fn worker(b: Backends) -> Result<Worker, BackendError> {
    Ok(Worker::consumer(HeartbeatRecorder(context(&b).await?)))
}
