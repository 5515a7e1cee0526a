//! Joining the cluster: the first heartbeat after approval, from the provider's own node
//! (checked against what the broker reserved and against the spec), labels the node, deletes the
//! bootstrap token and records the join; a node that is not the provider's is refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use worldland_core::cluster::node::spec_contradiction;
use worldland_core::labels::{self, provider_node_labels};
use worldland_core::messages::{ProviderState, Spec};
use worldland_core::provider::{join, note_node_write, HeartbeatFacts, ProviderRecord};
use worldland_core::refusal::{Reason, Rejection};
use worldland_core::worker::Failure;

use crate::{become_available_if_ready, Context};

/// A node is joined and labelled only if it is this provider's: it carries no other provider's
/// `worldland.io/provider-id`, and its name is reserved for this provider (claimed now when an
/// approval from before reservations never claimed it). Otherwise the join is refused with its
/// own reason, recorded on the provider (which stays `approved`, never labelled nor available)
/// and its bootstrap token deleted.
async fn node_is_ours(
    rec: &ProviderRecord,
    node: &worldland_core::cluster::NodeInfo,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    use worldland_core::provider::nodes::{self, Claim};
    let refusal = match labels::labelled_for_another_provider(&node.labels, &rec.provider_id) {
        Some(other) => Some(Rejection::new(
            Reason::NodeOwnedByAnotherProvider,
            format!("node {} carries provider {other:?} as its {}", rec.node_name, labels::PROVIDER_ID),
        )),
        None => match nodes::claim(ctx.store.as_ref(), &rec.node_name, &rec.provider_id, now).await? {
            Claim::Ours => None,
            Claim::TakenBy(owner) => Some(Rejection::new(
                Reason::NodeNameTaken,
                format!("node name {} is reserved by provider {owner:?}", rec.node_name),
            )),
        },
    };
    match refusal {
        None => Ok(()),
        Some(r) => refuse_join_on(rec, r, ctx, now).await,
    }
}

/// Records why the join was refused on the (still approved) provider, deletes its token (best
/// effort: nothing more should join with it), and refuses the heartbeat with that reason.
async fn refuse_join_on(rec: &ProviderRecord, r: Rejection, ctx: &Context, now: DateTime<Utc>) -> Result<(), Failure> {
    use worldland_core::provider::refuse_join;
    tracing::warn!(provider_id = %rec.provider_id, node = %rec.node_name, reason = r.reason.code(), "join refused: {}", r.message);
    refuse_join(&rec.node_name, &format!("{}: {}", r.reason.code(), r.message), now)
        .apply(ctx.store.as_ref(), &rec.provider_id)
        .await?;
    if let Some(id) = &rec.token_id {
        if let Err(e) = ctx.cluster.delete_bootstrap_token(id).await {
            tracing::warn!(provider_id = %rec.provider_id, error = %e, "token of a refused join not deleted");
        }
    }
    Err(r.into())
}

/// Labels a node that matches its spec with the provider's labels, its active jobs and the first
/// last-heartbeat annotation, in one write.
async fn label_node(rec: &ProviderRecord, spec: &Spec, facts: &HeartbeatFacts<'_>, ctx: &Context) -> Result<(), Failure> {
    let first_gpu = spec.gpus.first().map(|g| g.name.as_str()).unwrap_or_default();
    let mut wanted: BTreeMap<String, Option<String>> = provider_node_labels(&rec.provider_id, first_gpu, rec.gpu_count as u32)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    wanted.insert(labels::ACTIVE_JOBS.to_string(), Some(facts.active_jobs.to_string()));
    let annotation = BTreeMap::from([(
        labels::LAST_HEARTBEAT_ANNOTATION.to_string(),
        Some(facts.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    )]);
    ctx.cluster.patch_node_metadata(&rec.node_name, &wanted, &annotation).await?;
    Ok(())
}

/// `approved` + first heartbeat: check the node against the spec, label it, delete the
/// bootstrap token, `joined` — and `available` at once if the node is Ready.
pub(crate) async fn join_cluster(
    rec: ProviderRecord,
    facts: &HeartbeatFacts<'_>,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    let node = ctx
        .cluster
        .get_node(&rec.node_name)
        .await?
        .ok_or_else(|| Failure::refuse(Reason::NodeNotFound, format!("node {} has not joined the cluster", rec.node_name)))?;
    node_is_ours(&rec, &node, ctx, now).await?;
    let spec: Spec = serde_json::from_str(&rec.spec_json).map_err(|e| Failure::retry(format!("stored spec unreadable: {e}")))?;
    let contradiction = spec_contradiction(&node, spec.total_gpus, spec.cpu_cores, spec.total_memory_mb);
    match &contradiction {
        Some(why) => {
            tracing::warn!(provider_id = %rec.provider_id, %why, "node contradicts the claimed spec; provider stays unschedulable")
        }
        None => label_node(&rec, &spec, facts, ctx).await?,
    }
    if let Some(id) = &rec.token_id {
        ctx.cluster.delete_bootstrap_token(id).await?;
    }
    let joined = join(facts, contradiction.as_deref(), now)
        .run(ctx.store.as_ref(), &rec.provider_id)
        .await?
        .ok_or_else(|| Failure::retry("join raced another write; retrying"))?;
    tracing::info!(provider_id = %rec.provider_id, node = %rec.node_name, "provider joined");
    if contradiction.is_none() {
        let _ = note_node_write(Some((facts.active_jobs, facts.received_at)), Some(facts.at))
            .run(ctx.store.as_ref(), &rec.provider_id)
            .await;
    }
    become_available_if_ready(&joined, ProviderState::Joined, ctx, now).await
}
